// kube-pcap installed on real nodes the two ways the README gives: `helm install` of the
// chart and `kubectl apply -k deploy/`, with our images built from the Dockerfile. The agents
// (one per node, DaemonSet) and the gateways (Deployment) reach Ready under exactly the
// shipped securityContext, applied by a real container runtime; uninstalling leaves nothing
// of ours but what the README says is kept.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { REPO_ROOT } from '../harness/control-plane.js';
import { scratchDir } from '../harness/kube-pcap.js';
import { waitFor } from '../harness/wait.js';
import { realCluster, type ClusterHandle } from './handle.js';
import { AGENTS_NS, createTls, helmInstall, RELEASE, SYSTEM_NS, waitUntilRunning } from './install.js';

const c = await realCluster(t);
const work = await scratchDir(t, 'install');

/** Every object of ours left in the cluster, as "kind/namespace/name". */
async function ours(c: ClusterHandle): Promise<string[]> {
  const kinds = 'all,configmaps,secrets,serviceaccounts,roles,rolebindings,leases,endpointslices,poddisruptionbudgets,packetcapturenodereports';
  const lines: string[] = [];
  for (const ns of [SYSTEM_NS, AGENTS_NS]) {
    const r = await c.kubectl(['get', kinds, '-n', ns, '-o', 'jsonpath={range .items[*]}{.kind}/{.metadata.name}{"\\n"}{end}']);
    lines.push(...r.stdout.split('\n'));
  }
  const cluster = await c.kubectl(['get', 'clusterroles,clusterrolebindings,validatingadmissionpolicies,validatingadmissionpolicybindings', '-o', 'jsonpath={range .items[*]}{.kind}/{.metadata.name}{"\\n"}{end}']);
  lines.push(...cluster.stdout.split('\n'));
  // The namespaces' own ServiceAccounts and CA ConfigMaps are Kubernetes', not ours.
  return lines.filter((l) => l.includes('kube-pcap') && l !== 'ServiceAccount/default' && l !== 'ConfigMap/kube-root-ca.crt').sort();
}

/** What the runtime applied to a running container: its process's user and capabilities. */
async function kubePcapProcess(c: ClusterHandle, node: string, role: 'agent' | 'gateway'): Promise<{ uid: string; capEff: string; capBnd: string; noNewPrivs: string; seccomp: string }> {
  const procs = (await c.nodeProcesses(node)).filter((p) => p.args[p.args.indexOf('/app/dist/src/cli.js') + 1] === role && p.args.includes('/app/dist/src/cli.js'));
  if (procs.length !== 1) throw new Error(`${procs.length} kube-pcap ${role} processes on ${node}`);
  const status = await readFile(`/proc/${procs[0]!.pid}/status`, 'utf8');
  const field = (name: string): string => new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(status)?.[1]?.trim() ?? '';
  return { uid: field('Uid').split(/\s+/)[0]!, capEff: field('CapEff'), capBnd: field('CapBnd'), noNewPrivs: field('NoNewPrivs'), seccomp: field('Seccomp') };
}

// CAP_NET_RAW is bit 13, CAP_SETGID bit 6.
const NET_RAW_AND_SETGID = (1n << 13n | 1n << 6n).toString(16).padStart(16, '0');

t.test('helm install: an agent Ready on every node and two gateways, under the shipped securityContext', async (t) => {
  await c.helm(['uninstall', RELEASE, '--namespace', SYSTEM_NS, '--wait']);
  await helmInstall(c, join(work, 'tls'));
  const agents = await c.pods(AGENTS_NS, 'app.kubernetes.io/name=kube-pcap-agent');
  t.same(agents.map((p) => p.node).sort(), c.nodeNames, 'one agent pod per node (DaemonSet)');
  for (const a of agents) t.equal(a.ip, c.node(a.node).ip, `${a.name}: the node's address (hostNetwork)`);
  const gateways = await c.pods(SYSTEM_NS, 'app.kubernetes.io/name=kube-pcap-gateway');
  t.equal(gateways.filter((p) => p.ready).length, 2, 'two gateway replicas Ready');

  for (const node of c.nodeNames) {
    const agent = await kubePcapProcess(c, node, 'agent');
    t.equal(agent.uid, '0', `${node}: the agent runs as root (to write the node's capture directory)`);
    t.equal(agent.capEff, NET_RAW_AND_SETGID, `${node}: the agent's effective capabilities are NET_RAW and SETGID only`);
    t.equal(agent.capBnd, NET_RAW_AND_SETGID, `${node}: and its bounding set too`);
    t.equal(agent.noNewPrivs, '1', `${node}: no privilege escalation`);
    t.equal(agent.seccomp, '2', `${node}: a seccomp filter (RuntimeDefault)`);
  }
  const gw = gateways[0]!;
  const gateway = await kubePcapProcess(c, gw.node, 'gateway');
  t.equal(gateway.uid, '65532', 'the gateway runs as 65532');
  t.equal(gateway.capEff, '0000000000000000', 'with no capability');
  t.equal(gateway.seccomp, '2', 'under a seccomp filter');
  const ro = await c.kubectl(['exec', '-n', SYSTEM_NS, gw.name, '--', 'node', '-e', 'require("fs").writeFileSync("/app/x", "")']);
  t.not(ro.code, 0, 'the gateway\'s root filesystem is read-only');
  t.match(ro.stderr + ro.stdout, /EROFS|read-only/i);
});

