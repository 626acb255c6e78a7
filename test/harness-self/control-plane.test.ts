// The test control plane itself: real TokenRequest/TokenReview/SubjectAccessReview, and a
// teardown that leaves no process, port or directory behind, even when its owner is killed.
import { spawn } from 'node:child_process';
import { readdir, stat } from 'node:fs/promises';
import t from 'tap';
import { privateCluster } from '../harness/cluster.js';
import { ControlPlane, REPO_ROOT } from '../harness/control-plane.js';
import { portOpen as portOpenAt } from '../harness/http.js';
import { waitFor } from '../harness/wait.js';

const alive = async (pid: number): Promise<boolean> => await stat(`/proc/${pid}`).then(() => true, () => false);
const portOpen = async (port: number): Promise<boolean> => await portOpenAt('127.0.0.1', port);

async function childPids(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const st = await import('node:fs/promises').then((fs) => fs.readFile(`/proc/${d}/stat`, 'utf8')).catch(() => '');
    const ppid = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === pid) out.push(Number(d));
  }
  return out;
}

t.test('TokenRequest, TokenReview and SubjectAccessReview are real', async (t) => {
  const c = await privateCluster(t);
  const ns = await c.createNamespace('self');
  await c.createServiceAccount(ns, 'who');
  const token = await c.tokenFor(ns, 'who', { audience: 'kube-pcap-agent', expirationSeconds: 600 });
  const ok = await c.authn.createTokenReview({ body: { spec: { token, audiences: ['kube-pcap-agent'] } } });
  t.equal(ok.status?.authenticated, true);
  t.equal(ok.status?.user?.username, `system:serviceaccount:${ns}:who`);
  const wrongAudience = await c.authn.createTokenReview({ body: { spec: { token, audiences: ['something-else'] } } });
  t.notOk(wrongAudience.status?.authenticated, 'a token for another audience is refused');
  const sar = await c.authz.createSubjectAccessReview({ body: { spec: { user: `system:serviceaccount:${ns}:who`, resourceAttributes: { verb: 'list', resource: 'secrets', namespace: ns } } } });
  t.equal(sar.status?.allowed, false, 'RBAC is on: a fresh ServiceAccount may do nothing');
});

t.test('stop() leaves no process, port or directory behind', async (t) => {
  const cp = await ControlPlane.start();
  t.ok(await portOpen(cp.info.port), 'serving');
  const kids = await childPids(process.pid);
  t.ok(kids.length >= 2, 'etcd and kube-apiserver run as children');
  await cp.stop();
  for (const pid of kids) t.notOk(await alive(pid), `process ${pid} is gone`);
  t.notOk(await portOpen(cp.info.port), 'the port is closed');
  await t.rejects(stat(cp.dir), 'the directory is gone');
});

t.test('when its owner is killed with SIGKILL, the control plane dies with it', async (t) => {
  const script = `import { ControlPlane } from '${REPO_ROOT}/dist/test/harness/control-plane.js';
    const cp = await ControlPlane.start();
    process.stdout.write(JSON.stringify({ port: cp.info.port }) + '\\n');
    setInterval(() => {}, 1000);`;
  const owner = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'], env: process.env });
  let out = '';
  owner.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const { port } = await waitFor(() => (out.includes('\n') ? (JSON.parse(out) as { port: number }) : undefined), { what: 'the owner to start a control plane', timeoutMs: 90_000 });
  const grandchildren = await childPids(owner.pid!);
  t.ok(grandchildren.length >= 2);
  owner.kill('SIGKILL');
  await waitFor(async () => !(await Promise.all(grandchildren.map(alive))).some(Boolean), { what: 'etcd and kube-apiserver to die with their owner', timeoutMs: 10_000 });
  t.notOk(await portOpen(port), 'nothing listens any more');
});
