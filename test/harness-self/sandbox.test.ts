// The sandbox (scripts/sandbox.sh) never hides the repository: a checkout under /tmp, and
// the caches and tools it uses from there, are still at their paths inside the sandbox,
// while everything else under /tmp is private to it. Runs a nested sandbox from a checkout
// placed under this run's /tmp, exactly as `npm test` from a clone under /tmp would.
import { chmod, copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { REPO_ROOT } from '../harness/control-plane.js';
import { run } from '../harness/http.js';
import { scratchDir } from '../harness/kube-pcap.js';

interface Probe {
  cwd: string;
  tmp: string[];
  sees: Record<string, boolean>;
  tool: string;
  tmpdir: string | undefined;
}

t.test('a checkout under /tmp runs its own files inside the sandbox, and the rest of /tmp stays private', async (t) => {
  const root = await scratchDir(t, 'clone-under-tmp');
  t.ok(root.startsWith('/tmp/'), `the scratch directory is under /tmp (${root})`);
  const checkout = join(root, 'kube-pcap');
  await mkdir(join(checkout, 'scripts'), { recursive: true });
  await copyFile(join(REPO_ROOT, 'scripts', 'sandbox.sh'), join(checkout, 'scripts', 'sandbox.sh'));
  // A tool on PATH under /tmp, as the Node.js cache is when HOME or KUBE_PCAP_CACHE is there.
  const bin = join(root, 'cache', 'bin');
  await mkdir(bin, { recursive: true });
  await writeFile(join(bin, 'kp-tool'), '#!/bin/sh\necho tool-ok\n');
  await chmod(join(bin, 'kp-tool'), 0o755);
  const outside = join(root, 'outside-marker');
  await writeFile(outside, 'must not be visible in the sandbox');
  await writeFile(join(checkout, 'probe.mjs'), `
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
writeFileSync('written-in-sandbox', 'ok');             // the checkout is writable (tap writes .tap/ there)
writeFileSync('/tmp/private-to-the-sandbox', 'x');      // the sandbox's own /tmp
console.log(JSON.stringify({
  cwd: process.cwd(),
  tmp: readdirSync('/tmp'),
  sees: { outside: existsSync(${JSON.stringify(outside)}), checkout: existsSync(${JSON.stringify(join(checkout, 'scripts', 'sandbox.sh'))}) },
  tool: execFileSync('kp-tool', { encoding: 'utf8' }).trim(),
  tmpdir: process.env.TMPDIR,
}));
`);
  // A nested sandbox: without KUBE_PCAP_SANDBOX the script makes its own namespaces. Without
  // tap's NODE_OPTIONS too, which name modules of this run's checkout: a user's shell has none.
  const r = await run('env', ['-u', 'KUBE_PCAP_SANDBOX', '-u', 'NODE_OPTIONS', `PATH=${bin}:${process.env.PATH ?? ''}`, 'bash', 'scripts/sandbox.sh', process.execPath, 'probe.mjs'], { cwd: checkout, timeoutMs: 60_000 });
  t.equal(r.code, 0, `the command from the checkout ran: ${r.stderr}`);
  const probe = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as Probe;
  t.equal(probe.cwd, checkout, 'working directory is the checkout');
  t.same(probe.sees, { outside: false, checkout: true }, 'the checkout is there; a file beside it under /tmp is not');
  t.same(probe.tmp, [root.split('/')[2]!, 'private-to-the-sandbox'].sort(), "the sandbox's /tmp holds only the way to the checkout and its own files");
  t.equal(probe.tool, 'tool-ok', 'a tool on PATH under /tmp still runs');
  t.equal(probe.tmpdir, '/tmp', 'TMPDIR points into the private /tmp');
  t.equal(await readFile(join(checkout, 'written-in-sandbox'), 'utf8'), 'ok', 'what the sandbox writes into the checkout stays');
  t.equal(await readFile('/tmp/private-to-the-sandbox', 'utf8').catch(() => 'gone'), 'gone', "the sandbox's /tmp went with it");
});
