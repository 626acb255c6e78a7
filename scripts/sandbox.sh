#!/usr/bin/env bash
# Runs a command in a throw-away sandbox: new PID, mount and network namespaces.
#
#   scripts/sandbox.sh <command> [args...]
#
# Why: tests and the demo start an API server, agents, tcpdump and "nodes" and "pods" as
# network namespaces. Inside the sandbox
#   - nothing is reachable from the machine and nothing the machine runs is disturbed;
#   - /tmp is a private tmpfs, so every temporary file vanishes with the sandbox (the
#     checkout and the caches, when they live under /tmp, are bound back in: see below);
#   - when the sandbox's first process ends, however it ends, the kernel kills every
#     process in it and the network namespaces go with them: nothing can be left behind.
# The only addresses used are loopback and the RFC 5737 test ranges.
set -euo pipefail

if [[ "${KUBE_PCAP_SANDBOX:-}" != "1" ]]; then
  if [[ $EUID -ne 0 ]]; then
    echo "kube-pcap: the tests and the demo create network namespaces and must run as root (try: sudo -E npm test)" >&2
    exit 1
  fi
  # Not exec'd: once the sandbox is gone, the cgroups the test cluster's kubelets made
  # (test/cluster, /sys/fs/cgroup/*/kube-pcap-*) are removed, however the run ended. They
  # belong to the machine's cgroup hierarchies, which no namespace takes away; by now every
  # process that was in them is dead (the kernel kills a PID namespace's processes with it).
  trap 'true' INT TERM
  status=0
  unshare --pid --mount --net --fork --kill-child --mount-proc -- env KUBE_PCAP_SANDBOX=1 bash "$0" "$@" || status=$?
  for root in /sys/fs/cgroup/*/kube-pcap-*; do
    [[ -d "$root" ]] || continue
    for _ in 1 2 3 4 5; do
      find "$root" -depth -type d -exec rmdir {} + 2>/dev/null && break
      [[ -d "$root" ]] || break
      sleep 0.2
    done
    [[ -d "$root" ]] && echo "kube-pcap: could not remove the cgroup $root" >&2
  done
  exit "$status"
fi

# PID 1 of the sandbox from here on.
# A private /tmp hides whatever the machine keeps under /tmp, so what the run needs from
# there (a checkout cloned under /tmp, a cache or KUBEBUILDER_ASSETS under it) is bound
# back in at the same path, read from the old /tmp through a descriptor opened before the
# tmpfs covers it. Only those paths come back; everything else under /tmp stays hidden.
keep=("$(cd "$(dirname "$0")/.." && pwd -P)")
for v in HOME XDG_CACHE_HOME KUBE_PCAP_CACHE KUBEBUILDER_ASSETS KUBE_PCAP_CONTROL_PLANE_BIN; do
  if [[ -n "${!v:-}" && -e "${!v}" ]]; then keep+=("$(realpath -e "${!v}")"); fi
done
IFS=: read -r -a path_dirs <<< "${PATH:-}"
for d in "${path_dirs[@]}"; do if [[ -d "$d" ]]; then keep+=("$(realpath -e "$d")"); fi; done
tmp_real="$(realpath -e /tmp)"
exec {old_tmp}<"$tmp_real"
mount -t tmpfs -o mode=1777,size=12g kube-pcap-tmp /tmp
# Shortest first, so that a path inside one already bound back is skipped.
mapfile -t keep < <(printf '%s\n' "${keep[@]}" | awk '!seen[$0]++ { print length($0) "\t" $0 }' | sort -s -n -k1,1 | cut -f2-)
bound=()
for p in "${keep[@]}"; do
  [[ "$p" == "$tmp_real"/* ]] || continue
  for b in "${bound[@]}"; do [[ "$p" == "$b"/* ]] && continue 2; done
  rel="${p#"$tmp_real"/}"
  if [[ -d "/proc/self/fd/$old_tmp/$rel" ]]; then mkdir -p "/tmp/$rel"; else mkdir -p "$(dirname "/tmp/$rel")"; touch "/tmp/$rel"; fi
  # --no-canonicalize: resolved by name, the descriptor's path would now lead into the tmpfs.
  mount --no-canonicalize --bind "/proc/self/fd/$old_tmp/$rel" "/tmp/$rel"
  bound+=("$p")
done
exec {old_tmp}<&-
export TMPDIR=/tmp
ip link set lo up
# The "cluster network": node namespaces attach their uplink to this bridge; the API
# server and the gateway are reached through it at 198.51.100.254 (RFC 5737 TEST-NET-2).
ip link add name kpt-br0 type bridge
# A fixed MAC: a bridge without one takes the lowest MAC of its ports and changes it as
# nodes come and go, and nodes' ARP entries for the bridge address then name a MAC that is
# gone: their connections to the API server hang until the entry is re-probed.
ip link set kpt-br0 address 02:6b:70:63:61:70
ip addr add 198.51.100.254/24 dev kpt-br0
ip link set kpt-br0 up
export KUBE_PCAP_BRIDGE=kpt-br0 KUBE_PCAP_BRIDGE_IP=198.51.100.254 KUBE_PCAP_TMP=/tmp

"$@" &
child=$!
trap 'kill -INT "$child" 2>/dev/null || true' INT
trap 'kill -TERM "$child" 2>/dev/null || true' TERM
set +e
# `wait` also returns when a trapped signal arrives: keep waiting until the child is gone.
while :; do
  wait "$child"
  status=$?
  kill -0 "$child" 2>/dev/null || break
done
exit "$status"
