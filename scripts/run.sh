#!/usr/bin/env bash
# What `npm test`, `npm run demo` and the benchmarks run: make the machine ready (Node 24,
# system packages, npm dependencies, the build, the control-plane binaries), then run the
# command inside the sandbox (scripts/sandbox.sh). Works on a fresh clone as root.
#
#   scripts/run.sh test [test files...] | test:fast | demo | e2e:cluster | cluster:up | cluster:down
#                  | bench:download | bench:capture | bench:auth | bench:scale | bench:pcapng | bench:live | bench:live-merge | bench:export | bench:cluster
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:?usage: scripts/run.sh test|test:fast|demo|e2e:cluster|cluster:up|cluster:down|bench:download|bench:capture|bench:auth|bench:scale|bench:pcapng|bench:live|bench:live-merge|bench:export|bench:cluster [args]}"
shift

if [[ "$what" == cluster:down ]]; then exec bash test/cluster/cluster-down.sh "$@"; fi

# Does this run need the real cluster (test/cluster: nodes, images)? The whole suite does;
# a list of test files only when one of them is a cluster test.
cluster=0
case "$what" in
  e2e:cluster|cluster:up|bench:cluster) cluster=1 ;;
  test)
    if (( $# == 0 )); then cluster=1; fi
    for a in "$@"; do [[ "$a" == *test/cluster/* ]] && cluster=1; done ;;
esac

source scripts/ensure-node.sh
packages=()
[[ "$what" == bench:* ]] && packages+=(--with-bench)
(( cluster )) && packages+=(--with-cluster)
bash scripts/ensure-system-packages.sh "${packages[@]}"

# Dependencies: `npm ci` whenever the lockfile or the Node version changed since the last one.
stamp="node_modules/.kube-pcap-installed"
want="$(sha256sum package-lock.json | cut -d' ' -f1) $(node -v)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "kube-pcap: npm ci" >&2
  # --ignore-scripts: prepare would compile a second time what is compiled below.
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2
  echo "$want" > "$stamp"
fi

rm -rf dist
npx tsc -p tsconfig.json

# The fast tier needs nothing more: no Go builds, no images, no API server.
if [[ "$what" == test:fast ]]; then exec bash scripts/sandbox.sh node --enable-source-maps dist/test/harness/run-suite.js --fast "$@"; fi

if (( cluster )); then
  # The images' build waits on the network (Debian's mirror, the npm registry) while the Go
  # builds below keep the cores busy: it runs beside them. It needs the pause binary first.
  pause="$(bash test/cluster/build-node.sh --pause-only)"
  images_log="$(mktemp "${TMPDIR:-/tmp}/kube-pcap-images.XXXXXX")"
  nice -n 5 bash test/cluster/build-images.sh "$pause" > "$images_log.out" 2> >(tee "$images_log" >&2) &
  images_pid=$!
  # The real cluster's Kubernetes commands in the same go build as the control plane's.
  export KUBE_PCAP_K8S_ALSO="kubelet kube-proxy kube-controller-manager kube-scheduler"
fi
# The other Go builds beside Kubernetes' (a cold one leaves a core idle while it links its
# binaries one by one), niced, so that they fill idle time and Kubernetes' stays the critical
# path; their scripts are asked again below, and answer from the cache.
(
  nice -n 10 bash test/cni/build-plugins.sh >/dev/null
  nice -n 10 bash test/helm/build-helm.sh >/dev/null
  nice -n 10 bash test/s3/build-seaweedfs.sh >/dev/null
  if (( cluster )); then nice -n 10 bash test/cluster/build-node.sh --no-kubernetes; fi
) &
others_pid=$!
trap 'kill "${images_pid:-}" "$others_pid" 2>/dev/null' EXIT
KUBE_PCAP_CONTROL_PLANE_BIN="$(bash test/controlplane/build-binaries.sh)"
export KUBE_PCAP_CONTROL_PLANE_BIN
export PATH="$KUBE_PCAP_CONTROL_PLANE_BIN:$PATH"
if ! wait "$others_pid"; then echo "kube-pcap: a build failed (see above)" >&2; exit 1; fi
# The reference CNI plugins and cnitool, for pods wired by a real bridge CNI.
KUBE_PCAP_CNI_BIN="$(bash test/cni/build-plugins.sh)"
export KUBE_PCAP_CNI_BIN
# The Gateway API's CRDs, to check deploy/examples/gateway-api.yaml against.
KUBE_PCAP_GATEWAY_API_CRDS="$(bash test/gateway-api/fetch-crds.sh)"
export KUBE_PCAP_GATEWAY_API_CRDS
# A helm binary (Helm 4, built from the Go module proxy once), for the chart's tests.
KUBE_PCAP_HELM="$(bash test/helm/build-helm.sh)"
export KUBE_PCAP_HELM
# SeaweedFS, the S3-compatible server the export tests upload to (built once, cached).
KUBE_PCAP_WEED="$(bash test/s3/build-seaweedfs.sh)"
export KUBE_PCAP_WEED
if (( cluster )); then
  # kubelet, kube-proxy, kube-controller-manager, kube-scheduler, containerd, CNI plugins.
  KUBE_PCAP_NODE_BIN="$(bash test/cluster/build-node.sh)"
  export KUBE_PCAP_NODE_BIN
  # Our images from the Dockerfile, and the test pods': built before the sandbox (above),
  # because their build needs the npm registry and Debian's mirror.
  if ! wait "$images_pid"; then echo "kube-pcap: building the images failed (see above)" >&2; exit 1; fi
  KUBE_PCAP_IMAGES="$(tail -n 1 "$images_log.out")"
  rm -f "$images_log" "$images_log.out"
  export KUBE_PCAP_IMAGES
fi
trap - EXIT

case "$what" in
  test) exec bash scripts/sandbox.sh node --enable-source-maps dist/test/harness/run-suite.js "$@" ;;
  demo) exec bash scripts/sandbox.sh node --enable-source-maps dist/test/e2e/demo.js "$@" ;;
  e2e:cluster) exec bash scripts/sandbox.sh node --enable-source-maps dist/test/cluster/e2e-cluster.js "$@" ;;
  cluster:up) exec bash test/cluster/cluster-up.sh "$@" ;;
  bench:download) exec bash scripts/sandbox.sh node --enable-source-maps dist/bench/download.js "$@" ;;
  bench:capture) exec bash scripts/sandbox.sh node --enable-source-maps dist/bench/capture.js "$@" ;;
  bench:auth) exec bash scripts/sandbox.sh node --enable-source-maps dist/bench/auth.js "$@" ;;
  bench:scale) exec bash scripts/sandbox.sh node --enable-source-maps dist/bench/scale.js "$@" ;;
  bench:pcapng) exec bash scripts/sandbox.sh node --enable-source-maps dist/bench/pcapng.js "$@" ;;
  bench:live) exec bash scripts/sandbox.sh node --enable-source-maps dist/bench/live.js "$@" ;;
  bench:live-merge) exec bash scripts/sandbox.sh node --enable-source-maps dist/bench/live-merge.js "$@" ;;
  bench:export) exec bash scripts/sandbox.sh node --enable-source-maps dist/bench/export.js "$@" ;;
  bench:cluster) exec bash scripts/sandbox.sh node --enable-source-maps dist/bench/cluster.js "$@" ;;
  *) echo "unknown command: $what" >&2; exit 2 ;;
esac
