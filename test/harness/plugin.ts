// kubectl-pcap as users run it: the built bin under this Node, with a kubeconfig of the
// test's own making (token, token file, exec plugin, client certificate), stdout kept as
// bytes (downloads write pcap and zip to it).
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { TestCluster } from './cluster.js';
import { REPO_ROOT } from './control-plane.js';

export const PLUGIN = join(REPO_ROOT, 'dist', 'src', 'plugin', 'bin.js');

export interface PluginResult {
  code: number;
  stdout: Buffer;
  stderr: string;
  text: string;
}

export interface PluginRunOptions {
  kubeconfig?: string;
  env?: Record<string, string>;
  cwd?: string;
  timeoutMs?: number;
  /** The binary to run instead of this Node + PLUGIN (e.g. an installed kubectl-pcap). */
  command?: string[];
}

export async function runPlugin(args: string[], o: PluginRunOptions = {}): Promise<PluginResult> {
  const [cmd, ...pre] = o.command ?? [process.execPath, PLUGIN];
  const child = spawn(cmd!, [...pre, ...args], {
    cwd: o.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, KUBECONFIG: o.kubeconfig ?? '/nonexistent', KUBE_PCAP_GATEWAY: '', ...o.env },
  });
  const out: Buffer[] = [];
  let err = '';
  child.stdout.on('data', (d: Buffer) => out.push(d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 120_000);
  const code = await new Promise<number>((resolve) => child.on('close', (c, sig) => resolve(c ?? (sig ? 128 : 1))));
  clearTimeout(timer);
  const stdout = Buffer.concat(out);
  return { code, stdout, stderr: err, text: stdout.toString('utf8') };
}

/** A kubeconfig for the test API server with one context "test" for this user. */
export async function writeKubeconfig(c: TestCluster, dir: string, name: string, user: Record<string, unknown>, namespace?: string): Promise<string> {
  const file = join(dir, `${name}.kubeconfig`);
  await writeFile(file, stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'test', cluster: { server: c.info.server, 'certificate-authority': c.info.caFile } }],
    users: [{ name, user }],
    contexts: [{ name: 'test', context: { cluster: 'test', user: name, ...(namespace ? { namespace } : {}) } }],
    'current-context': 'test',
  }), { mode: 0o600 });
  return file;
}

/** Packets in a classic pcap file's bytes. */
export function pcapRecordCount(pcap: Buffer): number {
  let n = 0;
  for (let at = 24; at + 16 <= pcap.length; n++) at += 16 + pcap.readUInt32LE(at + 8);
  return n;
}
