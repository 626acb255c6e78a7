// Capture files that compress like real ones, for bench:download's compression part: a pod's
// DNS (queries and answers for cluster and external names, EDNS, varying ids and ports) and
// HTTP/1.1 (requests with headers and cookies, JSON and HTML responses split into TCP
// segments, the client's ACKs), with a tenth of the responses incompressible (thumbnails,
// already-compressed assets; about a fifth of the bytes), as east-west traffic of a web tier
// has. Deterministic for a seed.
import { open } from 'node:fs/promises';
import { encodeGlobalHeader as pcapGlobalHeader } from '../src/pcap/format.js';

/** xorshift32: fast, deterministic, good enough to vary headers and payloads. */
class Rng {
  constructor(private s: number) {
    if (this.s === 0) this.s = 0x9e3779b9;
  }
  next(): number {
    let x = this.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }
  int(n: number): number {
    return this.next() % n;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  hex(n: number): string {
    let s = '';
    while (s.length < n) s += this.next().toString(16).padStart(8, '0');
    return s.slice(0, n);
  }
  fill(b: Buffer): void {
    for (let i = 0; i + 4 <= b.length; i += 4) b.writeUInt32LE(this.next(), i);
  }
}

const SERVICES = ['cart', 'catalog', 'checkout', 'payments', 'users', 'search', 'recommendations', 'inventory', 'shipping', 'reviews', 'auth', 'images'];
const NAMESPACES = ['storefront', 'payments', 'platform', 'monitoring'];
const EXTERNAL = ['api.stripe.com', 'www.googleapis.com', 'sts.amazonaws.com', 's3.eu-west-1.amazonaws.com', 'registry.npmjs.org', 'login.microsoftonline.com', 'hooks.slack.com', 'api.github.com'];
const PATHS = ['/api/v1/products', '/api/v1/cart/items', '/api/v1/users/me', '/api/v2/search', '/healthz', '/api/v1/orders', '/static/app.js', '/images/product', '/api/v1/reviews', '/metrics'];
const AGENTS = ['Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36', 'okhttp/4.12.0', 'Go-http-client/1.1', 'python-requests/2.32.3', 'kube-probe/1.31'];
const WORDS = ['espresso', 'grinder', 'kettle', 'filter', 'beans', 'roast', 'origin', 'ethiopia', 'colombia', 'brazil', 'medium', 'dark', 'light', 'organic', 'gift', 'subscription', 'mug', 'scale', 'pour-over', 'cold-brew'];

function ipBytes(s: string): number[] {
  return s.split('.').map(Number);
}

function checksum(b: Buffer, start: number, len: number): number {
  let sum = 0;
  for (let i = 0; i < len; i += 2) sum += b.readUInt16BE(start + i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** An Ethernet + IPv4 + UDP/TCP frame around `payload`; L4 checksums left 0 (offloaded, as tcpdump on a veth sees them). */
function frame(proto: 'udp' | 'tcp', src: string, dst: string, sport: number, dport: number, payload: Buffer, tcp?: { seq: number; ack: number; flags: number }): Buffer {
  const l4 = proto === 'udp' ? 8 : 20;
  const b = Buffer.alloc(14 + 20 + l4 + payload.length);
  b.set([0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01], 0);
  b.writeUInt16BE(0x0800, 12);
  b[14] = 0x45;
  b.writeUInt16BE(20 + l4 + payload.length, 16);
  b.writeUInt16BE(0x4000, 20);
  b[22] = 64;
  b[23] = proto === 'udp' ? 17 : 6;
  b.set(ipBytes(src), 26);
  b.set(ipBytes(dst), 30);
  b.writeUInt16BE(checksum(b, 14, 20), 24);
  b.writeUInt16BE(sport, 34);
  b.writeUInt16BE(dport, 36);
  if (proto === 'udp') {
    b.writeUInt16BE(8 + payload.length, 38);
  } else {
    b.writeUInt32BE(tcp!.seq >>> 0, 38);
    b.writeUInt32BE(tcp!.ack >>> 0, 42);
    b[46] = 0x50;
    b[47] = tcp!.flags;
    b.writeUInt16BE(502, 48);
  }
  payload.copy(b, 34 + l4);
  return b;
}

function dnsName(name: string): Buffer {
  const parts = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  return Buffer.concat([...parts, Buffer.from([0])]);
}

function dnsMessage(r: Rng, id: number, name: string, qtype: number, answer: boolean): Buffer {
  const head = Buffer.alloc(12);
  head.writeUInt16BE(id, 0);
  head.writeUInt16BE(answer ? 0x8180 : 0x0100, 2);
  head.writeUInt16BE(1, 4);
  head.writeUInt16BE(answer ? 1 + r.int(2) : 0, 6);
  head.writeUInt16BE(1, 10);
  const q = Buffer.concat([dnsName(name), Buffer.from([0, qtype, 0, 1])]);
  const parts = [head, q];
  for (let i = 0; i < head.readUInt16BE(6); i++) {
    const rr = Buffer.alloc(12 + (qtype === 28 ? 16 : 4));
    rr.writeUInt16BE(0xc00c, 0);
    rr.writeUInt16BE(qtype, 2);
    rr.writeUInt16BE(1, 4);
    rr.writeUInt32BE(5 + r.int(300), 6);
    rr.writeUInt16BE(qtype === 28 ? 16 : 4, 10);
    r.fill(rr.subarray(12));
    parts.push(rr);
  }
  // EDNS(0) OPT, as resolvers send it.
  parts.push(Buffer.from([0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]));
  return Buffer.concat(parts);
}

function jsonBody(r: Rng): Buffer {
  const items = Array.from({ length: 3 + r.int(25) }, () => ({
    id: r.hex(24), sku: `SKU-${r.int(100000)}`, name: `${r.pick(WORDS)} ${r.pick(WORDS)} ${r.pick(WORDS)}`,
    price: { amount: r.int(20000) / 100, currency: 'EUR' }, stock: r.int(500), rating: (r.int(50) / 10).toFixed(1),
    updatedAt: new Date(1_733_000_000_000 + r.int(1e9)).toISOString(), tags: [r.pick(WORDS), r.pick(WORDS)],
  }));
  return Buffer.from(JSON.stringify({ items, page: r.int(40), total: r.int(5000), requestId: r.hex(32) }));
}

function htmlBody(r: Rng): Buffer {
  const rows = Array.from({ length: 10 + r.int(60) }, () => `<li class="product-card" data-id="${r.hex(12)}"><a href="/p/${r.hex(8)}">${r.pick(WORDS)} ${r.pick(WORDS)}</a><span class="price">${(r.int(20000) / 100).toFixed(2)} &euro;</span></li>`);
  return Buffer.from(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Storefront</title><link rel="stylesheet" href="/static/app.${r.hex(8)}.css"></head><body><ul>${rows.join('\n')}</ul><script src="/static/app.${r.hex(8)}.js"></script></body></html>`);
}

/** Writes a pcap of DNS and HTTP traffic of at least `size` bytes; returns its length. */
export async function writeRealisticPcap(path: string, size: number, seed: number): Promise<number> {
  const r = new Rng(seed);
  const fh = await open(path, 'w');
  const pending: Buffer[] = [];
  let pendingBytes = 0;
  let written = 0;
  let t = 1_733_000_000_000_000 + seed * 1000;
  const client = `192.0.2.${10 + (seed % 40)}`;
  const dns = '192.0.2.53';
  const push = (b: Buffer): void => {
    t += 20 + r.int(400);
    const h = Buffer.alloc(16);
    h.writeUInt32LE(Math.floor(t / 1e6), 0);
    h.writeUInt32LE(t % 1e6, 4);
    h.writeUInt32LE(b.length, 8);
    h.writeUInt32LE(b.length, 12);
    pending.push(h, b);
    pendingBytes += 16 + b.length;
  };
  try {
    written += (await fh.write(pcapGlobalHeader())).bytesWritten;
    while (written + pendingBytes < size) {
      if (r.int(3) === 0) {
        // A lookup: cluster names with the search path's misses first, as a pod's resolver does.
        const external = r.int(3) === 0;
        const base = external ? r.pick(EXTERNAL) : `${r.pick(SERVICES)}.${r.pick(NAMESPACES)}`;
        const tries = external ? [`${base}.storefront.svc.cluster.local`, `${base}.svc.cluster.local`, `${base}.cluster.local`, base] : [`${base}.svc.cluster.local`];
        for (const name of tries) {
          const id = r.int(65536);
          const sport = 32768 + r.int(28000);
          const qtype = r.int(2) === 0 ? 1 : 28;
          push(frame('udp', client, dns, sport, 53, dnsMessage(r, id, name, qtype, false)));
          push(frame('udp', dns, client, 53, sport, dnsMessage(r, id, name, qtype, name === tries.at(-1))));
        }
      } else {
        // An HTTP exchange on a kept-alive connection.
        const server = `192.0.2.${100 + r.int(50)}`;
        const sport = 32768 + r.int(28000);
        let cseq = r.next();
        let sseq = r.next();
        const path = `${r.pick(PATHS)}${r.int(2) === 0 ? `?page=${r.int(40)}&q=${r.pick(WORDS)}` : `/${r.hex(8)}`}`;
        const req = Buffer.from(`GET ${path} HTTP/1.1\r\nHost: ${r.pick(SERVICES)}.${r.pick(NAMESPACES)}.svc.cluster.local\r\nUser-Agent: ${r.pick(AGENTS)}\r\nAccept: application/json, text/html;q=0.9, */*;q=0.8\r\nAccept-Encoding: identity\r\nCookie: session=${r.hex(48)}; cart=${r.hex(16)}\r\nTraceparent: 00-${r.hex(32)}-${r.hex(16)}-01\r\nX-Request-Id: ${r.hex(8)}-${r.hex(4)}-${r.hex(4)}-${r.hex(4)}-${r.hex(12)}\r\n\r\n`);
        push(frame('tcp', client, server, sport, 8080, req, { seq: cseq, ack: sseq, flags: 0x18 }));
        cseq += req.length;
        const kind = r.int(10);
        let body: Buffer;
        let type: string;
        if (kind < 1) {
          body = Buffer.alloc(2000 + r.int(18000));
          r.fill(body);
          type = r.int(2) === 0 ? 'image/jpeg' : 'application/javascript';
        } else if (kind < 5) {
          body = jsonBody(r);
          type = 'application/json';
        } else {
          body = htmlBody(r);
          type = 'text/html; charset=utf-8';
        }
        const head = Buffer.from(`HTTP/1.1 200 OK\r\nContent-Type: ${type}\r\nContent-Length: ${body.length}\r\nDate: ${new Date(t / 1000).toUTCString()}\r\nServer: envoy\r\nX-Envoy-Upstream-Service-Time: ${r.int(200)}\r\nCache-Control: private, max-age=0\r\nX-Request-Id: ${r.hex(8)}-${r.hex(4)}-${r.hex(4)}-${r.hex(4)}-${r.hex(12)}\r\n\r\n`);
        const resp = Buffer.concat([head, body]);
        for (let off = 0; off < resp.length; off += 1448) {
          const seg = resp.subarray(off, off + 1448);
          push(frame('tcp', server, client, 8080, sport, seg, { seq: sseq, ack: cseq, flags: off + 1448 >= resp.length ? 0x18 : 0x10 }));
          sseq += seg.length;
          if ((off / 1448) % 2 === 1 || off + 1448 >= resp.length) push(frame('tcp', client, server, sport, 8080, Buffer.alloc(0), { seq: cseq, ack: sseq, flags: 0x10 }));
        }
      }
      if (pendingBytes >= 1 << 20) {
        written += (await fh.write(Buffer.concat(pending))).bytesWritten;
        pending.length = 0;
        pendingBytes = 0;
      }
    }
    if (pending.length > 0) written += (await fh.write(Buffer.concat(pending))).bytesWritten;
    return written;
  } finally {
    await fh.close();
  }
}
