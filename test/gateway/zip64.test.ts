// files.zip past the 4 GiB limit of classic zip: the archive switches to zip64 and unzip
// verifies every entry's CRC. The big file is sparse (a rotated file is served as bytes,
// whatever they are), so the test costs time, not memory.
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { https, run } from '../harness/http.js';
import { scratchDir } from '../harness/kube-pcap.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await storefrontWorld(t, c, { nodes: ['node-1'] });
await w.grantFiles();
const huge = 'logging-0_cali0-1699999999999999.pcap';
const size = 4.25 * 2 ** 30;
await w.addFileOnFirstNode(huge, async (path) => {
  const fh = await open(path, 'w');
  await fh.truncate(size);
  await fh.close();
});

t.test('a 4.25 GiB capture downloads as a valid zip64 archive', { timeout: 600_000 }, async (t) => {
  await waitFor(async () => (await https(`${w.gateway.url}/packet-capture/files/${w.ns}/${CAPTURE}`, { caFile: w.pki.ca.certFile, token: w.devopsToken })).status === 200, { what: 'the grant', timeoutMs: 15_000 });
  const dir = await scratchDir(t, 'zip64');
  const out = join(dir, 'files.zip');
  const dl = await run('curl', ['-sS', '--fail', '-k', '-o', out, '-w', '%{size_download} %header{content-length}', '-H', `Authorization: Bearer ${w.devopsToken}`, w.downloadUrl()], { timeoutMs: 500_000 });
  t.equal(dl.code, 0, dl.stderr);
  const [got, promised] = dl.stdout.trim().split(' ').map(Number);
  t.ok(got! > size, `${got} bytes`);
  // An entry past 4 GiB and entries at offsets past it: the zip64 fields of the length (zip-length.ts).
  t.equal(got, promised, 'exactly the Content-Length promised before the first byte');
  const info = await run('zipinfo', ['-v', out], { timeoutMs: 60_000 });
  t.match(info.stdout, /Zip64/i, 'zip64 records are present');
  t.match(info.stdout, new RegExp(`${huge}`));
  const test = await run('unzip', ['-t', out], { timeoutMs: 300_000 });
  t.equal(test.code, 0, test.stdout.slice(-500) + test.stderr);
  t.match(test.stdout, /No errors detected in compressed data/);
  t.match(test.stdout, new RegExp(`testing: ${w.nodeName('node-1')}/${huge.replace(/\./g, '\\.')}\\s+OK`));
});
