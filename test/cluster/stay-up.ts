// What `npm run cluster:up` runs inside the sandbox: the real cluster with kube-pcap
// installed by its chart and the story's storefront namespace ready (devops-sa with the
// capture Role, the logging Deployment), so that the README's commands can be tried by
// hand. It writes what a shell outside needs into the state directory (the API server's
// port, its CA, an admin's client certificate) and stays up until SIGTERM or SIGINT
// (`npm run cluster:down`), then takes everything down.
//
//   node dist/test/cluster/stay-up.js <state-dir>
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO_ROOT } from '../harness/control-plane.js';
import { dnsClientDeployment, NS } from './cluster-story.js';
import { ClusterHandle } from './handle.js';
import { ensureKubePcap } from './install.js';
import { RealCluster, type Narrator } from './real-cluster.js';
import { TeardownList } from './teardown.js';

const state = process.argv[2];
if (!state) {
  process.stderr.write('usage: stay-up.js <state-dir>\n');
  process.exit(2);
}
const down = new TeardownList();
const say: Narrator = { step: (s) => process.stdout.write(`== ${s}\n`), say: (s) => process.stdout.write(`   ${s}\n`) };
let stopping = false;
const stop = async (code: number): Promise<never> => {
  if (!stopping) {
    stopping = true;
    process.stdout.write('stopping the cluster...\n');
    for (const err of await down.run()) process.stderr.write(`teardown: ${err.message}\n`);
    await rm(join(state, 'ready'), { force: true });
    process.stdout.write('stopped\n');
  }
  process.exit(code);
};
process.on('SIGTERM', () => void stop(0));
process.on('SIGINT', () => void stop(0));

try {
  const work = join(process.env.KUBE_PCAP_TMP ?? '/tmp', 'kube-pcap-cluster-up');
  await mkdir(work, { recursive: true });
  const cluster = await RealCluster.up(down, { workDir: work, narrator: say });
  const c = new ClusterHandle(cluster.info, work);
  say.step('kube-pcap from its chart; namespace storefront with devops-sa (capture Role) and the logging Deployment');
  await ensureKubePcap(c);
  await c.kubectl(['create', 'namespace', NS]);
  for (const f of ['devops-serviceaccount.yaml', 'capture-role.yaml', 'gateway-access.yaml']) await c.kubectlOk(['apply', '-f', join(REPO_ROOT, 'rbac-examples', f)]);
  await c.kubectlOk(['apply', '-f', '-'], { input: dnsClientDeployment('logging', NS, cluster.info.images.workload, 2) });
  await c.waitForPods(NS, 'app=logging', 2);
  const cp = cluster.info.controlPlane;
  // The certificates live in the sandbox's private /tmp: copies for the shell outside.
  await mkdir(state, { recursive: true });
  for (const [from, to] of [[cp.caFile, 'ca.crt'], [cp.adminCertFile, 'admin.crt'], [cp.adminKeyFile, 'admin.key']] as const) {
    await writeFile(join(state, to), await readFile(from), { mode: 0o600 });
  }
  await writeFile(join(state, 'cluster.json'), JSON.stringify({ apiPort: cp.port, versions: cluster.info.versions, nodes: cluster.info.nodes.map((n) => ({ name: n.name, ip: n.ip })) }, null, 2));
  await writeFile(join(state, 'ready'), '');
  say.say('ready');
} catch (err) {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  await mkdir(state, { recursive: true });
  await writeFile(join(state, 'failed'), err instanceof Error ? err.message : String(err));
  await stop(1);
}
// Until cluster:down.
setInterval(() => undefined, 1 << 30);
