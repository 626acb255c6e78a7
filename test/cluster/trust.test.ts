// The trust boundaries of docs/security.md on real nodes, each as the attack it stops:
//  - a user given the gateway (rbac-examples/gateway-access.yaml) cannot port-forward into an
//    agent pod, which would put them in the node's own network namespace;
//  - even a cluster admin's port-forward to an agent pod finds no agent port: the agent
//    listens on the node's address, for mutual TLS, not on the loopback a port-forward dials;
//  - an agent's own token, as the kubelet gave it, names its node, and the API server refuses
//    it on another node's report (create, change, delete): a compromised node cannot forge
//    the files of a capture on another node;
//  - a network peer holding its 64 connections to the gateway is refused the next, while the
//    probes, on their own port, still answer.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { KubeApiError } from '../../src/kube/client.js';
import { connect } from '../../src/kube/config.js';
import { applyNodeReport, deleteNodeReport, reportName, reportsPath, type NodeReport } from '../../src/kube/node-report.js';
import { REPO_ROOT } from '../harness/control-plane.js';
import { run } from '../harness/http.js';
import { scratchDir } from '../harness/kube-pcap.js';
import { OwnedProcess } from '../harness/processes.js';
import { waitFor } from '../harness/wait.js';
import { realCluster } from './handle.js';
import { AGENTS_NS, ensureKubePcap } from './install.js';

const NS = 'trust';
const c = await realCluster(t);
await ensureKubePcap(c);
const work = await scratchDir(t, 'trust');
await c.kubectl(['create', 'namespace', NS]);
t.teardown(() => c.kubectl(['delete', 'namespace', NS, '--wait=false']));
const cp = c.info.controlPlane;
const kubectlBin = join(cp.binDir, 'kubectl');

/** `kubectl port-forward` to an agent pod, as `token`'s user (or the admin); its log and process. */
async function forwardToAgent(pod: string, token: string | undefined, name: string): Promise<{ proc: OwnedProcess; logFile: string }> {
  const logFile = join(work, `${name}.log`);
  const who = token ? ['--server', cp.server, '--certificate-authority', cp.caFile, '--token', token, '--kubeconfig', '/dev/null'] : ['--kubeconfig', cp.kubeconfig];
  const proc = new OwnedProcess(kubectlBin, [...who, 'port-forward', '-n', AGENTS_NS, `pod/${pod}`, ':9444'], { name, logFile });
  t.teardown(() => proc.stop(2000));
  return { proc, logFile };
}

t.test('a user with the gateway-access example cannot port-forward into an agent pod', async (t) => {
  await c.kubectlOk(['create', 'serviceaccount', 'dev', '-n', NS]);
  const access = join(REPO_ROOT, 'rbac-examples', 'gateway-access.yaml');
  const hadAccess = (await c.kubectl(['get', 'role', 'kube-pcap-gateway-port-forward', '-n', 'kube-pcap'])).code === 0;
  await c.kubectlOk(['apply', '-f', access]);
  // Left as found: uninstalling checks that nothing of ours stays in kube-pcap.
  if (!hadAccess) t.teardown(() => c.kubectl(['delete', '-f', access, '--ignore-not-found']));
  await c.kubectlOk(['create', 'rolebinding', 'dev-gateway', '-n', 'kube-pcap', '--role=kube-pcap-gateway-port-forward', `--serviceaccount=${NS}:dev`]);
  t.teardown(() => c.kubectl(['delete', 'rolebinding', 'dev-gateway', '-n', 'kube-pcap']));
  const token = (await c.kubectlOk(['create', 'token', 'dev', '-n', NS, '--duration=1h'])).trim();
  const [agent] = await c.pods(AGENTS_NS, 'app.kubernetes.io/name=kube-pcap-agent');
  const { proc, logFile } = await forwardToAgent(agent!.name, token, 'pf-user');
  const { code } = await proc.exited;
  t.not(code, 0, 'refused');
  t.match(await readFile(logFile, 'utf8'), /forbidden|Forbidden/, 'by RBAC: nothing is granted in the agents\' namespace');
  const pods = await c.kubectl(['get', 'pods', '-n', AGENTS_NS], { token });
  t.not(pods.code, 0, 'nor may they list the agents\' pods');
});

