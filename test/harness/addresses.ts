// Test addresses from RFC 5737 TEST-NET-2 (198.51.100.0/24), unique across the test files
// that run at the same time: the sandbox's bridge holds .254; the rest are handed out here.
// An address is taken by creating a directory (atomic), and given back on teardown.
import { execFile } from 'node:child_process';
import { mkdir, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Teardown } from './cluster.js';

const run = promisify(execFile);
const POOL = join(process.env.KUBE_PCAP_TMP ?? '/tmp', 'kube-pcap-test', 'addresses');

export function requireSandbox(): void {
  if (process.env.KUBE_PCAP_SANDBOX !== '1' || !process.env.KUBE_PCAP_BRIDGE) {
    throw new Error('this test needs the sandbox (its own network namespaces): run it through `npm test -- <file>`');
  }
}

/** Reserves a free address of 198.51.100.1-253 until teardown. */
export async function allocateAddress(t: Teardown): Promise<string> {
  await mkdir(POOL, { recursive: true });
  for (let i = 1; i < 254; i++) {
    const ip = `198.51.100.${i}`;
    try {
      await mkdir(join(POOL, ip));
    } catch {
      continue;
    }
    t.teardown(() => rmdir(join(POOL, ip)).catch(() => undefined));
    return ip;
  }
  throw new Error('no free test address left in 198.51.100.0/24');
}

/** An address on the sandbox's bridge, for a server that plays a node's host network. */
export async function bridgeAddress(t: Teardown): Promise<string> {
  requireSandbox();
  const ip = await allocateAddress(t);
  await run('ip', ['addr', 'add', `${ip}/32`, 'dev', process.env.KUBE_PCAP_BRIDGE!]);
  t.teardown(() => run('ip', ['addr', 'del', `${ip}/32`, 'dev', process.env.KUBE_PCAP_BRIDGE!]).catch(() => undefined));
  return ip;
}
