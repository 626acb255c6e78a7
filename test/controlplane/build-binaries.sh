#!/usr/bin/env bash
# Prints a directory holding kube-apiserver, etcd and kubectl for the test control plane.
#
# KUBEBUILDER_ASSETS (a directory with kube-apiserver and etcd, like controller-runtime's
# envtest uses) wins when set. Otherwise the binaries are built from the Go module proxy
# into a cache outside the repository, keyed by version, so later runs start in seconds:
#   - kube-apiserver and kubectl from a throwaway module that requires k8s.io/kubernetes and
#     points every staging module (which k8s.io/kubernetes replaces with ./staging paths)
#     at its published v0.x.y twin;
#   - etcd from its own throwaway module.
set -euo pipefail

K8S_VERSION="${KUBE_PCAP_K8S_VERSION:-1.37.2}"
ETCD_VERSION="${KUBE_PCAP_ETCD_VERSION:-3.7.3}"
CACHE="${KUBE_PCAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-pcap}"
K8S_OUT="$CACHE/bin/kubernetes-v$K8S_VERSION"
ETCD_OUT="$CACHE/bin/etcd-v$ETCD_VERSION"
OUT="$CACHE/bin/control-plane-v$K8S_VERSION-etcd-v$ETCD_VERSION"

LOG_TAG=control-plane
source "$(dirname "$0")/../lib-build.sh"

build_etcd() {
  need_go etcd
  local work; work="$(mktemp -d "${TMPDIR:-/tmp}/kube-pcap-build.XXXXXX")"
  (
    trap 'rm -rf "$work"' EXIT
    cd "$work"
    export GOFLAGS="-mod=mod" CGO_ENABLED=0
    go mod init kube-pcap-etcd >/dev/null 2>&1
    log "building etcd v$ETCD_VERSION"
    go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2
    mkdir -p "$ETCD_OUT"
    with_progress "building etcd" go build -trimpath -ldflags "-s -w" -o "$ETCD_OUT/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$ETCD_OUT/etcd.tmp" "$ETCD_OUT/etcd"
  )
}

# link_into <dir> <apiserver> <etcd> <kubectl>: one directory the harness can point at.
link_into() {
  mkdir -p "$1"
  ln -sfn "$2" "$1/kube-apiserver"; ln -sfn "$3" "$1/etcd"; ln -sfn "$4" "$1/kubectl"
}

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  for b in kube-apiserver etcd; do
    [[ -x "$KUBEBUILDER_ASSETS/$b" ]] || { log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no executable $b"; exit 1; }
  done
  if [[ -x "$KUBEBUILDER_ASSETS/kubectl" ]]; then echo "$KUBEBUILDER_ASSETS"; exit 0; fi
  # Asset bundles do not always ship kubectl: build only that, never write into the bundle.
  [[ -x "$K8S_OUT/kubectl" ]] || build_k8s "$K8S_OUT" kubectl
  dir="$CACHE/bin/assets-$(printf '%s' "$KUBEBUILDER_ASSETS" | sha256sum | cut -c1-12)"
  link_into "$dir" "$KUBEBUILDER_ASSETS/kube-apiserver" "$KUBEBUILDER_ASSETS/etcd" "$K8S_OUT/kubectl"
  echo "$dir"; exit 0
fi

# KUBE_PCAP_K8S_ALSO names more commands of the same build (the real cluster's kubelet, ...):
# built in the same go build as these when they are missing too.
missing=()
for c in kube-apiserver kubectl ${KUBE_PCAP_K8S_ALSO:-}; do [[ -x "$K8S_OUT/$c" ]] || missing+=("$c"); done
(( ${#missing[@]} == 0 )) || build_k8s "$K8S_OUT" "${missing[@]}"
[[ -x "$ETCD_OUT/etcd" ]] || build_etcd
link_into "$OUT" "$K8S_OUT/kube-apiserver" "$ETCD_OUT/etcd" "$K8S_OUT/kubectl"
echo "$OUT"
