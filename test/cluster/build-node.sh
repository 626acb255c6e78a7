#!/usr/bin/env bash
# Prints a directory holding what a real Kubernetes node of the test cluster runs, built
# from the Go module proxy into a cache outside the repository, keyed by version (later
# runs take it from there in a second):
#   kubelet, kube-proxy, kube-controller-manager, kube-scheduler  (k8s.io/kubernetes, the
#       same version and the same throwaway-module build as kube-apiserver)
#   containerd, containerd-shim-runc-v2, ctr  (containerd 2.x: its CRI has the
#       RuntimeConfig call kubelet asks for its cgroup driver; Debian's 1.6 lacks it)
#   cni/bridge, cni/host-local, cni/loopback, cni/portmap  (the CNI reference plugins)
#   pause  (the sandbox process, test/cluster/pause)
# runc is Debian's package (scripts/ensure-system-packages.sh --with-cluster): it needs
# cgo and libseccomp for seccomp profiles, which Debian's build has.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
K8S_VERSION="${KUBE_PCAP_K8S_VERSION:-1.37.2}"
CONTAINERD_VERSION="${KUBE_PCAP_CONTAINERD_VERSION:-2.4.2}"
CACHE="${KUBE_PCAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-pcap}"
LOG_TAG=node
source "$here/../lib-build.sh"

K8S_OUT="$CACHE/bin/kubernetes-v$K8S_VERSION"
CTRD_OUT="$CACHE/bin/containerd-v$CONTAINERD_VERSION"
PAUSE_OUT="$CACHE/bin/pause-$(sha256sum "$here/pause/main.go" | cut -c1-12)"

build_pause() {
  [[ -x "$PAUSE_OUT/pause" ]] && return 0
  need_go pause
  mkdir -p "$PAUSE_OUT"
  ( cd "$here/pause" && CGO_ENABLED=0 GOFLAGS= GO111MODULE=off go build -trimpath -ldflags "-s -w" -o "$PAUSE_OUT/pause.tmp" main.go )
  mv "$PAUSE_OUT/pause.tmp" "$PAUSE_OUT/pause"
}
# --pause-only: the directory of the pause binary alone (what the images' build needs).
if [[ "${1:-}" == --pause-only ]]; then build_pause; echo "$PAUSE_OUT"; exit 0; fi
# --no-kubernetes: all but Kubernetes' commands (scripts/run.sh builds those in the control
# plane's go build, and this beside it); prints nothing.
skip_k8s=0
[[ "${1:-}" == --no-kubernetes ]] && skip_k8s=1

missing=()
for c in kubelet kube-proxy kube-controller-manager kube-scheduler; do [[ -x "$K8S_OUT/$c" ]] || missing+=("$c"); done
(( ${#missing[@]} == 0 || skip_k8s )) || build_k8s "$K8S_OUT" "${missing[@]}"

if [[ ! -x "$CTRD_OUT/containerd" || ! -x "$CTRD_OUT/containerd-shim-runc-v2" || ! -x "$CTRD_OUT/ctr" ]]; then
  need_go containerd
  work="$(mktemp -d "${TMPDIR:-/tmp}/kube-pcap-build.XXXXXX")"
  (
    trap 'rm -rf "$work"' EXIT
    cd "$work"
    # No cgo: the snapshotters and graph drivers that need it are left out by tag; the
    # node uses overlayfs.
    export GOFLAGS="-mod=mod" CGO_ENABLED=0
    go mod init kube-pcap-containerd >/dev/null 2>&1
    log "building containerd v$CONTAINERD_VERSION (cold: about 5 minutes; cached afterwards)"
    with_progress "downloading containerd's modules" go get "github.com/containerd/containerd/v2@v$CONTAINERD_VERSION" >&2
    mkdir -p "$CTRD_OUT.tmp"
    with_progress "building containerd" go build -trimpath -tags "no_btrfs no_devmapper no_zfs no_aufs urfave_cli_no_docs" \
      -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=v$CONTAINERD_VERSION" \
      -o "$CTRD_OUT.tmp/" \
      github.com/containerd/containerd/v2/cmd/containerd \
      github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
      github.com/containerd/containerd/v2/cmd/ctr >&2
    rm -rf "$CTRD_OUT" && mv "$CTRD_OUT.tmp" "$CTRD_OUT"
  )
fi

build_pause

CNI_DIR="$(bash "$here/../cni/build-plugins.sh")"
(( skip_k8s )) && exit 0

OUT="$CACHE/bin/node-v$K8S_VERSION-containerd-v$CONTAINERD_VERSION"
mkdir -p "$OUT/cni"
for c in kubelet kube-proxy kube-controller-manager kube-scheduler; do ln -sfn "$K8S_OUT/$c" "$OUT/$c"; done
for c in containerd containerd-shim-runc-v2 ctr; do ln -sfn "$CTRD_OUT/$c" "$OUT/$c"; done
ln -sfn "$PAUSE_OUT/pause" "$OUT/pause"
for p in bridge host-local loopback portmap; do ln -sfn "$CNI_DIR/$p" "$OUT/cni/$p"; done
echo "$OUT"
