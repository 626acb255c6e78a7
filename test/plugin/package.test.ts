// kubectl-pcap installs in one command: `npm pack` builds what the package ships (dist/ is
// git-ignored, so "files" and prepack put it there), and `npm install -g` of that tarball, or
// of the project folder, gives a working kubectl-pcap on PATH. An old Node gets one clear
// sentence. Everything happens in a copy of the project, never in the tree the tests run from.
// Between the two npm steps sits a registry double (the sandbox has no network).
import { cp, mkdir, readdir, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { REPO_ROOT } from '../harness/control-plane.js';
import { installCrd } from '../harness/crd.js';
import { run } from '../harness/http.js';
import { lockfileRegistry } from '../harness/npm-registry.js';
import { scratchDir } from '../harness/kube-pcap.js';
import { runPlugin } from '../harness/plugin.js';

const c = await cluster(t);
const dir = await scratchDir(t, 'plugin-package');
const project = join(dir, 'kube-pcap');
await mkdir(project);
for (const f of ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'README.md', 'openapi.yaml', 'src', 'routes', 'scripts', 'deploy', 'rbac-examples', 'docs']) {
  await cp(join(REPO_ROOT, f), join(project, f), { recursive: true });
}
// The dependencies as `npm ci` installed them (the copy has no dist/ of its own).
await symlink(join(REPO_ROOT, 'node_modules'), join(project, 'node_modules'));
// The sandbox has no network: dependencies come from a registry double serving what the
// lockfile pins, from npm's cache (test/harness/npm-registry.ts), into a cache of its own.
const registry = await lockfileRegistry(t);
const npmCache = join(dir, 'npm-cache');
const npm = async (args: string[], cwd = project) =>
  await run('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error', `--registry=${registry.url}`, `--cache=${npmCache}`], { cwd, timeoutMs: 240_000 });

const pack = await npm(['pack', '--pack-destination', dir]);
const tarball = join(dir, (await readdir(dir)).find((f) => f.endsWith('.tgz')) ?? 'missing.tgz');

t.test('npm pack builds and ships the compiled program, and nothing of the tests or sources', async (t) => {
  t.equal(pack.code, 0, pack.stderr);
  const list = (await run('tar', ['tzf', tarball])).stdout.split('\n').filter(Boolean);
  for (const f of ['package/dist/src/plugin/bin.js', 'package/dist/src/plugin/main.js', 'package/dist/src/cli.js', 'package/dist/routes/gateway/download.js', 'package/rbac-examples/files-role.yaml', 'package/README.md']) {
    t.ok(list.includes(f), f);
  }
  t.notOk(list.some((f) => f.startsWith('package/dist/test/') || f.startsWith('package/dist/bench/')), 'no compiled tests or benchmarks');
  t.notOk(list.some((f) => f.startsWith('package/src/') || f.startsWith('package/node_modules/')), 'no TypeScript sources, no node_modules');
});

t.test('npm install -g of the tarball gives a working kubectl-pcap (and kube-pcap) on PATH', async (t) => {
  const prefix = join(dir, 'global');
  const install = await npm(['install', '-g', '--prefix', prefix, tarball], dir);
  t.equal(install.code, 0, install.stderr);
  const bin = join(prefix, 'bin', 'kubectl-pcap');
  const help = await runPlugin(['--help'], { command: [bin] });
  t.equal(help.code, 0, help.stderr);
  t.match(help.text, /Usage: kubectl pcap <command>/);
  t.match((await runPlugin(['version'], { command: [bin] })).text, /^kubectl-pcap \d+\.\d+\.\d+ \(node 2\d\./);
  await installCrd(c);
  const get = await runPlugin(['get', '-A'], { command: [bin], kubeconfig: c.info.kubeconfig });
  t.equal(get.code, 0, `the installed plugin talks to the API server: ${get.stderr}`);
  const server = await run(join(prefix, 'bin', 'kube-pcap'), ['--version']);
  t.match(server.stdout, /^kube-pcap \d/, 'the components\' CLI too');

  // #!/usr/bin/env node with an old Node first on PATH: the machine's own (Node 20 here).
  const old = await run('/usr/bin/node', ['--version']);
  const [major = 0, minor = 0] = old.stdout.replace(/^v/, '').split('.').map(Number);
  if (old.code !== 0 || major > 22 || (major === 22 && minor >= 19)) {
    if (process.env.CI === 'true') t.fail(`no Node.js older than 22.19 at /usr/bin/node to check the version message with (${old.stdout.trim() || old.stderr.trim()})`);
    else t.comment('no old Node.js at /usr/bin/node: the version message is not checked');
    return;
  }
  const tooOld = await runPlugin(['get'], { command: [bin], env: { PATH: '/usr/bin:/bin' } });
  t.equal(tooOld.code, 1);
  t.match(tooOld.stderr, new RegExp(`^kubectl-pcap needs Node\\.js 22\\.19\\.0 or later; this is Node\\.js ${major}\\.${minor}\\.\\d+ \\(/usr/bin/node\\)\\. Install Node\\.js 24 LTS`));
});

t.test('npm install -g of the project folder (after npm ci, which builds it) works too', async (t) => {
  const prefix = join(dir, 'global-folder');
  const install = await npm(['install', '-g', '--prefix', prefix, project], dir);
  t.equal(install.code, 0, install.stderr);
  const help = await runPlugin(['--help'], { command: [join(prefix, 'bin', 'kubectl-pcap')] });
  t.equal(help.code, 0, help.stderr);
  t.match(help.text, /kubectl pcap <command>/);
});
