// Fuzzing the gateway's lean file client (src/gateway/file-get.ts), kept beside undici because
// bench:download measured undici 15 % slower on the same files (docs/downloads.md, "One HTTP
// client"): a hand-written HTTP reader in a security-sensitive gateway has to show that no
// answer makes it hang, crash, hand over bytes that are not the body, or reuse a connection
// left in a bad state.
//
// TEST DOUBLE: the "agent" is a TLS server on loopback that writes each case's bytes exactly,
// cut into random writes, then keeps the connection or closes it. The cases are valid answers
// in varied forms (which must always be read exactly) and mutations of them (which must be read
// exactly or refused). One pool serves every case, so reuse after every kind of answer is
// exercised too. Deterministic: the seed is printed, and KUBE_PCAP_FUZZ_SEED replays a run.
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSecureContext, createServer, type TLSSocket } from 'node:tls';
import t from 'tap';
import { FileGetPool, type FileResponse } from '../../src/gateway/file-get.js';
import { createCertificateAuthority, issueCertificate } from '../../src/tls/certificates.js';
import { onRequestPaths } from '../harness/request-heads.js';

const CASES = Number(process.env.KUBE_PCAP_FUZZ_CASES ?? 600);
const SEED = Number(process.env.KUBE_PCAP_FUZZ_SEED ?? (Date.now() % 2 ** 31));
/** Every case settles within this, whatever the answer (the client's timeouts are 300 ms). */
const SETTLE_MS = 3_000;

/** mulberry32: small, seedable, good enough to pick mutations. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 2 ** 32;
  };
}
const rand = prng(SEED);
const int = (n: number): number => Math.floor(rand() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;

interface Case {
  id: number;
  kind: string;
  /** The bytes the agent writes. */
  wire: Buffer;
  /** The body a correct reader hands over when it accepts the answer. */
  body: Buffer;
  /** A valid answer: the client must accept it and hand over exactly `body`. */
  valid: boolean;
  /** Close the connection after writing. */
  close: boolean;
}

const casing = (name: string): string => pick([name, name.toUpperCase(), name.replace(/(^|-)([a-z])/g, (_m, d: string, c: string) => d + c.toUpperCase())]);

function validHead(length: number): string[] {
  const lines = [
    `${casing('content-type')}:${pick([' ', '', '  '])}application/vnd.tcpdump.pcap`,
    `${casing('etag')}: "${randomBytes(4).toString('hex')}"`,
    `${casing('content-length')}:${pick([' ', '', '\t'])}${length}${pick(['', ' '])}`,
  ];
  for (let i = int(4); i > 0; i--) lines.push(`x-${randomBytes(3).toString('hex')}: ${randomBytes(int(40)).toString('base64')}`);
  for (let i = lines.length - 1; i > 0; i--) {
    const j = int(i + 1);
    [lines[i], lines[j]] = [lines[j]!, lines[i]!];
  }
  return lines;
}

function makeCase(id: number): Case {
  const body = randomBytes(pick([0, 1, 17, 1000, 16 * 1024, 16 * 1024 + 1, 70_000, 300_000]));
  const status = pick(['HTTP/1.1 200 OK', 'HTTP/1.1 200 ', 'HTTP/1.1 412 Precondition Failed', 'HTTP/1.1 503 Service Unavailable']);
  const head = (lines: string[], statusLine = status): Buffer => Buffer.from(`${statusLine}\r\n${lines.map((l) => `${l}\r\n`).join('')}\r\n`, 'latin1');
  const lines = validHead(body.length);
  const whole = Buffer.concat([head(lines), body]);
  const mutation = int(12);
  const ok = (kind: string): Case => ({ id, kind, wire: whole, body, valid: true, close: rand() < 0.3 });
  const bad = (kind: string, wire: Buffer, close = true): Case => ({ id, kind, wire, body, valid: false, close });
  switch (mutation) {
    case 0: case 1: case 2: case 3: return ok('valid');
    case 4: return bad('truncated', whole.subarray(0, int(whole.length)));
    case 5: return bad('chunked', Buffer.concat([head([...lines, 'transfer-encoding: chunked']), body]));
    case 6: return bad('two lengths', Buffer.concat([head([...lines, `content-length: ${body.length + 1 + int(10)}`]), body]));
    case 7: return bad('length not a number', Buffer.concat([head(lines.map((l) => /content-length/i.test(l) ? `content-length: ${pick(['-1', '0x10', '1e3', '', '99999999999999999999', `${body.length} ${body.length}`])}` : l)), body]));
    case 8: return bad('bytes past the body', Buffer.concat([whole, randomBytes(1 + int(100))]), rand() < 0.5);
    case 9: {
      const flipped = Buffer.from(whole);
      const headLength = whole.length - body.length;
      for (let i = 1 + int(3); i > 0; i--) flipped[int(headLength)] = int(256);
      return bad('head bytes flipped', flipped);
    }
    case 10: return bad('status line', Buffer.concat([head(lines, pick(['HTTP/1.0 200 OK', 'HTTP/2 200', 'HTTP/1.1 100 Continue', 'HTTP/1.1 204 No Content', 'HTTP/1.1 2000 OK', 'ICY 200 OK', ''])), body]));
    default: return bad('oversized head', Buffer.concat([head([...lines, `x-big: ${'a'.repeat(20_000 + int(10_000))}`]), body]));
  }
}

