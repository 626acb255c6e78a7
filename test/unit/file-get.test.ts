// The gateway's lean GET of agents' files (src/gateway/file-get.ts): bodies arrive whole and
// in order, connections are reused only when that is safe, and every answer outside the
// agents' contract is an error rather than a guess.
//
// TEST DOUBLE: the "agent" here is a TLS server on loopback that writes its answers byte for
// byte, so that it can send what a real agent never does (chunked, two lengths, a cut body,
// bytes past the body, a stall). A real agent's files go through this client in
// test/gateway/download.test.ts, pinned-download.test.ts and zip64.test.ts.
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSecureContext, createServer, type TLSSocket } from 'node:tls';
import t from 'tap';
import { FileGetPool, type FileGetOptions, type FileResponse } from '../../src/gateway/file-get.js';
import { createCertificateAuthority, issueCertificate } from '../../src/tls/certificates.js';
import { run } from '../harness/http.js';
import { onRequestPaths } from '../harness/request-heads.js';
import type { TapTest } from '../harness/tap.js';
import { waitFor } from '../harness/wait.js';

const dir = await mkdtemp(join(tmpdir(), 'file-get-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const ca = await createCertificateAuthority(dir);
const serving = await issueCertificate(dir, 'agent', ca, { commonName: 'agent', dnsNames: ['agent.kube-pcap.test'], usage: 'server' });
const otherCa = await createCertificateAuthority(dir, 'other-ca');
const impostor = await issueCertificate(dir, 'impostor', otherCa, { commonName: 'agent', dnsNames: ['agent.kube-pcap.test'], usage: 'server' });
const SERVER_NAME = 'agent.kube-pcap.test';

const FILE = randomBytes(3 * 1024 * 1024 + 17);

type Answer = (sock: TLSSocket, path: string) => void;
const answers = new Map<string, Answer>();
let connections = 0;
const open = new Set<TLSSocket>();

async function agent(certFile: string, keyFile: string): Promise<{ port: number; close: () => Promise<void> }> {
  const server = createServer({ cert: await readFile(certFile), key: await readFile(keyFile) }, (sock) => {
    connections++;
    open.add(sock);
    sock.on('close', () => open.delete(sock));
    sock.on('error', () => undefined);
    onRequestPaths(sock, (path) => {
      const answer = answers.get(path);
      if (answer) answer(sock, path);
      else sock.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => {
      for (const s of open) s.destroy();
      server.close(() => resolve());
    }),
  };
}

const real = await agent(serving.certFile, serving.keyFile);
t.teardown(real.close);
const fake = await agent(impostor.certFile, impostor.keyFile);
t.teardown(fake.close);

const OPTIONS: FileGetOptions = { headersTimeoutMs: 2_000, idleTimeoutMs: 2_000, keepAliveMs: 30_000, maxIdlePerAgent: 2 };
const context = createSecureContext({ ca: await readFile(ca.certFile) });
function pool(t: TapTest, opts: Partial<FileGetOptions> = {}): FileGetPool {
  const p = new FileGetPool(context, { ...OPTIONS, ...opts });
  t.teardown(() => p.close());
  return p;
}
const target = (port = real.port) => ({ host: '127.0.0.1', port, servername: SERVER_NAME });

/** The body's bytes, copied piece by piece as the contract asks (views are reused). */
async function collect(res: FileResponse): Promise<Buffer> {
  const pieces: Buffer[] = [];
  await res.body.pump((view) => {
    pieces.push(Buffer.from(view));
    return true;
  });
  return Buffer.concat(pieces);
}

const ok = (extra = '', length = FILE.length) => `HTTP/1.1 200 OK\r\ncontent-type: application/vnd.tcpdump.pcap\r\netag: "abc"\r\n${extra}content-length: ${length}\r\nkeep-alive: timeout=72\r\n\r\n`;
answers.set('/file', (sock) => {
  sock.write(ok());
  sock.write(FILE);
});
answers.set('/file-close', (sock) => {
  sock.write(ok('connection: close\r\n'));
  sock.end(FILE);
});

t.test('a file arrives whole and in order, its head as sent; the connection is reused for the next', async (t) => {
  const p = pool(t);
  const before = connections;
  for (let i = 0; i < 3; i++) {
    const res = await p.get(target(), '/file', { authorization: 'Bearer x' });
    t.equal(res.status, 200);
    t.equal(res.headers.get('etag'), '"abc"');
    t.equal(res.length, FILE.length);
    t.ok((await collect(res)).equals(FILE), `GET ${i + 1}: the same ${FILE.length} bytes`);
  }
  t.equal(connections - before, 1, 'one TLS connection for three GETs');
});

t.test('"connection: close" is honoured: the next GET opens a new connection', async (t) => {
  const p = pool(t);
  const before = connections;
  for (let i = 0; i < 2; i++) t.ok((await collect(await p.get(target(), '/file-close', {}))).equals(FILE));
  t.equal(connections - before, 2);
});

t.test('an idle connection the agent closed is replaced without the caller seeing it', async (t) => {
  const p = pool(t);
  t.ok((await collect(await p.get(target(), '/file', {}))).equals(FILE));
  const before = connections;
  for (const s of open) s.end();
  await waitFor(async () => open.size === 0, { what: 'the agent to close its idle connections', timeoutMs: 5_000, intervalMs: 10 });
  t.ok((await collect(await p.get(target(), '/file', {}))).equals(FILE), 'the second GET succeeds');
  t.equal(connections - before, 1, 'on a new connection');
});

t.test('a body cut short is an error, not a short file', async (t) => {
  answers.set('/cut', (sock) => {
    sock.write(ok());
    sock.end(FILE.subarray(0, 100_000));
  });
  const res = await pool(t).get(target(), '/cut', {});
  let got = 0;
  await t.rejects(res.body.pump((v) => {
    got += v.length;
    return true;
  }), /closed the connection/);
  t.equal(got, 100_000, 'what came was handed over, and no more');
});

t.test('bytes past the length are not the body, and the connection is not reused', async (t) => {
  answers.set('/excess', (sock) => sock.write(`${ok('', 10)}0123456789HTTP/1.1 200 OK\r\n`));
  const p = pool(t);
  const before = connections;
  t.equal((await collect(await p.get(target(), '/excess', {}))).toString(), '0123456789');
  t.ok((await collect(await p.get(target(), '/file', {}))).equals(FILE));
  t.equal(connections - before, 2, 'a new connection for the next GET');
});

t.test('bytes past a body that arrive only once the connection was taken again: the next GET is asked again on a new connection', async (t) => {
  // Found by file-get-fuzz.test.ts: the tail reaches the reused connection after the next
  // request went out, where it reads as a broken answer head.
  const tailed = new WeakSet<TLSSocket>();
  answers.set('/tailed', (sock) => {
    tailed.add(sock);
    sock.write(ok('', 10));
    sock.write('0123456789');
  });
  answers.set('/after-tail', (sock) => {
    if (tailed.has(sock)) sock.write('late tail of the last answer\r\n\r\n');
    sock.write(ok());
    sock.write(FILE);
  });
  const p = pool(t);
  const before = connections;
  t.equal((await collect(await p.get(target(), '/tailed', {}))).toString(), '0123456789');
  t.ok((await collect(await p.get(target(), '/after-tail', {}))).equals(FILE), 'the next file arrives whole');
  t.equal(connections - before, 2, 'the second on a new connection');
});

t.test('answers outside the contract are refused with the reason', async (t) => {
  const cases: [string, string, RegExp][] = [
    ['/chunked', 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n', /Transfer-Encoding "chunked"/],
    ['/no-length', 'HTTP/1.1 200 OK\r\ncontent-type: x\r\n\r\nhello', /without one Content-Length/],
    ['/two-lengths', 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello', /without one Content-Length/],
    ['/bad-length', 'HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\n', /without one Content-Length/],
    ['/http10', 'HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\nhello', /not an HTTP\/1.1 answer/],
    ['/bad-header', 'HTTP/1.1 200 OK\r\nno colon here\r\ncontent-length: 5\r\n\r\nhello', /malformed header line/],
    ['/interim', 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello', /interim answer/],
    ['/huge-head', `HTTP/1.1 200 OK\r\nx-pad: ${'a'.repeat(20_000)}\r\ncontent-length: 5\r\n\r\nhello`, /head is longer than 16384 bytes/],
  ];
  for (const [path, bytes, why] of cases) {
    answers.set(path, (sock) => sock.write(bytes));
    await t.rejects(pool(t).get(target(), path, {}), why, path);
  }
});

t.test('an error answer\'s text is read for its message', async (t) => {
  const status = JSON.stringify({ kind: 'Status', message: 'pin abc has expired' });
  answers.set('/gone', (sock) => sock.write(`HTTP/1.1 410 Gone\r\ncontent-type: application/json\r\ncontent-length: ${status.length}\r\n\r\n${status}`));
  const res = await pool(t).get(target(), '/gone', {});
  t.equal(res.status, 410);
  t.equal(await res.body.text(64 * 1024), status);
});

t.test('an agent that does not answer, or stalls inside a body, times out', async (t) => {
  answers.set('/silent', () => undefined);
  answers.set('/stall', (sock) => sock.write(`${ok()}${'x'.repeat(1000)}`));
  const p = pool(t, { headersTimeoutMs: 300, idleTimeoutMs: 300 });
  await t.rejects(p.get(target(), '/silent', {}), { code: 'HEADERS_TIMEOUT' });
  const res = await p.get(target(), '/stall', {});
  await t.rejects(collect(res), { code: 'BODY_TIMEOUT' });
});

t.test('an abort mid-body cuts the connection and fails the body', async (t) => {
  answers.set('/endless', (sock) => {
    sock.write(ok('', 1 << 30));
    const more = (): void => {
      while (!sock.destroyed && sock.write(FILE));
      if (!sock.destroyed) sock.once('drain', more);
    };
    more();
  });
  const abort = new AbortController();
  const res = await pool(t).get(target(), '/endless', {}, abort.signal);
  let got = 0;
  const pumped = res.body.pump((v) => {
    got += v.length;
    if (got > 1_000_000) abort.abort(new Error('the client went away'));
    return true;
  });
  await t.rejects(pumped, /aborted: the client went away/);
  await waitFor(async () => open.size === 0, { what: 'the agent to see the connection close', timeoutMs: 5_000, intervalMs: 10 });
});

t.test('a paused body is not read until resumed: the agent is held back, not buffered', async (t) => {
  answers.set('/big', (sock) => {
    sock.write(ok('', 64 * FILE.length));
    let left = 64;
    const more = (): void => {
      while (left > 0 && sock.write(FILE)) left--;
      if (left > 0) sock.once('drain', more);
    };
    more();
  });
  const res = await pool(t, { idleTimeoutMs: 30_000 }).get(target(), '/big', {});
  let got = 0;
  let paused = true;
  const pumped = res.body.pump((v) => {
    got += v.length;
    return !paused;
  });
  // The kernel's measure: the agent's socket holds bytes it cannot send, and the gateway's
  // holds bytes it does not read, at the same moment.
  const queues = async (): Promise<{ unsent: number; unread: number }> => {
    const ss = await run('ss', ['-Htn', 'state', 'established']);
    const q = { unsent: 0, unread: 0 };
    for (const [recvQ, sendQ, local, peer] of ss.stdout.trim().split('\n').map((l) => l.trim().split(/\s+/))) {
      if (local === `127.0.0.1:${real.port}`) q.unsent = Math.max(q.unsent, Number(sendQ));
      if (peer === `127.0.0.1:${real.port}`) q.unread = Math.max(q.unread, Number(recvQ));
    }
    return q;
  };
  let last = { unsent: 0, unread: 0 };
  await waitFor(async () => {
    last = await queues();
    // Unread: some bytes the kernel holds for the paused reader. How many depends on the
    // receive window the kernel gave it (63 187 bytes on a loaded machine, not 64 KiB).
    return last.unsent > 1024 * 1024 && last.unread > 16 * 1024;
  }, { what: 'the agent to be held back by the paused body', timeoutMs: 10_000, intervalMs: 20 }).catch((err: Error) => {
    throw new Error(`${err.message} (last: ${last.unsent} bytes unsent, ${last.unread} unread, ${got} handed over)`);
  });
  t.ok(got < 256 * 1024, `while paused, at most what TLS had already decrypted was handed over (${got} bytes)`);
  paused = false;
  res.body.resume();
  await pumped;
  t.equal(got, 64 * FILE.length, 'all of it once resumed');
});

t.test('TLS fails closed: another CA, or a certificate for another name', async (t) => {
  await t.rejects(pool(t).get(target(fake.port), '/file', {}), /certificate/i, 'a certificate from another CA');
  await t.rejects(pool(t).get({ host: '127.0.0.1', port: real.port, servername: 'other.kube-pcap.test' }, '/file', {}), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
});

t.test('a header or path that would split the request is refused before anything is sent', async (t) => {
  const before = connections;
  await t.rejects(pool(t).get(target(), '/file', { authorization: 'Bearer x\r\nx-evil: 1' }), /refused to send header/);
  await t.rejects(pool(t).get(target(), '/file HTTP/1.1\r\nx: y', {}), /not a request path/);
  t.equal(connections, before, 'no connection was made');
});
