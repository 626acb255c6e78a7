// A DNS client inside a pod that sends numbered queries ("<prefix>-<n>.storefront.example"),
// so tests can count exactly which packets were captured. Real UDP/53 packets to a real
// DNS server (dnsmasq answers them).
import type { Teardown } from './cluster.js';
import type { OwnedProcess } from './processes.js';
import type { TopoPod } from './topology.js';

const SCRIPT = `
import dgram from 'node:dgram';
const [server, count, intervalMs, prefix, padTo] = process.argv.slice(1);
const sock = dgram.createSocket('udp4');
// Answers received: what the server put on the wire, for tests that count the capture
// against it (a DNS server may drop a query under load; a capture must not drop packets).
let answers = 0;
sock.on('message', () => { answers++; });
sock.on('close', () => console.log('answers=' + answers));
let n = 0;
function query(name, id) {
  const labels = Buffer.concat([...name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])), Buffer.from([0])]);
  const pad = Number(padTo || 0);
  const question = Buffer.concat([labels, Buffer.from([0, 1, 0, 1])]);
  if (pad === 0) return Buffer.concat([Buffer.from([id >> 8, id & 255, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), question]);
  // Padded to about padTo bytes of DNS message with EDNS(0)'s Padding option (RFC 7830): one OPT record.
  const n = Math.max(0, pad - 12 - question.length - 15);
  const opt = Buffer.concat([Buffer.from([0, 0, 41, 16, 0, 0, 0, 0, 0, (n + 4) >> 8, (n + 4) & 255, 0, 12, n >> 8, n & 255]), Buffer.alloc(n)]);
  return Buffer.concat([Buffer.from([id >> 8, id & 255, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1]), question, opt]);
}
async function send() {
  // Numbered before the send is awaited: at 1 ms intervals two sends overlap, and must not share a number.
  const id = n++;
  const name = prefix + '-' + String(id).padStart(6, '0') + '.storefront.example';
  await new Promise((r) => sock.send(query(name, id & 0xffff), 53, server, r));
}
const total = Number(count);
const step = Number(intervalMs);
if (step === 0) { for (let i = 0; i < total; i++) await send(); sock.close(); }
else {
  const timer = setInterval(async () => { if (total > 0 && n >= total) { clearInterval(timer); setTimeout(() => sock.close(), 200); return; } await send(); }, step);
}
`;

/**
 * Starts sending `count` queries (0: until stopped), one every intervalMs (0: at once), each
 * padded (EDNS(0) Padding) to about `padTo` bytes when given: a megabyte of traffic in a few
 * hundred packets, for files that rotate at tcpdump's 1 MB.
 */
export function startDnsSender(t: Teardown, pod: TopoPod, server: string, prefix: string, count: number, intervalMs: number, logDir: string, padTo = 0): OwnedProcess {
  return pod.ns.spawn(t, `dns-sender-${prefix}`, process.execPath, ['--input-type=module', '-e', SCRIPT, server, String(count), String(intervalMs), prefix, String(padTo)], logDir);
}

/** How many answers a finished sender received (its last line), or undefined. */
export async function answersReceived(sender: OwnedProcess): Promise<number | undefined> {
  const { readFile } = await import('node:fs/promises');
  const m = /answers=(\d+)/.exec(await readFile(sender.opts.logFile, 'utf8').catch(() => ''));
  return m ? Number(m[1]) : undefined;
}

/** Names of queries in captured packets with the prefix, with how often each was seen. */
export function queryCounts(queries: string[], prefix: string): Map<number, number> {
  const counts = new Map<number, number>();
  const re = new RegExp(`^${prefix}-(\\d{6})\\.storefront\\.example$`);
  for (const q of queries) {
    const m = re.exec(q);
    if (m) counts.set(Number(m[1]), (counts.get(Number(m[1])) ?? 0) + 1);
  }
  return counts;
}
