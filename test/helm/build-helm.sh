#!/usr/bin/env bash
# Prints the path of a helm binary (Helm 4) for the chart tests: $KUBE_PCAP_HELM when set,
# else built from the Go module proxy (helm.sh/helm/v4) into a cache outside the repository,
# keyed by version, as the control plane's binaries are; later runs take it from there.
set -euo pipefail
VERSION="${KUBE_PCAP_HELM_VERSION:-v4.3.1}"
CACHE="${KUBE_PCAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-pcap}"
OUT="$CACHE/bin/helm-$VERSION"
log() { printf '[helm] %s\n' "$*" >&2; }
if [[ -n "${KUBE_PCAP_HELM:-}" ]]; then echo "$KUBE_PCAP_HELM"; exit 0; fi
if [[ -x "$OUT/helm" ]]; then echo "$OUT/helm"; exit 0; fi
command -v go >/dev/null || { log "go is needed to build helm (or set KUBE_PCAP_HELM)"; exit 1; }
work="$(mktemp -d "${TMPDIR:-/tmp}/kube-pcap-helm.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$OUT"
log "building helm $VERSION from the Go module proxy (once; a few minutes)"
# A throwaway module that requires helm: `go install pkg@version` refuses modules whose
# go.mod has replace directives, a build from a module of our own does not.
(
  cd "$work"
  export GOFLAGS=-mod=mod CGO_ENABLED=0
  go mod init kube-pcap-helm >/dev/null 2>&1
  go get "helm.sh/helm/v4@$VERSION" >&2
  go build -trimpath -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$VERSION" -o "$OUT/helm.tmp" helm.sh/helm/v4/cmd/helm >&2
)
mv "$OUT/helm.tmp" "$OUT/helm"
echo "$OUT/helm"
