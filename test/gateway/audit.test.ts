// The audit trail (docs/security.md, "Audit"): every request for packets leaves one JSON
// line, whatever happened to it (401, 403, 400, a listing, a download, a cut stream), read
// back here from the file --audit-log names; none holds a token or a made-up name.
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import type { AuditRecord } from '../../src/http/plugins/audit.js';
import { cluster } from '../harness/cluster.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { https } from '../harness/http.js';
import { scratchDir } from '../harness/kube-pcap.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const dir = await scratchDir(t, 'audit');
const auditFile = join(dir, 'audit', 'gateway.jsonl');
const w = await storefrontWorld(t, c, { gatewayArgs: [`--audit-log=${auditFile}`] });
const ca = w.pki.ca.certFile;
const filesUrl = `${w.gateway.url}/packet-capture/files/${w.ns}/${CAPTURE}`;

async function records(): Promise<AuditRecord[]> {
  const text = await readFile(auditFile, 'utf8').catch(() => '');
  return text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as AuditRecord);
}

/** Waits for the audit record of the `n`th request (records are written when a response closes). */
async function nth(n: number): Promise<AuditRecord> {
  return await waitFor(async () => (await records())[n - 1], { what: `audit record ${n}`, timeoutMs: 10_000, intervalMs: 50 });
}

/** Waits for a record that `matches` (written after the client has its answer). */
async function recordWhere(what: string, matches: (r: AuditRecord) => boolean): Promise<AuditRecord> {
  return await waitFor(async () => (await records()).find(matches), { what, timeoutMs: 10_000, intervalMs: 50 });
}

t.test('each decision is one record: who, from where, what, the decision and why, status, bytes, time', async (t) => {
  const fakeToken = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzZWNyZXQtaW4tcGF0aCJ9.c2lnbmF0dXJl';
  t.equal((await https(filesUrl, { caFile: ca })).status, 401);
  const none = await nth(1);
  t.match(none, { kind: 'AuditEvent', decision: 'deny', verb: 'get', resource: 'packetcaptures/files', namespace: w.ns, name: CAPTURE, route: '/packet-capture/files/:namespace/:name', status: 401, sourceIP: '127.0.0.1' });
  t.notOk(none.user, 'no user: nobody was authenticated');
  t.match(none.reason, /token|credentials|Authorization/i);

  t.equal((await https(filesUrl, { caFile: ca, token: w.devopsToken })).status, 403);
  const denied = await nth(2);
  t.match(denied, { decision: 'deny', status: 403, user: { username: `system:serviceaccount:${w.ns}:devops-sa` } });
  t.ok(denied.user!.groups.includes('system:authenticated'), 'with the groups the decision saw');
  t.match(denied.reason, /packetcaptures\/files/);

  t.equal((await https(`${w.gateway.url}/packet-capture/files/${w.ns}/${fakeToken.toLowerCase().replace(/[^a-z0-9.-]/g, '')}X`, { caFile: ca, token: w.devopsToken })).status, 400);
  const invalid = await nth(3);
  t.match(invalid, { decision: 'invalid', status: 400, namespace: w.ns });
  t.equal(invalid.name, undefined, 'a name that is not one is not recorded');

  await w.grantFiles();
  await waitFor(async () => (await https(filesUrl, { caFile: ca, token: w.devopsToken })).status === 200, { what: 'the grant to take effect', timeoutMs: 20_000, intervalMs: 250 });
  const listed = await recordWhere('an allowed listing\'s record', (r) => r.status === 200 && r.route === '/packet-capture/files/:namespace/:name');
  t.match(listed, { decision: 'allow', status: 200, complete: true });
  t.ok(listed.bytesSent > 0 && listed.durationMs >= 0, `${listed.bytesSent} bytes in ${listed.durationMs} ms`);

  const zip = await https(w.downloadUrl(), { caFile: ca, token: w.devopsToken });
  t.equal(zip.status, 200);
  const download = await recordWhere('the download\'s record', (r) => r.route === '/packet-capture/download/:namespace/:name/files.zip');
  t.match(download, { decision: 'allow', status: 200, complete: true, route: '/packet-capture/download/:namespace/:name/files.zip' });
  t.ok(download.bytesSent >= zip.body.length, `the download's record counts its ${zip.body.length} bytes (${download.bytesSent} sent)`);
});

t.test('the audit file holds no credential, and only its owner may read it', async (t) => {
  const text = await readFile(auditFile, 'utf8');
  t.notOk(text.includes(w.devopsToken), 'not the token');
  t.notOk(text.includes(w.devopsToken.split('.')[1]!), 'nor any part of it');
  t.notOk(/eyJ/.test(text), 'nor anything JWT-like');
  t.equal((await stat(auditFile)).mode & 0o777, 0o600);
});
