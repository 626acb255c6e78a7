#!/usr/bin/env bash
# Prints a directory holding the reference CNI plugins the harness wires bridged pods with
# (bridge, host-local; loopback and portmap for the real nodes of test/cluster) and cnitool, libcni's command line, which writes the same result
# cache (/var/lib/cni/results) a container runtime writes. Built from the Go module proxy
# into a cache outside the repository, keyed by version, like the control plane binaries.
set -euo pipefail

PLUGINS_VERSION="${KUBE_PCAP_CNI_PLUGINS_VERSION:-1.10.0}"
CNI_VERSION="${KUBE_PCAP_CNI_VERSION:-1.3.1}"
CACHE="${KUBE_PCAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-pcap}"
OUT="$CACHE/bin/cni-plugins-v$PLUGINS_VERSION-cni-v$CNI_VERSION"

log() { printf '[cni] %s\n' "$*" >&2; }

plugins=(bridge host-local loopback portmap)
have=1
for p in "${plugins[@]}" cnitool; do [[ -x "$OUT/$p" ]] || have=0; done
if (( have )); then echo "$OUT"; exit 0; fi
command -v go >/dev/null || { log "go is needed to build the CNI plugins and cnitool"; exit 1; }
work="$(mktemp -d "${TMPDIR:-/tmp}/kube-pcap-cni-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"
export GOFLAGS="-mod=mod" CGO_ENABLED=0
go mod init kube-pcap-cni >/dev/null 2>&1
log "building ${plugins[*]} v$PLUGINS_VERSION, cnitool v$CNI_VERSION"
go get "github.com/containernetworking/plugins@v$PLUGINS_VERSION" "github.com/containernetworking/cni@v$CNI_VERSION" >&2
mkdir -p "$OUT.tmp"
go build -trimpath -ldflags "-s -w" -o "$OUT.tmp/" \
  github.com/containernetworking/plugins/plugins/main/bridge \
  github.com/containernetworking/plugins/plugins/ipam/host-local \
  github.com/containernetworking/plugins/plugins/main/loopback \
  github.com/containernetworking/plugins/plugins/meta/portmap \
  github.com/containernetworking/cni/cnitool >&2
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
echo "$OUT"
