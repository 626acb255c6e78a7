// bench:download's compression part: the same capture (real-looking DNS and HTTP, see
// realistic-traffic.ts) downloaded stored and compressed, by curl, twice over:
//   - over a 100 Mbit/s link: curl in its own network namespace behind a veth whose egress
//     towards it is shaped by tc (tbf), as a VPN or a far Ingress is; the time compressed
//     against stored is the figure (target <= 0.5x);
//   - on loopback: what the compressed path itself can do when the link is not the limit.
// Each with the gateway's CPU seconds per GiB of capture (not of bytes on the wire).
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { GatewayHandle } from '../test/harness/kube-pcap.js';
import { run } from '../test/harness/http.js';
import { Topology, type Netns } from '../test/harness/topology.js';
import { cpuSeconds, type Teardowns } from './lib.js';

const exec = promisify(execFile);

export interface CompressionBench {
  td: Teardowns;
  logDir: string;
  gateway: GatewayHandle;
  caFile: string;
  token: string;
  namespace: string;
  capture: string;
  /** Bytes of the capture's files, all nodes together. */
  captureBytes: number;
  linkMbit: number;
}

interface Way { label: string; path: string; accept?: string }

interface Measured { seconds: number; wireBytes: number; gatewayCpuPerGiB: number }

export async function compressionBench(b: CompressionBench): Promise<void> {
  const base = `/packet-capture/download/${b.namespace}/${b.capture}`;
  const ways: Way[] = [
    { label: 'files.zip stored', path: `${base}/files.zip` },
    { label: 'files.zip deflate', path: `${base}/files.zip?compression=deflate` },
    { label: 'files.pcapng identity', path: `${base}/files.pcapng` },
    { label: 'files.pcapng zstd', path: `${base}/files.pcapng`, accept: 'zstd' },
    { label: 'files.pcapng gzip', path: `${base}/files.pcapng`, accept: 'gzip' },
  ];
  const gib = b.captureBytes / 2 ** 30;
  const port = new URL(b.gateway.url).port;

  async function download(way: Way, inNetns?: { ns: Netns; address: string }): Promise<Measured> {
    const args = ['-sS', '--fail', '--cacert', b.caFile, '-H', `Authorization: Bearer ${b.token}`, ...(way.accept ? ['-H', `Accept-Encoding: ${way.accept}`] : []),
      '-w', '%{size_download} %{time_total}', '-o', '/dev/null'];
    // The certificate names 127.0.0.1: curl keeps that name and connects to the bridge address.
    if (inNetns) args.push('--connect-to', `127.0.0.1:${port}:${inNetns.address}:${port}`);
    args.push(`${b.gateway.url}${way.path}`);
    const g0 = await cpuSeconds(b.gateway.proc.pid);
    const r = inNetns
      ? await run('nsenter', [`--net=/proc/${inNetns.ns.pid}/ns/net`, '--', 'curl', ...args], { timeoutMs: 1_800_000 })
      : await run('curl', args, { timeoutMs: 1_800_000 });
    if (r.code !== 0) throw new Error(`curl ${way.label}: ${r.stderr}`);
    const [wireBytes, seconds] = r.stdout.trim().split(' ').map(Number) as [number, number];
    return { seconds, wireBytes, gatewayCpuPerGiB: ((await cpuSeconds(b.gateway.proc.pid)) - g0) / gib };
  }

  const line = (way: Way, m: Measured): string =>
    `  ${way.label.padEnd(22)} ${m.seconds.toFixed(1).padStart(7)} s  ${(b.captureBytes / 2 ** 20 / m.seconds).toFixed(0).padStart(5)} MiB/s of capture  wire ${(m.wireBytes / 2 ** 20).toFixed(0).padStart(5)} MiB (${(m.wireBytes / b.captureBytes).toFixed(2)}x)  gateway ${m.gatewayCpuPerGiB.toFixed(2)} CPU-s/GiB`;

  process.stdout.write(`\ncompression: ${gib.toFixed(2)} GiB of DNS and HTTP capture\n on loopback (the link is not the limit):\n`);
  const loop = new Map<string, Measured>();
  for (const way of ways) {
    const m = await download(way);
    loop.set(way.label, m);
    process.stdout.write(`${line(way, m)}\n`);
  }

  // The slow link: a client on the sandbox's bridge as a node is wired (its own namespace and
  // veth), the veth's end on the bridge shaped towards it.
  const client = await new Topology(b.td, b.logDir).addNode('bench-client');
  const ns = client.ns;
  // tbf: the rate, a burst of a few packets, and a queue of at most 50 ms (a VPN's shaper).
  await exec('tc', ['qdisc', 'add', 'dev', client.uplink, 'root', 'tbf', 'rate', `${b.linkMbit}mbit`, 'burst', '32kb', 'latency', '50ms']);
  const bridge = process.env.KUBE_PCAP_BRIDGE_IP!;
  process.stdout.write(` over a ${b.linkMbit} Mbit/s link (tc tbf on the veth towards the client's namespace):\n`);
  const slow = new Map<string, Measured>();
  for (const way of ways) {
    const m = await download(way, { ns, address: bridge });
    slow.set(way.label, m);
    process.stdout.write(`${line(way, m)}\n`);
  }

  const ratio = (m: Map<string, Measured>, a: string, z: string): string => (m.get(a)!.seconds / m.get(z)!.seconds).toFixed(2);
  process.stdout.write([
    '',
    `time compressed / stored over ${b.linkMbit} Mbit/s: files.pcapng zstd ${ratio(slow, 'files.pcapng zstd', 'files.pcapng identity')}x, gzip ${ratio(slow, 'files.pcapng gzip', 'files.pcapng identity')}x; files.zip deflate ${ratio(slow, 'files.zip deflate', 'files.zip stored')}x  (target <= 0.5x)`,
    `time compressed / stored on loopback: files.pcapng zstd ${ratio(loop, 'files.pcapng zstd', 'files.pcapng identity')}x, gzip ${ratio(loop, 'files.pcapng gzip', 'files.pcapng identity')}x; files.zip deflate ${ratio(loop, 'files.zip deflate', 'files.zip stored')}x  (why stored stays the default on a fast link)`,
    '',
  ].join('\n'));
}
