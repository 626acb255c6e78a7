// What the agent's garbage collector may delete (docs/agent.md, "Garbage collection"): only
// directories its own agent made (they carry the capture's uid marker). A directory under the
// capture root that kube-pcap never made stays, however old; one of a capture deleted while
// no agent ran goes; a finished capture's files go once --finished-retention-seconds has
// passed since its end, and its report then lists none.
import { mkdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import t from 'tap';
import { allPackets, captureFiles, captureWorld, dig, readCaptureDir } from '../harness/capture-fixture.js';
import { cluster } from '../harness/cluster.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await captureWorld(t, c, { nodes: 1, agents: false });
const node = w.nodes[0]!;
const client = await w.addPod(node, 'logging-a', { app: 'logging' });
const root = dirname(dirname(w.captureDir('node-1', 'x')));

// Before the agent starts: a team's own files under the capture root (30 days old, no marker),
// and the directory of a capture deleted while no agent ran (marked, as the agent marks its own).
const foreign = join(root, 'other-team', 'backups');
await mkdir(foreign, { recursive: true });
await writeFile(join(foreign, 'db.pcap'), 'not ours');
const old = new Date(Date.now() - 30 * 86400_000);
await utimes(join(foreign, 'db.pcap'), old, old);
const orphan = join(root, w.ns, 'deleted-long-ago');
await mkdir(orphan, { recursive: true });
await writeFile(join(orphan, '.capture-uid'), '00000000-0000-0000-0000-000000000000');
await writeFile(join(orphan, 'web-0_eth0.pcap'), '');

const agent = await w.startAgent(node, ['--finished-retention-seconds=3', '--resync-seconds=5']);

t.test('at start-up: a directory the agent never made stays, one it made for a deleted capture goes', async (t) => {
  await waitFor(async () => !(await stat(orphan).then(() => true, () => false)), { what: 'the deleted capture\'s directory to go', timeoutMs: 20_000, intervalMs: 100 });
  await waitFor(async () => /"msg":"garbage collection done"/.test(await readFile(agent.logFile, 'utf8')), { what: 'a garbage collection pass', timeoutMs: 20_000, intervalMs: 100 });
  t.equal(await readFile(join(foreign, 'db.pcap'), 'utf8'), 'not ours', 'the team\'s file is untouched');
  t.match(await readFile(agent.logFile, 'utf8'), /"foreign":[1-9]/, 'and counted as not ours');
});

t.test('a finished capture\'s files go after the retention period; its report then lists none', async (t) => {
  const dir = w.captureDir('node-1', 'short');
  await w.applyCapture('short', '  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]');
  await w.waitForState('short', 'node-1', 'WaitingForTraffic');
  await waitFor(async () => {
    await dig(client, w.dns.ip, 'kept-a-while.storefront.example');
    return allPackets(await readCaptureDir(dir)).some((p) => p.query === 'kept-a-while.storefront.example');
  }, { what: 'a query to be captured', timeoutMs: 10_000, intervalMs: 300 });
  await w.applyCapture('short', `  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]\n  endTime: "${new Date(Date.now() - 1000).toISOString()}"`);
  const finished = await w.waitForState('short', 'node-1', 'Finished', 10_000);
  t.ok((finished.fileNames ?? []).length > 0, 'finished with its files');
  const gone = await waitFor(async () => {
    const entry = await w.waitForState('short', 'node-1', 'Finished');
    return (entry.fileNames ?? []).length === 0 ? entry : undefined;
  }, { what: 'the files to be removed after the retention period', timeoutMs: 30_000, intervalMs: 200 });
  t.same(gone.fileNames ?? [], [], 'the report lists no file');
  t.same(await captureFiles(dir).catch(() => []), [], 'none is left on the node');
  t.match(await readFile(agent.logFile, 'utf8'), /files of a capture finished over 3 s ago removed/);
  t.equal(await readFile(join(foreign, 'db.pcap'), 'utf8'), 'not ours', 'the team\'s file is still untouched');
});
