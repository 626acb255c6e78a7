// A capture that selects a hostNetwork pod (docs/agent.md, "Host-network pods"): such a pod
// shares the node's network namespace, its packets cannot be told from the node's and other
// host-network pods', so it is refused with a clear status message, never captured on the
// node's interfaces; a capture that selects it beside ordinary pods captures those.
import t from 'tap';
import { waitFor } from '../harness/wait.js';
import { realCluster } from './handle.js';
import { ensureKubePcap } from './install.js';

const NS = 'hostnet';
const c = await realCluster(t);
await ensureKubePcap(c);
await c.kubectl(['create', 'namespace', NS]);
t.teardown(() => c.kubectl(['delete', 'namespace', NS, '--wait=false']));

const pod = (name: string, hostNetwork: boolean): string => `apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: ${NS}, labels: {app: edge}}
spec:
  nodeName: node-1
  hostNetwork: ${hostNetwork}
  dnsPolicy: ${hostNetwork ? 'ClusterFirstWithHostNet' : 'ClusterFirst'}
  terminationGracePeriodSeconds: 1
  containers:
    - name: app
      image: ${c.info.images.workload}
      imagePullPolicy: Never
      command: [bash, -c, 'while :; do dig +short +tries=1 +time=1 ${name}.storefront.example >/dev/null; sleep 0.2; done']
`;

async function entry(capture: string): Promise<{ state: string; message?: string; fileNames?: string[] } | undefined> {
  const r = await c.kubectl(['get', 'packetcapture', capture, '-n', NS, '-o', 'json']);
  if (r.code !== 0) return undefined;
  const pc = JSON.parse(r.stdout) as { status?: { files?: { node: string; state: string; message?: string; fileNames?: string[] }[] } };
  return pc.status?.files?.find((f) => f.node === 'node-1');
}

t.test('a capture of only a hostNetwork pod: Error on its node, with the reason; nothing captured', async (t) => {
  await c.kubectlOk(['apply', '-f', '-'], { input: pod('edge-host', true) });
  await c.waitForPods(NS, 'app=edge', 1);
  await c.kubectlOk(['apply', '-f', '-'], { input: `apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata: {name: edge, namespace: ${NS}}\nspec:\n  selector: app == "edge"\n` });
  const e = await waitFor(async () => {
    const x = await entry('edge');
    return x?.state === 'Error' ? x : undefined;
  }, { what: 'node-1 to say Error', timeoutMs: 60_000, intervalMs: 500 });
  t.match(e.message, /not captured: edge-host uses the node's own network \(hostNetwork: true\)/, `the reason: ${e.message}`);
  t.same(e.fileNames ?? [], [], 'no file');
  const dumps = (await c.nodeProcesses('node-1')).filter((p) => p.comm === 'tcpdump' && !p.args.includes('-d'));
  const nodeIfaces = (await c.onNode('node-1', 'ip', ['-o', 'link', 'show'])).stdout.split('\n').map((l) => l.split(': ')[1]?.split('@')[0]).filter(Boolean);
  t.same(dumps.filter((d) => ['eth0', 'cni0', 'lo', 'any'].includes(d.args[d.args.indexOf('-i') + 1] ?? '')), [], `no tcpdump on the node's own interfaces (${nodeIfaces.filter((i) => !i!.startsWith('veth')).join(', ')})`);
});

t.test('beside an ordinary pod, the ordinary one is captured and the message names the other', async (t) => {
  await c.kubectlOk(['apply', '-f', '-'], { input: pod('edge-pod', false) });
  await c.waitForPods(NS, 'app=edge', 2);
  const e = await waitFor(async () => {
    const x = await entry('edge');
    return x?.state === 'Capturing' ? x : undefined;
  }, { what: 'node-1 to capture the ordinary pod', timeoutMs: 60_000, intervalMs: 500 });
  t.ok(e.fileNames?.length === 1 && e.fileNames[0]!.startsWith('edge-pod_'), `edge-pod's file: ${e.fileNames?.join(', ')}`);
  t.match(e.message, /not captured: edge-host uses the node's own network/);
});