t.test('helm uninstall leaves nothing of ours but the CRDs (kept by Helm, as the README says)', async (t) => {
  const r = await c.helm(['uninstall', RELEASE, '--namespace', SYSTEM_NS, '--wait', '--timeout', '2m']);
  t.equal(r.code, 0, r.stderr);
  // The TLS Secrets and the CA ConfigMap were the user's, made before the install.
  for (const o of ['secret/kube-pcap-gateway-agent-client', 'secret/kube-pcap-gateway-tls', 'configmap/kube-pcap-gateway-ca']) await c.kubectl(['delete', o, '-n', SYSTEM_NS]);
  await c.kubectl(['delete', 'secret/kube-pcap-agent-tls', '-n', AGENTS_NS]);
  // So was the access other tests granted with rbac-examples/gateway-access.yaml (whichever ran first).
  await c.kubectl(['delete', '-f', join(REPO_ROOT, 'rbac-examples', 'gateway-access.yaml'), '--ignore-not-found']);
  const left = await waitFor(async () => {
    const o = await ours(c);
    const pods = [...await c.pods(SYSTEM_NS, 'app.kubernetes.io/part-of=kube-pcap'), ...await c.pods(AGENTS_NS, 'app.kubernetes.io/part-of=kube-pcap')];
    if (o.length > 0 || pods.length > 0) throw new Error(`left: ${[...o, ...pods.map((p) => `Pod/${p.name}`)].join(', ')}`);
    return o;
  }, { what: 'every object and pod of the release to go', timeoutMs: 120_000, intervalMs: 500 });
  t.same(left, [], 'no object of ours is left in kube-pcap, kube-pcap-agents or cluster-wide');
  const crds = await c.kubectlOk(['get', 'crd', '-o', 'name']);
  t.match(crds, /packetcaptures\.projectcalico\.org/, 'the CRDs stay (Helm never deletes crds/)');
  for (const node of c.nodeNames) {
    const agents = (await c.nodeProcesses(node)).filter((p) => p.args.includes('/app/dist/src/cli.js') || p.comm === 'tcpdump');
    t.same(agents.map((p) => p.comm), [], `no agent or tcpdump left running on ${node}`);
  }
});

t.test('kubectl apply -k deploy/ (the README\'s other way): Ready on every node; kubectl delete -k removes it', async (t) => {
  // deploy/ creates the namespace itself; the Secrets must exist before the pods start.
  await c.kubectlOk(['apply', '-f', join(REPO_ROOT, 'deploy', 'namespace.yaml')]);
  await createTls(c, join(work, 'tls-kustomize'));
  const r = await c.kubectl(['apply', '-k', join(REPO_ROOT, 'deploy')]);
  t.equal(r.code, 0, r.stderr);
  // No registry here: the images are in the nodes' stores, which IfNotPresent (the default
  // for a tagged image) uses.
  await waitUntilRunning(c);
  const agents = await c.pods(AGENTS_NS, 'app.kubernetes.io/name=kube-pcap-agent');
  t.same(agents.map((p) => p.node).sort(), c.nodeNames, 'one agent per node');
  t.equal((await c.pods(SYSTEM_NS, 'app.kubernetes.io/name=kube-pcap-gateway')).filter((p) => p.ready).length, 2, 'two gateways');
  const del = await c.kubectl(['delete', '-k', join(REPO_ROOT, 'deploy'), '--wait', '--timeout=120s']);
  t.equal(del.code, 0, del.stderr);
  for (const ns of [SYSTEM_NS, AGENTS_NS]) await waitFor(async () => (await c.kubectl(['get', 'namespace', ns])).code !== 0, { what: `the namespace ${ns} to go`, timeoutMs: 120_000, intervalMs: 500 });
  t.same(await ours(c), [], 'nothing of ours left');
});
