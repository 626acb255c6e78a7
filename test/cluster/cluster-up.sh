#!/usr/bin/env bash
# npm run cluster:up — the real test cluster, left running for trying the README by hand:
# two nodes (containerd, kubelet, kube-proxy), kube-pcap installed by its chart, the
# storefront namespace with devops-sa and the logging pods. It runs in a sandbox of its own
# (scripts/sandbox.sh, started in the background); a forwarder on 127.0.0.1 carries the
# API server out of it, so kubectl (and kubectl port-forward) work from this shell with the
# kubeconfig printed at the end. `npm run cluster:down` stops it all.
# Called by scripts/run.sh once the binaries and images are built.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${KUBE_PCAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-pcap}"
state="$CACHE/cluster-up"
if [[ -f "$state/pid" ]] && kill -0 "$(cat "$state/pid")" 2>/dev/null; then
  echo "kube-pcap: a cluster is already up (npm run cluster:down stops it); kubeconfig: $state/kubeconfig" >&2
  exit 1
fi
rm -rf "$state" && mkdir -p "$state"
setsid nohup bash scripts/sandbox.sh node --enable-source-maps dist/test/cluster/stay-up.js "$state" > "$state/log" 2>&1 < /dev/null &
echo $! > "$state/pid"
echo "kube-pcap: bringing the cluster up (log: $state/log)..." >&2
deadline=$((SECONDS + 900))
until [[ -f "$state/ready" || -f "$state/failed" ]]; do
  if ! kill -0 "$(cat "$state/pid")" 2>/dev/null || (( SECONDS > deadline )); then break; fi
  sleep 1
done
if [[ ! -f "$state/ready" ]]; then
  echo "kube-pcap: the cluster did not come up:" >&2
  tail -n 30 "$state/log" >&2
  bash test/cluster/cluster-down.sh >/dev/null 2>&1 || true
  exit 1
fi
# The sandbox's first process (the one whose namespaces the cluster is in): sandbox.sh ->
# unshare -> the sandbox's bash.
outer="$(cat "$state/pid")"
init="$(pgrep -P "$(pgrep -P "$outer" unshare)" | head -n1)"
api_port="$(sed -n 's/.*"apiPort": \([0-9]*\).*/\1/p' "$state/cluster.json")"
host_port="$("$KUBE_PCAP_NODE" -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
setsid nohup socat "TCP-LISTEN:$host_port,bind=127.0.0.1,reuseaddr,fork" \
  "SYSTEM:nsenter -t $init -n socat STDIO TCP\\:127.0.0.1\\:$api_port" > "$state/forwarder.log" 2>&1 < /dev/null &
echo $! > "$state/forwarder.pid"
cat > "$state/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: kube-pcap-test
  cluster: {server: https://127.0.0.1:$host_port, certificate-authority: $state/ca.crt}
users:
- name: admin
  user: {client-certificate: $state/admin.crt, client-key: $state/admin.key}
contexts:
- name: kube-pcap-test
  context: {cluster: kube-pcap-test, user: admin}
current-context: kube-pcap-test
KUBECONFIG
chmod 600 "$state/kubeconfig"
kubectl="$KUBE_PCAP_CONTROL_PLANE_BIN/kubectl"
for _ in $(seq 1 50); do "$kubectl" --kubeconfig "$state/kubeconfig" get --raw /readyz >/dev/null 2>&1 && break; sleep 0.2; done
"$kubectl" --kubeconfig "$state/kubeconfig" get nodes -o wide
cat <<EOT

The cluster is up. In this shell:

  export KUBECONFIG=$state/kubeconfig
  alias kubectl=$kubectl
  kubectl get pods -A -o wide

and then the README's story, e.g.:

  kubectl apply -f deploy/examples/pc-storefront-logging-dns.yaml --as=system:serviceaccount:storefront:devops-sa
  kubectl port-forward -n kube-pcap service/kube-pcap-gateway 9443:9443 &
  kubectl apply -f rbac-examples/files-role.yaml
  NS=storefront NAME=pc-storefront-logging-dns TOKEN=\$(kubectl create token devops-sa -n storefront)
  curl "https://localhost:9443/packet-capture/download/\$NS/\$NAME/files.zip" -L -O -k -H "Authorization: Bearer \$TOKEN"

npm run cluster:down stops it all.
EOT