const dir = await mkdtemp(join(tmpdir(), 'file-get-fuzz-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const ca = await createCertificateAuthority(dir);
const serving = await issueCertificate(dir, 'agent', ca, { commonName: 'agent', dnsNames: ['agent.kube-pcap.test'], usage: 'server' });

const cases = new Map<string, Case>();
const sockets = new Set<TLSSocket>();
const server = createServer({ cert: await readFile(serving.certFile), key: await readFile(serving.keyFile) }, (sock) => {
  sockets.add(sock);
  sock.on('close', () => sockets.delete(sock));
  sock.on('error', () => undefined);
  onRequestPaths(sock, (path) => {
    const c = cases.get(path);
    if (!c) {
      sock.destroy();
      return;
    }
    void (async () => {
      // Cut into random writes, some a tick apart, as TLS records and the network would.
      for (let at = 0; at < c.wire.length;) {
        const n = 1 + int(Math.min(c.wire.length - at, pick([1, 7, 100, 4096, 40_000])));
        sock.write(c.wire.subarray(at, at + n));
        at += n;
        if (rand() < 0.1) await new Promise((r) => setImmediate(r));
      }
      if (c.close) sock.end();
    })();
  });
});
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
t.teardown(() => new Promise<void>((resolve) => {
  for (const s of sockets) s.destroy();
  server.close(() => resolve());
}));
const target = { host: '127.0.0.1', port: (server.address() as AddressInfo).port, servername: 'agent.kube-pcap.test' };
const pool = new FileGetPool(createSecureContext({ ca: await readFile(ca.certFile) }), { headersTimeoutMs: 300, idleTimeoutMs: 300, keepAliveMs: 30_000, maxIdlePerAgent: 2 });
t.teardown(() => pool.close());

type Outcome = { accepted: true; bytes: Buffer; length: number } | { accepted: false; error: string };

async function fetchCase(c: Case): Promise<Outcome> {
  let res: FileResponse;
  try {
    res = await pool.get(target, `/case/${c.id}`, {});
  } catch (err) {
    return { accepted: false, error: (err as Error).message };
  }
  const pieces: Buffer[] = [];
  let handed = 0;
  try {
    await res.body.pump((view) => {
      handed += view.length;
      if (handed > res.length) throw new Error(`handed ${handed} bytes of a ${res.length}-byte body`);
      pieces.push(Buffer.from(view));
      // Now and then the consumer is slow: pause, resume on the next tick.
      if (rand() < 0.05) {
        setImmediate(() => res.body.resume());
        return false;
      }
      return true;
    });
  } catch (err) {
    return { accepted: false, error: (err as Error).message };
  }
  return { accepted: true, bytes: Buffer.concat(pieces), length: res.length };
}

t.comment(`seed ${SEED} (KUBE_PCAP_FUZZ_SEED=${SEED} replays this run), ${CASES} cases`);
const kinds = new Map<string, { accepted: number; refused: number }>();
const problems: string[] = [];
let previous = 'none';
for (let i = 0; i < CASES; i++) {
  const c = makeCase(i);
  cases.set(`/case/${i}`, c);
  const outcome = await Promise.race([
    fetchCase(c),
    new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), SETTLE_MS).unref()),
  ]);
  const k = kinds.get(c.kind) ?? { accepted: 0, refused: 0 };
  kinds.set(c.kind, k);
  if (outcome === 'hung') {
    problems.push(`case ${i} (${c.kind}): did not settle within ${SETTLE_MS} ms`);
    continue;
  }
  if (outcome.accepted) {
    k.accepted++;
    // What a reader that accepts must hand over: the bytes after the head's end, exactly as
    // many as the length it read (a flipped byte may have changed that length).
    const h = c.wire.indexOf('\r\n\r\n') + 4;
    const onWire = c.wire.subarray(h, h + outcome.length);
    if (outcome.bytes.length !== outcome.length || !outcome.bytes.equals(onWire)) problems.push(`case ${i} (${c.kind}): accepted ${outcome.bytes.length} bytes that are not the ${outcome.length} after the head`);
    if (c.valid && !outcome.bytes.equals(c.body)) problems.push(`case ${i} (${c.kind}): a valid answer read as ${outcome.bytes.length} bytes, not its ${c.body.length}-byte body`);
  } else {
    k.refused++;
    if (c.valid) problems.push(`case ${i} (${c.kind}, after ${previous}): a valid answer refused: ${outcome.error}`);
  }
  cases.delete(`/case/${i}`);
  previous = `${c.kind}${c.close ? ', closed' : ''}${outcome.accepted ? ', read' : ', refused'}`;
}

t.test('every answer is read exactly or refused; none hangs; valid answers are always read', async (t) => {
  t.same(problems, [], `seed ${SEED}`);
  for (const [kind, k] of [...kinds].sort()) t.comment(`${kind}: ${k.accepted} read, ${k.refused} refused`);
  t.ok((kinds.get('valid')?.accepted ?? 0) > CASES / 5, 'valid answers in varied forms were read');
  for (const kind of ['chunked', 'two lengths', 'oversized head']) t.equal(kinds.get(kind)?.accepted ?? 0, 0, `${kind}: never read as a body`);
});

t.test('after all of it the pool still reads a valid answer on a reused or new connection', async (t) => {
  const body = randomBytes(5000);
  cases.set('/case/-1', { id: -1, kind: 'valid', wire: Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n`), body]), body, valid: true, close: false });
  for (let i = 0; i < 3; i++) {
    const got = await fetchCase(cases.get('/case/-1')!);
    t.ok(got.accepted && got.bytes.equals(body), `GET ${i + 1}: the whole body${got.accepted ? '' : `: ${got.error}`}`);
  }
});
