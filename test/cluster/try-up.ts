// Development aid: brings the cluster up, prints where it is, waits for SIGINT/SIGTERM.
import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { RealCluster } from './real-cluster.js';
import { TeardownList } from './teardown.js';

const list = new TeardownList();
const work = join(process.env.KUBE_PCAP_TMP ?? '/tmp', 'kube-pcap-cluster');
await mkdir(work, { recursive: true });
const stop = async (code: number): Promise<never> => {
  const errors = await list.run();
  for (const e of errors) process.stderr.write(`teardown: ${e.message}\n`);
  process.exit(code);
};
process.on('SIGINT', () => void stop(130));
process.on('SIGTERM', () => void stop(143));
try {
  const started = Date.now();
  const c = await RealCluster.up(list, {
    workDir: work,
    narrator: { step: (s) => process.stdout.write(`== ${s}\n`), say: (s) => process.stdout.write(`   ${s}\n`) },
  });
  process.stdout.write(`up in ${((Date.now() - started) / 1000).toFixed(1)} s; kubeconfig ${c.info.controlPlane.kubeconfig}\n`);
  const { writeFile } = await import('node:fs/promises');
  await writeFile(join(work, 'info.json'), JSON.stringify(c.info, null, 2));
  process.stdout.write(`${JSON.stringify(c.info.nodes)}\nREADY\n`);
} catch (err) {
  process.stderr.write(`${(err as Error).stack}\n`);
  await stop(1);
}
setInterval(() => undefined, 1 << 30);
