// A long response outlives no revocation (docs/security.md, "Revocation"): a live stream and
// a big download, authorized once, end when the caller's RoleBinding is deleted, within the
// re-check interval plus the review caches' lifetimes; the stream's trailer says why.
import { readFile } from 'node:fs/promises';
import t from 'tap';
import { Agent, request } from 'undici';
import { cluster } from '../harness/cluster.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { writeLargePcap } from '../harness/pcap-fixtures.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
// Re-checked each second, reviews cached for a second: the window is about two seconds.
const w = await storefrontWorld(t, c, { gatewayArgs: ['--access-recheck-seconds=1', '--authz-allow-ttl-seconds=1', '--authn-cache-ttl-seconds=1'] });
const dispatcher = new Agent({ connect: { ca: await readFile(w.pki.ca.certFile) } });
t.teardown(() => dispatcher.close());
const binding = ['rolebinding', 'devops-sa-packetcapture-files-reader', '-n', w.ns];
const revoke = async (): Promise<void> => {
  const r = await c.kubectl(['delete', ...binding]);
  if (r.code !== 0) throw new Error(r.stderr);
};

t.test('a live stream ends within seconds of the RoleBinding going, and its trailer says why', async (t) => {
  await w.grantFiles();
  const res = await request(`${w.gateway.url}/packet-capture/stream/${w.ns}/${CAPTURE}`, { dispatcher, headers: { authorization: `Bearer ${w.devopsToken}` }, bodyTimeout: 0 });
  t.equal(res.statusCode, 200);
  let bytes = 0;
  const ended = (async () => {
    for await (const chunk of res.body) bytes += (chunk as Buffer).length;
    return Date.now();
  })();
  await waitFor(async () => bytes > 0, { what: 'the stream\'s first bytes', timeoutMs: 10_000, intervalMs: 50 });
  const still = await Promise.race([ended.then(() => 'ended'), new Promise<string>((r) => setTimeout(() => r('open'), 2500))]);
  t.equal(still, 'open', 'open while the caller may read it (two re-checks passed)');
  const revokedAt = Date.now();
  await revoke();
  const at = await Promise.race([ended, new Promise<number>((_, reject) => setTimeout(() => reject(new Error('the stream was still open 20 s after the binding went')), 20_000))]);
  t.ok(at - revokedAt < 10_000, `ended ${at - revokedAt} ms after the binding was deleted`);
  t.match(res.trailers['kube-pcap-stream-end'], /^access revoked: .*packetcaptures\/files/, `trailer: ${res.trailers['kube-pcap-stream-end']}`);
  const again = await request(`${w.gateway.url}/packet-capture/stream/${w.ns}/${CAPTURE}`, { dispatcher, headers: { authorization: `Bearer ${w.devopsToken}` } });
  t.equal(again.statusCode, 403, 'and a new one is refused');
  await again.body.dump();
  t.match(await readFile(w.gateway.logFile, 'utf8'), /access revoked while responding/);
});

t.test('a download the client reads slowly is cut when the RoleBinding goes: it never completes', async (t) => {
  await w.addFileOnFirstNode('logging-0_cali0-1700000000000099.pcap', (path) => writeLargePcap(path, 64 * 1024 * 1024));
  await w.grantFiles();
  // The first test's 403 is cached a few seconds (--authz-deny-ttl-seconds).
  await waitFor(async () => {
    const r = await request(`${w.gateway.url}/packet-capture/files/${w.ns}/${CAPTURE}`, { dispatcher, headers: { authorization: `Bearer ${w.devopsToken}` } });
    await r.body.dump();
    return r.statusCode === 200;
  }, { what: 'the files permission to be back', timeoutMs: 20_000, intervalMs: 250 });
  const res = await request(w.downloadUrl(), { dispatcher, headers: { authorization: `Bearer ${w.devopsToken}` }, bodyTimeout: 0 });
  t.equal(res.statusCode, 200);
  const length = Number(res.headers['content-length']);
  t.ok(length > 64 * 1024 * 1024, `${length} bytes announced`);
  // Read a little, then stop reading: the socket's buffers fill and the gateway waits on us.
  const it = res.body[Symbol.asyncIterator]();
  let got = ((await it.next()).value as Buffer).length;
  await revoke();
  // Still not reading: the gateway finds out at its next re-check and cuts the connection.
  await waitFor(async () => /download ended: access revoked/.test(await readFile(w.gateway.logFile, 'utf8')), { what: 'the gateway to end the download', timeoutMs: 20_000, intervalMs: 100 });
  const result = await waitFor(async () => {
    try {
      for (;;) {
        const next = await it.next();
        if (next.done) return { complete: got === length, got };
        got += (next.value as Buffer).length;
      }
    } catch (err) {
      return { complete: false, got, error: (err as Error).message };
    }
  }, { what: 'the download to end', timeoutMs: 60_000 });
  t.notOk(result.complete, `cut after ${result.got} of ${length} bytes (${result.error ?? 'ended short'})`);
});
