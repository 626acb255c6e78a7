#!/usr/bin/env bash
# Source this file: it makes Node.js 24 LTS and a matching npm the first `node`/`npm` on PATH.
#
# The machine's own Node (20 on a fresh Debian here) is too old for our dependencies
# (they need >= 22.19), so the project fetches its own: the official Linux build that the
# npm registry publishes as `node-linux-<arch>`, checked against a pinned sha512 and kept
# in a cache outside the repository. No install script of any package runs to get it.


KUBE_PCAP_NODE_VERSION=24.21.0
KUBE_PCAP_NPM_VERSION=11.21.2
_kp_cache="${KUBE_PCAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-pcap}"
_kp_registry="${npm_config_registry:-https://registry.npmjs.org/}"
_kp_registry="${_kp_registry%/}"

case "$(uname -m)" in
  x86_64) _kp_arch=x64; _kp_node_sri='sha512-3nULszZ5X0fciYpG0t6TrdApJzAn8+FlINP6OiMX7V8HrvpATPN936U1LlReOJriLRa4e8yEqQBYCnLyPNAs7Q==' ;;
  aarch64|arm64) _kp_arch=arm64; _kp_node_sri='sha512-FpJRPEz2OvvTLfjIOlNGFY9JLPMKgl5m+d4oGYBLg24kJ1mmvN1Zl/HPJgF4HDaJ51ISev1l1cRZ/DM+keXW5g==' ;;
  *) echo "kube-pcap: no Node.js $KUBE_PCAP_NODE_VERSION build for $(uname -m)" >&2; return 1 2>/dev/null || exit 1 ;;
esac
_kp_npm_sri='sha512-7HPApk+AflMUavSseL1Pm6CnYqMIHk53x+KmuhqmTDqPkjPMgxIpTPcTqsE91EKNw4gFBJV9fnXiSdGm1DXq9A=='

# fetch <url> <sri> <dest-dir>: download, verify, unpack the package/ folder into dest-dir.
_kp_fetch() {
  local url="$1" sri="$2" dest="$3" tmp
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/kube-pcap-fetch.XXXXXX")"
  echo "kube-pcap: fetching $url" >&2
  if ! curl -fsSL --retry 3 --retry-delay 2 -o "$tmp/pkg.tgz" "$url"; then
    rm -rf "$tmp"; echo "kube-pcap: download failed: $url" >&2; return 1
  fi
  local got="sha512-$(openssl dgst -sha512 -binary "$tmp/pkg.tgz" | base64 -w0)"
  if [[ "$got" != "$sri" ]]; then
    rm -rf "$tmp"; echo "kube-pcap: integrity mismatch for $url (got $got)" >&2; return 1
  fi
  mkdir -p "$tmp/x" && tar xzf "$tmp/pkg.tgz" -C "$tmp/x"
  mkdir -p "$(dirname "$dest")"
  rm -rf "$dest" && mv "$tmp/x/package" "$dest"
  rm -rf "$tmp"
}

_kp_node_dir="$_kp_cache/node/v$KUBE_PCAP_NODE_VERSION-$_kp_arch"
_kp_npm_dir="$_kp_cache/npm/v$KUBE_PCAP_NPM_VERSION"
if [[ ! -x "$_kp_node_dir/bin/node" ]]; then
  _kp_fetch "$_kp_registry/node-linux-$_kp_arch/-/node-linux-$_kp_arch-$KUBE_PCAP_NODE_VERSION.tgz" "$_kp_node_sri" "$_kp_node_dir"
  chmod +x "$_kp_node_dir/bin/node"
fi
if [[ ! -f "$_kp_npm_dir/bin/npm-cli.js" ]]; then
  _kp_fetch "$_kp_registry/npm/-/npm-$KUBE_PCAP_NPM_VERSION.tgz" "$_kp_npm_sri" "$_kp_npm_dir"
fi
# npm and npx run by our node, whatever node the caller had.
for _kp_tool in npm npx; do
  if [[ ! -x "$_kp_node_dir/bin/$_kp_tool" ]]; then
    printf '#!/bin/sh\nexec "%s/bin/node" "%s/bin/%s-cli.js" "$@"\n' "$_kp_node_dir" "$_kp_npm_dir" "$_kp_tool" > "$_kp_node_dir/bin/$_kp_tool"
    chmod +x "$_kp_node_dir/bin/$_kp_tool"
  fi
done
export PATH="$_kp_node_dir/bin:$PATH"
export KUBE_PCAP_NODE="$_kp_node_dir/bin/node"