t.test('an admin\'s port-forward to an agent pod finds no agent port: the agent listens on the node\'s address only', async (t) => {
  const [agent] = await c.pods(AGENTS_NS, 'app.kubernetes.io/name=kube-pcap-agent');
  const { proc, logFile } = await forwardToAgent(agent!.name, undefined, 'pf-admin');
  const port = await waitFor(async () => {
    if (!proc.running) throw await proc.failure('exited');
    return Number(/Forwarding from 127\.0\.0\.1:(\d+)/.exec(await readFile(logFile, 'utf8'))?.[1] ?? 0) || undefined;
  }, { what: 'the admin\'s port-forward to listen', timeoutMs: 30_000 });
  const through = await run('curl', ['-sk', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', `https://127.0.0.1:${port}/healthz`], { timeoutMs: 10_000 });
  t.not(through.code, 0, `nothing answers through the port-forward (curl exit ${through.code})`);
  t.match(await waitFor(async () => { const l = await readFile(logFile, 'utf8'); return /refused/.test(l) ? l : undefined; }, { what: 'kubectl to report the refusal', timeoutMs: 10_000 }), /connection refused/);
  const direct = await c.onNode(agent!.node, 'curl', ['-sk', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', `https://${agent!.ip}:9444/healthz`]);
  t.equal(direct.stdout, '200', 'while the node\'s address serves it (the kubelet\'s probes, the gateway with its client certificate)');
});

t.test('an agent\'s own token (the kubelet\'s) is refused on another node\'s report', async (t) => {
  const [nodeA, nodeB] = c.nodeNames;
  const agentProc = (await c.nodeProcesses(nodeA!)).find((p) => p.args.includes('/app/dist/src/cli.js') && p.args.includes('agent'));
  t.ok(agentProc, `the agent process on ${nodeA}`);
  // What an attacker with root on node A has: the agent container's projected token.
  // /var/run is a symlink to /run in the image: read through /proc, an absolute link would
  // resolve against this process's root, so the container's own path is taken.
  const token = (await readFile(`/proc/${agentProc!.pid}/root/run/secrets/kubernetes.io/serviceaccount/token`, 'utf8')).trim();
  const review = JSON.parse(await c.kubectlOk(['create', '-o', 'json', '-f', '-'], { input: JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token } }) })) as { status: { user: { username: string; extra?: Record<string, string[]> } } };
  t.equal(review.status.user.username, `system:serviceaccount:${AGENTS_NS}:kube-pcap-agent`);
  t.same(review.status.user.extra?.['authentication.kubernetes.io/node-name'], [nodeA], 'the kubelet\'s token names the agent\'s node');

  await c.kubectlOk(['apply', '-f', '-'], { input: `apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata: {name: victim, namespace: ${NS}}\nspec: {selector: app == 'nothing-here'}\n` });
  const uid = (await c.kubectlOk(['get', 'packetcapture', 'victim', '-n', NS, '-o', 'jsonpath={.metadata.uid}'])).trim();
  const ref = { namespace: NS, name: 'victim', uid };
  const kubeconfig = join(work, 'stolen.kubeconfig');
  await writeFile(kubeconfig, JSON.stringify({ apiVersion: 'v1', kind: 'Config', clusters: [{ name: 'c', cluster: { server: cp.server, 'certificate-authority': cp.caFile } }], users: [{ name: 'u', user: { token } }], contexts: [{ name: 'c', context: { cluster: 'c', user: 'u' } }], 'current-context': 'c' }));
  const stolen = await connect(kubeconfig);
  t.teardown(() => stolen.close());
  const forged = await applyNodeReport(stolen, ref, nodeB!, { state: 'Finished', directory: '/etc', fileNames: ['shadow.pcap'] }, 'kube-pcap-agent').then(() => undefined, (e: unknown) => e);
  t.ok(forged instanceof KubeApiError && forged.status === 403, 'node A\'s token cannot create node B\'s report');
  t.match((forged as Error).message, new RegExp(`the agent of node ${nodeA} may not write the report of node ${nodeB}`));

  // Node B's own report (its agent writes it too; the admin makes sure it exists now).
  const name = reportName('victim', nodeB!);
  await c.kubectlOk(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'kube-pcap.io/v1alpha1', kind: 'PacketCaptureNodeReport', metadata: { name, namespace: NS }, spec: { nodeName: nodeB, captureName: 'victim', captureUID: uid }, status: { state: 'WaitingForTraffic' } }) });
  await t.rejects(stolen.request({ method: 'PATCH', path: `${reportsPath(NS)}/${name}`, contentType: 'application/merge-patch+json', body: { status: { fileNames: ['shadow.pcap'] } } }), /may not write the report of node/, 'nor change it');
  await t.rejects(deleteNodeReport(stolen, NS, name), /may not write the report of node/, 'nor delete it');
  const still = JSON.parse(await c.kubectlOk(['get', 'pcnr', name, '-n', NS, '-o', 'json'])) as NodeReport;
  t.notOk((still.status?.fileNames ?? []).includes('shadow.pcap'), 'node B\'s report lists no forged file');
  t.not(still.status?.directory, '/etc', 'nor a forged directory');
});

t.test('a peer that holds its share of the gateway\'s connections gets no more, and the probes still answer', async (t) => {
  const [gw] = await c.pods('kube-pcap', 'app.kubernetes.io/name=kube-pcap-gateway');
  t.ok(gw?.ready, 'a gateway pod is ready');
  // From the pod's node, in one shell: 64 raw TCP connections held open (the shipped
  // --max-connections-per-address), then HTTPS requests until one is refused, the readiness
  // probe on the operations port meanwhile, and requests again once the 64 are closed.
  const script = `
set -u
ip=$1
fds=()
for i in $(seq 64); do exec {fd}<>/dev/tcp/$ip/9443; fds+=($fd); done
refused=no
for try in $(seq 40); do curl -sk -o /dev/null --max-time 2 https://$ip:9443/openapi.yaml || { refused=yes; break; }; done
echo "refused=$refused"
echo "readyz=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 5 https://$ip:9445/readyz)"
for fd in "\${fds[@]}"; do exec {fd}>&-; done
served=no
for try in $(seq 40); do [ "$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 https://$ip:9443/openapi.yaml)" = 200 ] && { served=yes; break; }; done
echo "served=$served"
`;
  const r = await c.onNode(gw!.node, 'bash', ['-c', script, 'flood', gw!.ip], 120_000);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /refused=yes/, 'the 65th connection from one address is closed on arrival');
  t.match(r.stdout, /readyz=200/, '/readyz answers on the operations port meanwhile, from the same address');
  t.match(r.stdout, /served=yes/, 'served again once the address holds fewer');
  const [after] = await c.pods('kube-pcap', `app.kubernetes.io/name=kube-pcap-gateway`);
  t.ok(after?.ready, 'the pod stayed ready');
});
