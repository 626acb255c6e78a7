#!/usr/bin/env bash
# Installs the Debian packages the tests, the demo and the benchmarks use, if missing.
#   scripts/ensure-system-packages.sh [--with-bench]
set -euo pipefail

# command -> Debian package
declare -A pkg=(
  [tcpdump]=tcpdump [tshark]=tshark [ip]=iproute2 [bridge]=iproute2 [unzip]=unzip [curl]=curl
  [openssl]=openssl [dig]=dnsutils [dnsmasq]=dnsmasq-base [setpriv]=util-linux
  [unshare]=util-linux [nsenter]=util-linux [ps]=procps [socat]=socat [script]=bsdutils
  [nginx]=nginx-light [perl]=perl-base [stdbuf]=coreutils
)
[[ "${1:-}" == "--with-bench" ]] && pkg[iperf3]=iperf3

missing=()
for cmd in "${!pkg[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg[$cmd]}")
done
(( ${#missing[@]} == 0 )) && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "kube-pcap: missing system packages: ${missing[*]} (install them, e.g. apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "kube-pcap: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
