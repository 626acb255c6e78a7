// A transfer that fails after the zip started must look failed to the client: curl exits
// non-zero and the partial file is not a valid zip. A client that goes away stops the
// gateway's reads from the agents.
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { https, run } from '../harness/http.js';
import { gatewayMetricsText, scratchDir, startAgent } from '../harness/kube-pcap.js';
import { writeLargePcap } from '../harness/pcap-fixtures.js';
import { OwnedProcess } from '../harness/processes.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await storefrontWorld(t, c);
await w.grantFiles();
const ca = w.pki.ca.certFile;
// node-1 holds a large rotated file, first in the zip.
const big = 'logging-0_cali0-1699999999999999.pcap';
await w.addFileOnFirstNode(big, (path) => writeLargePcap(path, 256 << 20));
await waitFor(async () => (await https(`${w.gateway.url}/packet-capture/files/${w.ns}/${CAPTURE}`, { caFile: ca, token: w.devopsToken })).status === 200, { what: 'the grant', timeoutMs: 15_000 });

t.test('an agent killed mid-stream: curl fails and the partial zip does not test OK', async (t) => {
  const dir = await scratchDir(t, 'cut');
  const out = join(dir, 'files.zip');
  const curl = new OwnedProcess('curl', ['-sS', '--limit-rate', '16M', '-k', '-o', out, '-H', `Authorization: Bearer ${w.devopsToken}`, w.downloadUrl()], { name: 'curl', logFile: join(dir, 'curl.log') });
  await waitFor(async () => ((await stat(out).catch(() => undefined))?.size ?? 0) > 8 << 20, { what: 'the download to be under way', timeoutMs: 30_000 });
  await w.agents[0]!.proc.kill();
  const { code } = await curl.exited;
  t.not(code, 0, `curl reports the cut transfer (exit ${code})`);
  t.match(await curl.logTail(), /curl: \((18|56|92)\)/, 'as a partial transfer');
  const test = await run('unzip', ['-t', out]);
  t.not(test.code, 0, 'unzip -t rejects the partial file');
});

t.test('a client that disconnects: the gateway aborts the download and stays healthy', async (t) => {
  const down = w.agents[0]!;
  await startAgent(t, c, { node: down.node, address: down.address, port: down.port, captureDir: down.captureDir, pki: w.pki, logDir: w.logDir });
  const dir = await scratchDir(t, 'gone');
  const res = await run('curl', ['-sS', '--limit-rate', '1M', '--max-time', '2', '-k', '-o', join(dir, 'x.zip'), '-H', `Authorization: Bearer ${w.devopsToken}`, w.downloadUrl()]);
  t.equal(res.code, 28, 'curl gave up after 2 s, mid-download');
  const aborted = await waitFor(async () => {
    const m = /kube_pcap_gateway_downloads_total\{result="aborted"\} (\d+)/.exec(await gatewayMetricsText(w.gateway, w.pki));
    return m && Number(m[1]) >= 2 ? Number(m[1]) : undefined;
  }, { what: 'the gateway to count the abandoned download as aborted', timeoutMs: 10_000 });
  t.ok(aborted >= 2, 'both the cut and the abandoned download are counted as aborted');
  const health = await https(`${w.gateway.opsUrl}/healthz`, { caFile: ca });
  t.equal(health.status, 200);
  const again = await https(`${w.gateway.url}/packet-capture/files/${w.ns}/${CAPTURE}`, { caFile: ca, token: w.devopsToken });
  t.equal(again.status, 200, `and serves the next request: ${again.body.toString()}`);
  t.ok(w.agents.length > 0 && (await readFile(w.gateway.logFile, 'utf8')).includes('files.zip aborted'), 'the gateway logged the aborted download');
});
