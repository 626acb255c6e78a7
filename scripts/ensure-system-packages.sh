#!/usr/bin/env bash
# Installs the Debian packages the tests, the demo and the benchmarks use, if missing.
#   scripts/ensure-system-packages.sh [--with-bench] [--with-cluster]
# --with-cluster: what the real nodes of test/cluster need besides what is built from the Go
# module proxy: runc (the OCI runtime, with seccomp), iptables (kube-proxy and the bridge
# plugin), buildah (images from our Dockerfile without a Docker engine) and debootstrap
# (the Debian base those images start from).
set -euo pipefail

# command -> Debian package
declare -A pkg=(
  [tcpdump]=tcpdump [tshark]=tshark [ip]=iproute2 [bridge]=iproute2 [unzip]=unzip [curl]=curl
  [openssl]=openssl [dig]=dnsutils [dnsmasq]=dnsmasq-base [setpriv]=util-linux
  [unshare]=util-linux [nsenter]=util-linux [ps]=procps [socat]=socat [script]=bsdutils
  [nginx]=nginx-light [stdbuf]=coreutils
)
for arg in "$@"; do
  case "$arg" in
    --with-bench) pkg[iperf3]=iperf3 ;;
    --with-cluster) pkg[runc]=runc; pkg[iptables]=iptables; pkg[buildah]=buildah; pkg[debootstrap]=debootstrap ;;
    *) echo "ensure-system-packages: unknown option $arg" >&2; exit 2 ;;
  esac
done

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
