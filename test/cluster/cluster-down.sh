#!/usr/bin/env bash
# npm run cluster:down — stops what `npm run cluster:up` started: the sandbox (its cluster
# takes itself down on SIGTERM: pods, nodes, control plane; the sandbox then removes the
# nodes' cgroups) and the API forwarder.
set -uo pipefail
CACHE="${KUBE_PCAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-pcap}"
state="$CACHE/cluster-up"
if [[ ! -f "$state/pid" ]]; then echo "kube-pcap: no cluster is up" >&2; exit 0; fi
outer="$(cat "$state/pid")"
[[ -f "$state/forwarder.pid" ]] && kill "$(cat "$state/forwarder.pid")" 2>/dev/null
if kill -0 "$outer" 2>/dev/null; then
  init="$(pgrep -P "$(pgrep -P "$outer" unshare)" | head -n1)"
  [[ -n "$init" ]] && kill -TERM "$init" 2>/dev/null
  for _ in $(seq 1 600); do kill -0 "$outer" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$outer" 2>/dev/null
fi
pkill -f "nsenter -t .* socat STDIO TCP:127.0.0.1" 2>/dev/null
rm -rf "$state"
echo "kube-pcap: the cluster is down" >&2
