#!/usr/bin/env bash
# Runs a command in a throw-away sandbox: new PID, mount and network namespaces.
#
#   scripts/sandbox.sh <command> [args...]
#
# Why: tests and the demo start an API server, agents, tcpdump and "nodes" and "pods" as
# network namespaces. Inside the sandbox
#   - nothing is reachable from the machine and nothing the machine runs is disturbed;
#   - /tmp is a private tmpfs, so every temporary file vanishes with the sandbox;
#   - when the sandbox's first process ends, however it ends, the kernel kills every
#     process in it and the network namespaces go with them: nothing can be left behind.
# The only addresses used are loopback and the RFC 5737 test ranges.
set -euo pipefail

if [[ "${KUBE_PCAP_SANDBOX:-}" != "1" ]]; then
  if [[ $EUID -ne 0 ]]; then
    echo "kube-pcap: the tests and the demo create network namespaces and must run as root (try: sudo -E npm test)" >&2
    exit 1
  fi
  exec unshare --pid --mount --net --fork --kill-child --mount-proc -- env KUBE_PCAP_SANDBOX=1 bash "$0" "$@"
fi

# PID 1 of the sandbox from here on.
mount -t tmpfs -o mode=1777,size=12g kube-pcap-tmp /tmp
ip link set lo up
# The "cluster network": node namespaces attach their uplink to this bridge; the API
# server and the gateway are reached through it at 198.51.100.254 (RFC 5737 TEST-NET-2).
ip link add name kpt-br0 type bridge
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
