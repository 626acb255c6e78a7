// files.zip in the fast tier, both kinds the one zip writer makes (docs/downloads.md, "One zip
// writer"): stored (exact Content-Length) and deflated (chunked), each read back by the real
// unzip, entry by entry equal to the files on the nodes.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { run, zipEntries } from '../harness/http.js';
import { scratchDir } from '../harness/kube-pcap.js';
import type { TapTest } from '../harness/tap.js';
import { CAPTURING, NS, TOKENS, fastWorld } from './fast-world.js';

const w = await fastWorld(t);
const expected = new Map([...w.files].filter(([k]) => k.split('/')[1] === CAPTURING).map(([k, bytes]) => {
  const [node, , file] = k.split('/');
  return [`${node}/${file}`, bytes] as const;
}));

async function download(query: string): Promise<{ zip: string; bytes: Buffer; headers: Record<string, unknown> }> {
  const res = await w.api.inject({ method: 'GET', url: `/packet-capture/download/${NS}/${CAPTURING}/files.zip${query}`, headers: { authorization: `Bearer ${TOKENS.devops}` } });
  if (res.statusCode !== 200) throw new Error(`HTTP ${res.statusCode}: ${res.body.slice(0, 300)}`);
  const zip = join(await scratchDir(t, 'zip'), 'files.zip');
  await writeFile(zip, res.rawPayload);
  return { zip, bytes: res.rawPayload, headers: res.headers };
}

async function checkEntries(t: TapTest, zip: string): Promise<void> {
  const test = await run('unzip', ['-t', zip]);
  t.equal(test.code, 0, `unzip -t: ${test.stdout.split('\n').at(-2) ?? ''}${test.stderr}`);
  t.same((await zipEntries(zip)).sort(), [...expected.keys()].sort(), 'one entry per file of every node, named <node>/<file>');
  const dir = await scratchDir(t, 'unzipped');
  const x = await run('unzip', ['-q', zip, '-d', dir]);
  t.equal(x.code, 0, x.stderr);
  for (const [name, bytes] of expected) t.ok((await readFile(join(dir, name))).equals(bytes), `${name}: the node's bytes`);
}

t.test('stored (the default): exact Content-Length, every file as it is on its node', async (t) => {
  const { zip, bytes, headers } = await download('');
  t.equal(Number(headers['content-length']), bytes.length);
  await checkEntries(t, zip);
  const methods = await run('unzip', ['-v', zip]);
  t.match(methods.stdout, /Stored/);
  t.notMatch(methods.stdout, /Defl/);
});

t.test('?compression=deflate: smaller, chunked, the same files', async (t) => {
  const stored = await download('');
  const { zip, bytes, headers } = await download('?compression=deflate');
  t.equal(headers['content-length'], undefined, 'its length is not known before the end');
  t.ok(bytes.length < stored.bytes.length, `deflated ${bytes.length} B < stored ${stored.bytes.length} B`);
  await checkEntries(t, zip);
  const methods = await run('unzip', ['-v', zip]);
  t.match(methods.stdout, /Defl:N/, 'entries are deflated');
  t.notMatch(methods.stdout, /Stored/);
});
