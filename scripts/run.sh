#!/usr/bin/env bash
# What `npm test`, `npm run demo` and the benchmarks run: make the machine ready (Node 24,
# system packages, npm dependencies, the build, the control-plane binaries), then run the
# command inside the sandbox (scripts/sandbox.sh). Works on a fresh clone as root.
#
#   scripts/run.sh test [test files...] | demo | bench:download | bench:capture | bench:auth | bench:scale | bench:pcapng | bench:live
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:?usage: scripts/run.sh test|demo|bench:download|bench:capture|bench:auth|bench:scale|bench:pcapng|bench:live [args]}"
shift

source scripts/ensure-node.sh
if [[ "$what" == bench:* ]]; then bash scripts/ensure-system-packages.sh --with-bench; else bash scripts/ensure-system-packages.sh; fi

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

KUBE_PCAP_CONTROL_PLANE_BIN="$(bash test/controlplane/build-binaries.sh)"
export KUBE_PCAP_CONTROL_PLANE_BIN
export PATH="$KUBE_PCAP_CONTROL_PLANE_BIN:$PATH"
# The reference CNI plugins and cnitool, for pods wired by a real bridge CNI.
KUBE_PCAP_CNI_BIN="$(bash test/cni/build-plugins.sh)"
export KUBE_PCAP_CNI_BIN
# The Gateway API's CRDs, to check deploy/examples/gateway-api.yaml against.
KUBE_PCAP_GATEWAY_API_CRDS="$(bash test/gateway-api/fetch-crds.sh)"
export KUBE_PCAP_GATEWAY_API_CRDS
# A helm binary (Helm 4, built from the Go module proxy once), for the chart's tests.
KUBE_PCAP_HELM="$(bash test/helm/build-helm.sh)"
export KUBE_PCAP_HELM

case "$what" in
  test) exec bash scripts/sandbox.sh node --enable-source-maps dist/test/harness/run-suite.js "$@" ;;
  demo) exec bash scripts/sandbox.sh node --enable-source-maps dist/test/e2e/demo.js "$@" ;;
  bench:download) exec bash scripts/sandbox.sh node --enable-source-maps dist/bench/download.js "$@" ;;
  bench:capture) exec bash scripts/sandbox.sh node --enable-source-maps dist/bench/capture.js "$@" ;;
  bench:auth) exec bash scripts/sandbox.sh node --enable-source-maps dist/bench/auth.js "$@" ;;
  bench:scale) exec bash scripts/sandbox.sh node --enable-source-maps dist/bench/scale.js "$@" ;;
  bench:pcapng) exec bash scripts/sandbox.sh node --enable-source-maps dist/bench/pcapng.js "$@" ;;
  bench:live) exec bash scripts/sandbox.sh node --enable-source-maps dist/bench/live.js "$@" ;;
  *) echo "unknown command: $what" >&2; exit 2 ;;
esac
