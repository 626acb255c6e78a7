// The agent's file identities and pins (docs/downloads.md), on a real agent over a capture
// directory the test changes behind its back as rotation and deletion would: identities and
// If-Match on the file API; a pin serves exactly what it listed whatever happens to the
// originals; pins lapse when nobody renews them, count each file once in the node's pinned
// bytes, go with their capture's files, and outlive agent restarts only as long as their time.
import { mkdir, readdir, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { bridgeAddress } from '../harness/addresses.js';
import { agentRequester } from '../harness/agent-request.js';
import { cluster } from '../harness/cluster.js';
import { agentMetric, installKubePcap, makePki, metricsReaderToken, scratchDir, startAgent, SYSTEM_NAMESPACE, type AgentHandle } from '../harness/kube-pcap.js';
import { writeDnsPcap } from '../harness/pcap-fixtures.js';
import type { TapTest } from '../harness/tap.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
await installKubePcap(c);
const pki = await makePki(t);
const logDir = await scratchDir(t, 'logs');
const root = await scratchDir(t, 'captures');
const ns = await c.createNamespace('pins');
const capture = 'cap-1';
const dir = join(root, ns, capture);
await mkdir(dir, { recursive: true });
const ROTATED = 'web-0_cali0-1700000000000001.pcap';
const LIVE = 'web-0_cali0.pcap';
await c.applyManifest(`apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata: {name: ${capture}, namespace: ${ns}}\nspec: {selector: all()}\n`);
const address = await bridgeAddress(t);
const gatewayToken = await c.tokenFor(SYSTEM_NAMESPACE, 'kube-pcap-gateway', { audience: 'kube-pcap-agent' });
const scraper = await metricsReaderToken(c);
const base = `/v1/captures/${ns}/${capture}`;
const pinsDir = join(root, '.pins');

/** The files as a fresh test starts them: one rotated, one being written. */
async function seed(): Promise<{ rotated: Buffer; live: Buffer }> {
  return { rotated: await writeDnsPcap(join(dir, ROTATED), 30), live: await writeDnsPcap(join(dir, LIVE), 12, { startMicros: 1_700_000_100_000_000 }) };
}

async function agent(t: TapTest, ttlSeconds: number): Promise<AgentHandle & { call: ReturnType<typeof agentRequester> }> {
  const a = await startAgent(t, c, { node: 'node-pins', address, captureDir: root, pki, logDir, extraArgs: [`--pin-ttl-seconds=${ttlSeconds}`] });
  t.teardown(() => a.proc.stop());
  return { ...a, call: agentRequester(a, pki, gatewayToken) };
}

interface PinBody {
  id: string;
  expiresAt: string;
  ttlSeconds: number;
  files: { name: string; size: number; identity: string }[];
}

const identityOf = async (path: string): Promise<string> => {
  const st = await stat(path, { bigint: true });
  return `${st.ino.toString(16)}-b${st.birthtimeNs.toString(16)}`;
};

t.test('the listing gives each file\'s identity; a file is served with it as ETag, and If-Match refuses another file under the name', async (t) => {
  const { live } = await seed();
  const a = await agent(t, 3);
  const list = JSON.parse((await a.call(`${base}/files`)).text) as { name: string; identity: string }[];
  const listed = list.find((f) => f.name === LIVE)!;
  t.equal(listed.identity, await identityOf(join(dir, LIVE)), 'inode and birth time');
  const same = await a.call(`${base}/files/${LIVE}`, { headers: { 'if-match': `"${listed.identity}"` } });
  t.equal(same.status, 200);
  t.equal(same.headers.etag, `"${listed.identity}"`);
  t.ok(same.body.equals(live));
  // Rotation: the file is renamed, a new one takes its name.
  await rename(join(dir, LIVE), join(dir, 'web-0_cali0-1700000000000002.pcap'));
  await writeDnsPcap(join(dir, LIVE), 3, { startMicros: 1_700_000_200_000_000 });
  const other = await a.call(`${base}/files/${LIVE}`, { headers: { 'if-match': `"${listed.identity}"` } });
  t.equal(other.status, 412, 'the name is another file now');
  t.match(JSON.parse(other.text), { reason: 'PreconditionFailed' });
  const moved = await a.call(`${base}/files/web-0_cali0-1700000000000002.pcap`, { headers: { 'if-match': `"${listed.identity}"` } });
  t.equal(moved.status, 200, 'the listed file, under its rotated name, has the same identity');
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
});

t.test('a pin serves what it listed, at its listed size, whatever happens to the originals', async (t) => {
  const { rotated, live } = await seed();
  const a = await agent(t, 30);
  const res = await a.call(`${base}/pins`, { method: 'POST' });
  t.equal(res.status, 201, res.text);
  const pin = JSON.parse(res.text) as PinBody;
  t.same(pin.files.map((f) => [f.name, f.size]), [[ROTATED, rotated.length], [LIVE, live.length]]);
  t.equal(pin.ttlSeconds, 30);
  // Rotation renames the live file, writes a new one and prunes the old rotated one.
  await rename(join(dir, LIVE), join(dir, 'web-0_cali0-1700000000000003.pcap'));
  await writeDnsPcap(join(dir, LIVE), 5, { startMicros: 1_700_000_300_000_000 });
  await unlink(join(dir, ROTATED));
  for (const [name, bytes] of [[ROTATED, rotated], [LIVE, live]] as const) {
    const got = await a.call(`${base}/pins/${pin.id}/files/${name}`);
    t.equal(got.status, 200, name);
    t.ok(got.body.equals(bytes), `${name}: the pinned bytes, not what the name holds now`);
    t.equal(got.headers.etag, `"${pin.files.find((f) => f.name === name)!.identity}"`);
  }
  const part = await a.call(`${base}/pins/${pin.id}/files/${LIVE}`, { headers: { range: 'bytes=0-23' } });
  t.equal(part.status, 206);
  t.equal(part.headers['content-range'], `bytes 0-23/${live.length}`);
  t.equal((await a.call(`${base}/pins/${pin.id}/files/${LIVE}`, { headers: { 'if-match': '"1-e"' } })).status, 412);
  t.equal((await a.call(`/v1/captures/${ns}/other/pins/${pin.id}/files/${LIVE}`)).status, 404, 'a pin answers only under its own capture');
  t.equal((await a.call(`${base}/pins/${'0'.repeat(32)}/files/${LIVE}`)).status, 404);
  t.equal((await a.call(`${base}/pins/../files/${LIVE}`)).status >= 400, true);
  const renewed = await a.call(`${base}/pins/${pin.id}`, { method: 'PUT' });
  t.equal(renewed.status, 200);
  t.ok(Date.parse((JSON.parse(renewed.text) as PinBody).expiresAt) > Date.now() + 20_000);
  t.equal((await a.call(`${base}/pins/${pin.id}`, { method: 'DELETE' })).status, 200);
  t.equal((await a.call(`${base}/pins/${pin.id}/files/${LIVE}`)).status, 404, 'released');
  t.same(await readdir(pinsDir), [], 'and its directory removed');
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
});

t.test('pinned bytes count each file once; a pin nobody renews lapses; the metrics say so', async (t) => {
  const { rotated, live } = await seed();
  const a = await agent(t, 2);
  const metric = (name: string): Promise<number> => agentMetric(a, pki, scraper, name);
  const p1 = JSON.parse((await a.call(`${base}/pins`, { method: 'POST' })).text) as PinBody;
  const p2 = JSON.parse((await a.call(`${base}/pins`, { method: 'POST' })).text) as PinBody;
  t.equal(await metric('kube_pcap_agent_pins'), 2);
  t.equal(await metric('kube_pcap_agent_pinned_bytes'), rotated.length + live.length, 'two pins of the same files hold them once');
  // Watched on the disk: reading a pinned file is a use, and would renew it.
  await waitFor(async () => (await readdir(pinsDir)).length === 0, { what: 'unrenewed pins to lapse and their directories to go', timeoutMs: 10_000 });
  for (const p of [p1, p2]) t.equal((await a.call(`${base}/pins/${p.id}/files/${LIVE}`)).status, 404, 'gone for good');
  t.equal(await metric('kube_pcap_agent_pins'), 0);
  t.equal(await metric('kube_pcap_agent_pinned_bytes'), 0);
  t.equal(await metric('kube_pcap_agent_pins_expired_total'), 2);
});

t.test('pinned bytes are reserved on the disk while their capture still links them, and not once only the pin does', async (t) => {
  const { rotated, live } = await seed();
  const a = await agent(t, 30);
  const metric = (name: string): Promise<number> => agentMetric(a, pki, scraper, name);
  const pin = JSON.parse((await a.call(`${base}/pins`, { method: 'POST' })).text) as PinBody;
  t.equal(await metric('kube_pcap_agent_pinned_bytes'), rotated.length + live.length);
  t.equal(await metric('kube_pcap_agent_pinned_reserved_bytes'), rotated.length + live.length, 'rotation may yet delete them without freeing their space: reserved');
  // Rotation deletes the rotated file: its bytes stay on the disk (the filesystem's free
  // space already says so), held by the pin alone. Reserving them again counted them twice.
  await unlink(join(dir, ROTATED));
  await waitFor(async () => (await metric('kube_pcap_agent_pinned_reserved_bytes')) === live.length, { what: 'the deleted file to leave the reservation', timeoutMs: 20_000, intervalMs: 200 });
  t.equal(await metric('kube_pcap_agent_pinned_bytes'), rotated.length + live.length, 'while the pin still holds it');
  t.equal((await a.call(`${base}/pins/${pin.id}/files/${ROTATED}`)).body.length, rotated.length, 'and serves it');
  await a.call(`${base}/pins/${pin.id}`, { method: 'DELETE' });
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
});

t.test('deleting the files drops the pins that hold them', async (t) => {
  await seed();
  const a = await agent(t, 30);
  const pin = JSON.parse((await a.call(`${base}/pins`, { method: 'POST' })).text) as PinBody;
  const del = await a.call(`${base}/files`, { method: 'DELETE' });
  t.equal(del.status, 200, del.text);
  t.equal((await a.call(`${base}/pins/${pin.id}/files/${LIVE}`)).status, 404);
  t.same(await readdir(pinsDir), [], 'no pinned copy keeps the space');
  await mkdir(dir, { recursive: true });
});

t.test('pins outlive an agent crash for their time, and no longer; a half-made pin is removed at start', async (t) => {
  const { live } = await seed();
  const first = await agent(t, 60);
  const pin = JSON.parse((await first.call(`${base}/pins`, { method: 'POST' })).text) as PinBody;
  await first.proc.kill();
  // What a crash in the middle of making a pin leaves: links, no pin.json.
  const halfMade = join(pinsDir, 'ab'.repeat(16));
  await mkdir(halfMade);
  await writeFile(join(halfMade, LIVE), live);
  await unlink(join(dir, LIVE));

  const second = await agent(t, 60);
  const served = await second.call(`${base}/pins/${pin.id}/files/${LIVE}`);
  t.equal(served.status, 200, 'the pin is taken back after the restart');
  t.ok(served.body.equals(live), 'with its bytes, though the original is gone');
  t.same(await readdir(pinsDir), [pin.id], 'the half-made pin is gone');
  await second.proc.kill();

  // Restarted with a shorter lifetime: the pin's time is cut to it, and it lapses.
  const third = await agent(t, 2);
  await waitFor(async () => (await readdir(pinsDir)).length === 0, { what: 'the pin of the earlier runs to lapse', timeoutMs: 10_000 });
  t.equal((await third.call(`${base}/pins/${pin.id}/files/${LIVE}`)).status, 404);
});
