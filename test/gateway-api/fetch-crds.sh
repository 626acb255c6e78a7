#!/usr/bin/env bash
# Prints a directory holding the Gateway API's standard CRDs (sigs.k8s.io/gateway-api),
# fetched through the Go module proxy into Go's module cache, so that the tests can install
# them on the test API server and check deploy/examples/gateway-api.yaml against them.
# KUBE_PCAP_GATEWAY_API_CRDS (a directory of those YAML files) wins when set.
set -euo pipefail
VERSION="${KUBE_PCAP_GATEWAY_API_VERSION:-v1.6.3}"
if [[ -n "${KUBE_PCAP_GATEWAY_API_CRDS:-}" ]]; then echo "$KUBE_PCAP_GATEWAY_API_CRDS"; exit 0; fi
command -v go >/dev/null || { echo "[gateway-api] go is needed to fetch sigs.k8s.io/gateway-api (or set KUBE_PCAP_GATEWAY_API_CRDS)" >&2; exit 1; }
dir="$(cd "${TMPDIR:-/tmp}" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/gateway-api@$VERSION" | awk -F'"' '$2=="Dir"{print $4}')"
[[ -d "$dir/config/crd/standard" ]] || { echo "[gateway-api] no config/crd/standard in sigs.k8s.io/gateway-api@$VERSION" >&2; exit 1; }
echo "$dir/config/crd/standard"
