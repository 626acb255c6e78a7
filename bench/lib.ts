// Small helpers the benchmark scripts share.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from '../src/kube/config.js';
import type { KubeClient } from '../src/kube/client.js';
import { TestCluster } from '../test/harness/cluster.js';
import { ControlPlane, REPO_ROOT } from '../test/harness/control-plane.js';
import type { CaptureWorld } from '../test/harness/capture-fixture.js';
import { installKubePcap, makePki, scratchDir, type Pki } from '../test/harness/kube-pcap.js';
import type { TopoNode, TopoPod } from '../test/harness/topology.js';
import { waitFor } from '../test/harness/wait.js';

/** Collects cleanups like a test's teardown, run in reverse order. */
export class Teardowns {
  private fns: (() => unknown)[] = [];
  teardown(fn: () => unknown): void {
    this.fns.push(fn);
  }
  async run(): Promise<void> {
    for (const fn of this.fns.reverse()) {
      try {
        await fn();
      } catch (err) {
        process.stderr.write(`cleanup failed: ${(err as Error).message}\n`);
      }
    }
    this.fns = [];
  }
}

/** Peak resident set size of a process (VmHWM), in bytes. */
export async function peakRssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const m = /^VmHWM:\s+(\d+) kB$/m.exec(status);
  if (!m) throw new Error(`no VmHWM for ${pid}`);
  return Number(m[1]) * 1024;
}

/** CPU time (user + system) a process has used so far, in seconds. */
export async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of /proc/<pid>/stat (1-based), in clock ticks.
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * CPU seconds (user, system) of a process's threads, summed by thread name: Node's main
 * thread, libuv's thread pool, V8's helper threads, each apart.
 */
export async function threadCpuSeconds(pid: number): Promise<Map<string, { user: number; sys: number }>> {
  const out = new Map<string, { user: number; sys: number }>();
  for (const tid of await readdir(`/proc/${pid}/task`).catch(() => [] as string[])) {
    const stat = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8').catch(() => '');
    if (!stat) continue;
    const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')).replace(/\d+$/, '');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const t = out.get(name) ?? { user: 0, sys: 0 };
    t.user += Number(fields[11]) / 100;
    t.sys += Number(fields[12]) / 100;
    out.set(name, t);
  }
  return out;
}

export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export { portOpen } from '../test/harness/http.js';

/** Runs a benchmark's main and exits with its outcome (the harness's processes die with us). */
export function runBench(main: () => Promise<void>): void {
  main().then(() => process.exit(0), (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}

export interface BenchCluster {
  c: TestCluster;
  kube: KubeClient;
  pki: Pki;
  logDir: string;
  /** A storefront-like namespace whose devops-sa may read capture files (rbac-examples/). */
  ns: string;
}

/**
 * A control plane of the benchmark's own with kube-pcap installed, a PKI, and a namespace
 * holding devops-sa with the files Role and one PacketCapture per name in `captures`.
 */
export async function benchCluster(td: Teardowns, logPrefix: string, captures: string[]): Promise<BenchCluster> {
  const c = await benchControlPlane(td);
  await installKubePcap(c);
  const pki = await makePki(td);
  const logDir = await scratchDir(td, logPrefix);
  const ns = await c.createNamespace('storefront');
  const rename = { renameNamespace: { from: 'storefront', to: ns } };
  for (const f of ['devops-serviceaccount.yaml', 'files-role.yaml']) await c.applyYaml(join(REPO_ROOT, 'rbac-examples', f), rename);
  for (const name of captures) await c.applyManifest(`apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata: {name: ${name}, namespace: ${ns}}\nspec: {selector: all()}\n`);
  const kube = await connect(c.info.kubeconfig);
  td.teardown(() => kube.close());
  return { c, kube, pki, logDir, ns };
}

/** A control plane of the benchmark's own, reachable from the test bridge's network namespaces. */
export async function benchControlPlane(td: Teardowns): Promise<TestCluster> {
  const cp = await ControlPlane.start({ bindAddress: '0.0.0.0', extraAddresses: process.env.KUBE_PCAP_BRIDGE_IP ? [process.env.KUBE_PCAP_BRIDGE_IP] : [] });
  td.teardown(() => cp.stop());
  return new TestCluster(cp.info, cp);
}

/** Current resident set size of a process (VmRSS), in bytes. */
export async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}

/**
 * Two pods on one node, `sender` (labels app=sender) and `receiver` running an iperf3 server.
 * `send` sends UDP datagrams of `size` bytes from one to the other at `pps` packets/s (0: as
 * fast as iperf3 can) for `seconds`, and returns how many it sent.
 */
export async function udpPair(td: Teardowns, w: CaptureWorld, node: TopoNode): Promise<{ sender: TopoPod; receiver: TopoPod; send(pps: number, size: number, seconds: number): Promise<number> }> {
  const sender = await w.addPod(node, 'sender', { app: 'sender' });
  const receiver = await w.addPod(node, 'receiver', { app: 'receiver' });
  receiver.ns.spawn(td, 'iperf3-server', 'iperf3', ['-s', '-B', receiver.ip], w.logDir);
  await waitFor(async () => (await receiver.ns.exec('ss', ['-lun'])).includes(':5201') || (await receiver.ns.exec('ss', ['-ltn'])).includes(':5201'), { what: 'iperf3 to listen', timeoutMs: 10_000 });
  return {
    sender,
    receiver,
    // -b in bits/s of payload: packets/s x payload bytes x 8.
    send: async (pps, size, seconds) => {
      const out = await sender.ns.exec('iperf3', ['-c', receiver.ip, '-u', '-b', String(pps * size * 8), '-l', String(size), '-t', String(seconds), '-B', sender.ip, '--json'], (seconds + 30) * 1000);
      const sent = (JSON.parse(out) as { end?: { sum?: { packets?: number } } }).end?.sum?.packets;
      if (typeof sent !== 'number') throw new Error(`iperf3 did not say how many packets it sent: ${out.slice(0, 500)}`);
      return sent;
    },
  };
}
