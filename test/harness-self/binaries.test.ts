// Where the control plane's binaries come from: KUBEBUILDER_ASSETS when set (as for
// controller-runtime's envtest), else the versioned cache built from the Go module proxy.
import { mkdir, readFile, readlink, realpath, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { controlPlaneBinDir, REPO_ROOT } from '../harness/control-plane.js';
import { run } from '../harness/http.js';
import { scratchDir } from '../harness/kube-pcap.js';

const script = join(REPO_ROOT, 'test', 'controlplane', 'build-binaries.sh');
const cached = controlPlaneBinDir();
// The version the script builds (cached may be a KUBEBUILDER_ASSETS directory instead).
const k8sVersion = /K8S_VERSION="\$\{KUBE_PCAP_K8S_VERSION:-([\d.]+)\}"/.exec(await readFile(script, 'utf8'))?.[1] ?? '';

/** Runs the script against a scratch cache that already has kubectl, so nothing is built and the user's cache is not touched. */
async function withEnv(t: Parameters<typeof scratchDir>[0], env: Record<string, string>) {
  const cache = await scratchDir(t, 'cache');
  await mkdir(join(cache, 'bin', `kubernetes-v${k8sVersion}`), { recursive: true });
  await symlink(await realpath(join(cached, 'kubectl')), join(cache, 'bin', `kubernetes-v${k8sVersion}`, 'kubectl'));
  return await run('env', [...Object.entries({ ...env, KUBE_PCAP_CACHE: cache }).map(([k, v]) => `${k}=${v}`), 'bash', script]);
}

t.test('without KUBEBUILDER_ASSETS: the cache, keyed by versions, with all three binaries', async (t) => {
  const r = await run('env', ['-u', 'KUBEBUILDER_ASSETS', 'bash', script]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout.trim(), /control-plane-v1\.37\.\d+-etcd-v3\.\d+\.\d+$/);
  for (const b of ['kube-apiserver', 'etcd', 'kubectl']) t.ok(await realpath(join(r.stdout.trim(), b)), b);
  const version = await run(join(r.stdout.trim(), 'kube-apiserver'), ['--version']);
  t.match(version.stdout, /Kubernetes v1\.37\./);
});

t.test('KUBEBUILDER_ASSETS with all three: used as it is', async (t) => {
  const assets = await scratchDir(t, 'assets');
  for (const b of ['kube-apiserver', 'etcd', 'kubectl']) await symlink(await realpath(join(cached, b)), join(assets, b));
  const r = await withEnv(t, { KUBEBUILDER_ASSETS: assets });
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout.trim(), assets);
});

t.test('KUBEBUILDER_ASSETS without kubectl (as envtest bundles often are): kubectl added from the cache, the bundle untouched', async (t) => {
  const assets = await scratchDir(t, 'assets');
  for (const b of ['kube-apiserver', 'etcd']) await symlink(await realpath(join(cached, b)), join(assets, b));
  const r = await withEnv(t, { KUBEBUILDER_ASSETS: assets });
  t.equal(r.code, 0, r.stderr);
  const dir = r.stdout.trim();
  t.not(dir, assets, 'a directory of its own');
  t.equal(await readlink(join(dir, 'kube-apiserver')), join(assets, 'kube-apiserver'), 'the bundle\'s kube-apiserver');
  t.equal(await readlink(join(dir, 'etcd')), join(assets, 'etcd'));
  t.ok(await realpath(join(dir, 'kubectl')), 'and a kubectl');
});

t.test('KUBEBUILDER_ASSETS without etcd: a clear error', async (t) => {
  const assets = await scratchDir(t, 'assets');
  await mkdir(assets, { recursive: true });
  await symlink(await realpath(join(cached, 'kube-apiserver')), join(assets, 'kube-apiserver'));
  const r = await withEnv(t, { KUBEBUILDER_ASSETS: assets });
  t.not(r.code, 0);
  t.match(r.stderr, new RegExp(`KUBEBUILDER_ASSETS=${assets} has no executable etcd`));
});
