// A new pod's first packets (docs/agent.md, "A new pod's first packets"): the agent takes a
// pod's address from the runtime's CNI result cache as soon as its network is set up, so
// tcpdump listens before the pod's container runs, not after the kubelet reports the
// address (on these nodes about 200 ms later, 40 queries of the pods below). Each pod sends
// DNS query i with id i, every 5 ms, from its first instant; the first captured id is the
// number of queries the capture missed. (bench:cluster measures the same over 20 pods.)
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { run } from '../harness/http.js';
import { waitFor } from '../harness/wait.js';
import { realCluster } from './handle.js';
import { ensureKubePcap } from './install.js';
import { CLUSTER_DNS_IP } from './real-cluster.js';

const NS = 'first-packets';
const c = await realCluster(t);
await ensureKubePcap(c);
await c.kubectl(['create', 'namespace', NS]);
t.teardown(() => c.kubectl(['delete', 'namespace', NS, '--wait=false']));
await c.kubectlOk(['apply', '-f', '-'], { input: `apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata: {name: early, namespace: ${NS}}\nspec:\n  selector: app == "early"\n  filters: [{protocol: UDP, ports: [53]}]\n` });

/** bash builtins only: query i (DNS id i) to the cluster DNS every 5 ms, query 0 first. */
const sender = `exec 3<>/dev/udp/${CLUSTER_DNS_IP}/53; q() { printf -v id "\\\\\\\\x%02x\\\\\\\\x%02x" $(($1>>8)) $(($1&255)); printf "$id\\\\x01\\\\x00\\\\x00\\\\x01\\\\x00\\\\x00\\\\x00\\\\x00\\\\x00\\\\x00\\\\x01p\\\\x0astorefront\\\\x07example\\\\x00\\\\x00\\\\x01\\\\x00\\\\x01" >&3; }; q 0; mkfifo /tmp/pause; exec 4<>/tmp/pause; for i in $(seq 1 999); do q $i; read -t 0.005 -u 4; done`;

t.test('pods created after the capture are captured from (about) their first packet', async (t) => {
  for (const [i, node] of c.nodeNames.concat(c.nodeNames[0]!).entries()) {
    const name = `early-${i}`;
    await c.kubectlOk(['apply', '-f', '-'], {
      input: `apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: ${NS}, labels: {app: early}}
spec:
  nodeName: ${node}
  restartPolicy: Never
  terminationGracePeriodSeconds: 0
  containers:
    - name: app
      image: ${c.info.images.workload}
      imagePullPolicy: Never
      command: [bash, -c, '${sender}']
`,
    });
    const ip = await waitFor(async () => (await c.kubectlOk(['get', 'pod', name, '-n', NS, '-o', 'jsonpath={.status.podIP}'])).trim() || undefined, { what: `${name}'s address`, timeoutMs: 60_000, intervalMs: 200 });
    const dir = c.nodePath(node, `/var/lib/kube-pcap/${NS}/early`);
    const firstId = await waitFor(async () => {
      let first: number | undefined;
      for (const f of (await readdir(dir).catch(() => [] as string[])).filter((n) => n.startsWith(`${name}_`))) {
        const r = await run('tshark', ['-r', join(dir, f), '-T', 'fields', '-e', 'dns.id', '-Y', `ip.src == ${ip} && dns.flags.response == 0`]);
        for (const l of r.stdout.split('\n').filter(Boolean)) first = Math.min(first ?? Infinity, Number(l));
      }
      return first;
    }, { what: `${name}'s queries in the capture`, timeoutMs: 30_000, intervalMs: 250 });
    // 10 queries: 50 ms. Waiting for the kubelet's report of the address cost about 40.
    t.ok(firstId < 10, `${name} on ${node}: captured from query #${firstId}`);
    await c.kubectl(['delete', 'pod', name, '-n', NS, '--wait=false']);
  }
});
