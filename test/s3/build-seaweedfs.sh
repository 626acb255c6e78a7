#!/usr/bin/env bash
# Prints the path of a SeaweedFS `weed` binary: the S3-compatible server the export tests
# upload to (docs/export.md, "The S3 server in the tests": why SeaweedFS and not MinIO).
#
# KUBE_PCAP_WEED wins when set. Otherwise weed is built from the Go module proxy into a cache
# outside the repository, keyed by version. SeaweedFS's go.mod has replace directives, which
# `go install pkg@version` refuses: a throwaway module requires it and repeats them.
set -euo pipefail

WEED_VERSION="${KUBE_PCAP_WEED_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
CACHE="${KUBE_PCAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-pcap}"
OUT="$CACHE/bin/seaweedfs-$WEED_VERSION"

LOG_TAG=seaweedfs
source "$(dirname "$0")/../lib-build.sh"

if [[ -n "${KUBE_PCAP_WEED:-}" ]]; then
  [[ -x "$KUBE_PCAP_WEED" ]] || { log "KUBE_PCAP_WEED=$KUBE_PCAP_WEED is not executable"; exit 1; }
  echo "$KUBE_PCAP_WEED"; exit 0
fi
if [[ -x "$OUT/weed" ]]; then echo "$OUT/weed"; exit 0; fi

need_go SeaweedFS
work="$(mktemp -d "${TMPDIR:-/tmp}/kube-pcap-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"
export GOFLAGS="-mod=mod" CGO_ENABLED=0
go mod init kube-pcap-seaweedfs >/dev/null 2>&1
go mod download "github.com/seaweedfs/seaweedfs@$WEED_VERSION"
modfile="$(go env GOMODCACHE)/cache/download/github.com/seaweedfs/seaweedfs/@v/$WEED_VERSION.mod"
gover="$(awk '$1=="go"{print $2; exit}' "$modfile")"
{
  printf 'module kube-pcap-seaweedfs\n\ngo %s\n\nrequire github.com/seaweedfs/seaweedfs %s\n\n' "$gover" "$WEED_VERSION"
  grep -E '^replace ' "$modfile" || true
} > go.mod
printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/seaweedfs/seaweedfs/weed"\n' > tools.go
log "resolving SeaweedFS $WEED_VERSION"
with_progress "downloading SeaweedFS modules" go mod tidy >&2
mkdir -p "$OUT"
log "building weed (cold: several minutes; cached afterwards)"
with_progress "building weed" go build -trimpath -ldflags "-s -w" -o "$OUT/weed.tmp" github.com/seaweedfs/seaweedfs/weed
mv "$OUT/weed.tmp" "$OUT/weed"
echo "$OUT/weed"
