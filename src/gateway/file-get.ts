// GET of an agent's file over HTTPS, read without an HTTP library: the TLS socket decrypts
// straight into one reused buffer per connection (net's `onread`), and the body is handed
// on as views of that buffer (push-body.ts). Through undici every byte was copied three more
// times (the socket's read concatenation, into llhttp's WebAssembly memory, the body
// stream's read) and each 16 KiB TLS record cost an allocation, a stream push and a promise:
// at several hundred MiB/s that was the largest part of the gateway's CPU after TLS and
// CRC-32 (docs/downloads.md, "Throughput").
//
// It accepts only what the agents' file endpoints send: HTTP/1.1, a status line, headers and
// a body framed by Content-Length. Anything else (chunked, no length, a second length, bytes
// past the body, an oversized head) is an error, never a guess; a connection is reused only
// after a body that ended exactly where its length said, and one that closed under a reused
// connection before a whole answer head is retried once on a new connection (a GET is safe to repeat).
import type { OnReadOpts } from 'node:net';
import { connect, type ConnectionOptions, type SecureContext, type TLSSocket } from 'node:tls';
import type { PushBody } from './push-body.js';

export interface FileGetOptions {
  /** Time for the agent to answer (status line and headers), from the request. */
  headersTimeoutMs: number;
  /** Longest pause inside a body; a stalled client pauses the read too. */
  idleTimeoutMs: number;
  /** Longest an idle connection is kept for the next GET (less if the agent says so). */
  keepAliveMs: number;
  /** Idle connections kept per agent. */
  maxIdlePerAgent: number;
}

export interface FileGetTarget {
  host: string;
  port: number;
  /** The name the agent's certificate must carry. */
  servername: string;
}

export interface FileResponse {
  status: number;
  /** Lowercased names; a repeated header's values joined with ", ". */
  headers: ReadonlyMap<string, string>;
  /** Content-Length. */
  length: number;
  body: FileBody;
}

export interface FileBody extends PushBody {
  /** The body as text, up to `limit` bytes (an error's message); the rest is dropped. */
  text(limit: number): Promise<string>;
}

/** The GET failed before or while its answer arrived; `code` is the socket's or TLS's error code. */
export class FileGetError extends Error {
  constructor(message: string, readonly code?: string) {
    super(message);
    this.name = 'FileGetError';
  }
}

/** The largest TLS record's plaintext: SSL_read hands over at most one record per call. */
const READ_BYTES = 16 * 1024;
/** An agent's answer head is a few hundred bytes. */
const MAX_HEAD_BYTES = 16 * 1024;
/** Margin under the agent's announced keep-alive, so that it never closes a connection we are about to use. */
const KEEP_ALIVE_MARGIN_MS = 1_000;

export class FileGetPool {
  private readonly idle = new Map<string, Connection[]>();
  private closed = false;

  constructor(private readonly secureContext: SecureContext, private readonly opts: FileGetOptions) {}

  /** Sends the GET; resolves with the answer's head once it is in, its body to be pumped. */
  async get(target: FileGetTarget, path: string, headers: Record<string, string>, signal?: AbortSignal): Promise<FileResponse> {
    if (this.closed) throw new FileGetError('the agents\' client was closed');
    const request = requestBytes(target, path, headers);
    signal?.throwIfAborted();
    const reused = this.takeIdle(target);
    if (reused) {
      try {
        return await reused.exchange(request, signal);
      } catch (err) {
        // The idle connection failed before an answer (UnansweredError): once more on a new one.
        if (!(err instanceof UnansweredError)) throw err;
      }
    }
    return new Connection(this, target, this.secureContext, this.opts).exchange(request, signal);
  }

  /** Closes idle connections; those in use close when their body is done. */
  close(): void {
    this.closed = true;
    const idle = [...this.idle.values()].flat();
    this.idle.clear();
    for (const c of idle) c.destroy();
  }

  /** A connection whose answer ended cleanly offers itself for the next GET. */
  park(conn: Connection, keepMs: number): boolean {
    if (this.closed || keepMs <= 0) return false;
    const key = conn.key;
    const list = this.idle.get(key) ?? [];
    if (list.length >= this.opts.maxIdlePerAgent) return false;
    list.push(conn);
    this.idle.set(key, list);
    return true;
  }

  unpark(conn: Connection): void {
    const list = this.idle.get(conn.key);
    const i = list?.indexOf(conn) ?? -1;
    if (i < 0) return;
    list!.splice(i, 1);
    if (list!.length === 0) this.idle.delete(conn.key);
  }

  private takeIdle(target: FileGetTarget): Connection | undefined {
    const list = this.idle.get(keyOf(target));
    const conn = list?.pop();
    if (conn) this.unpark(conn);
    return conn;
  }
}

/**
 * A reused connection failed before a whole answer head: closed under us, or bytes that were
 * no answer (the tail of an agent's previous answer, past its length, arriving after the
 * connection was parked: found by test/unit/file-get-fuzz.test.ts). A GET: safe to ask again,
 * once, on a new connection.
 */
class UnansweredError extends FileGetError {}

type Phase = 'head' | 'body' | 'idle' | 'closed';

/** One TLS connection to an agent, one GET at a time. */
class Connection {
  readonly key: string;
  private readonly socket: TLSSocket;
  private phase: Phase = 'head';
  private used = false;
  /** The answer's head so far (the read buffer is reused, so it is kept as a copy). */
  private head: Buffer | undefined;
  /** The exchange in progress. */
  private current: Exchange | undefined;

  constructor(private readonly pool: FileGetPool, target: FileGetTarget, secureContext: SecureContext, private readonly opts: FileGetOptions) {
    this.key = keyOf(target);
    const buffer = Buffer.allocUnsafeSlow(READ_BYTES);
    const onread: OnReadOpts = { buffer, callback: (n) => this.onRead(buffer.subarray(0, n)) };
    // @types/node leaves `onread` out of tls.ConnectionOptions; tls.connect passes it on to its socket.
    const options: ConnectionOptions & { onread: OnReadOpts } = {
      host: target.host,
      port: target.port,
      servername: target.servername,
      secureContext,
      rejectUnauthorized: true,
      ALPNProtocols: ['http/1.1'],
      onread,
    };
    this.socket = connect(options);
    this.socket.setNoDelay(true);
    this.socket.on('error', (err: NodeJS.ErrnoException) => this.fail(new FileGetError(err.message, err.code)));
    this.socket.on('close', () => this.fail(new FileGetError('the agent closed the connection')));
    this.socket.on('timeout', () => this.onTimeout());
  }

  exchange(request: Buffer, signal: AbortSignal | undefined): Promise<FileResponse> {
    const reused = this.used;
    this.used = true;
    this.phase = 'head';
    const exchange = new Exchange(this, reused, signal);
    this.current = exchange;
    this.head = undefined;
    this.socket.setTimeout(this.opts.headersTimeoutMs);
    this.socket.write(request);
    this.socket.resume();
    return exchange.answer;
  }

  /** Data from the socket; false pauses the socket until `resume`. */
  private onRead(view: Buffer): boolean {
    const x = this.current;
    if (!x || this.phase === 'idle' || this.phase === 'closed') {
      // Nothing was asked: an agent that speaks out of turn is not trusted with the next GET.
      this.destroy();
      return false;
    }
    try {
      if (this.phase === 'head') return this.onHead(x, view);
      return x.deliver(view);
    } catch (err) {
      this.fail(err instanceof FileGetError ? err : new FileGetError((err as Error).message));
      return false;
    }
  }

  private onHead(x: Exchange, view: Buffer): boolean {
    const all = this.head ? Buffer.concat([this.head, view]) : Buffer.from(view);
    const end = all.indexOf('\r\n\r\n');
    if ((end < 0 ? all.length : end) > MAX_HEAD_BYTES) throw new FileGetError(`the answer's head is longer than ${MAX_HEAD_BYTES} bytes`);
    if (end < 0) {
      this.head = all;
      return true;
    }
    const head = parseHead(all.toString('latin1', 0, end));
    this.head = undefined;
    this.phase = 'body';
    this.socket.setTimeout(this.opts.idleTimeoutMs);
    const rest = all.subarray(end + 4);
    // Until the body is pumped, the socket waits; what came with the head waits copied.
    return x.start(head, rest, Math.min(this.opts.keepAliveMs, head.keepAliveMs));
  }

  /** The body ended where its length said: park the connection, or close it. */
  finished(reusable: boolean, keepMs: number): void {
    this.current = undefined;
    if (reusable && this.pool.park(this, keepMs)) {
      this.phase = 'idle';
      this.socket.setTimeout(keepMs);
      // Reading on: an idle connection's close is noticed, and any byte ends it (onRead).
      this.socket.resume();
      return;
    }
    this.destroy();
  }

  resume(): void {
    if (this.phase !== 'closed') this.socket.resume();
  }

  /** Closes the connection; the exchange in progress, if any, fails with `err`. */
  destroy(err = new FileGetError('the connection was closed')): void {
    this.fail(err);
  }

  private onTimeout(): void {
    if (this.phase === 'idle') this.destroy();
    else if (this.phase === 'body') this.fail(new FileGetError(`the agent's body paused for more than ${this.opts.idleTimeoutMs} ms`, 'BODY_TIMEOUT'));
    else this.fail(new FileGetError(`the agent did not answer within ${this.opts.headersTimeoutMs} ms`, 'HEADERS_TIMEOUT'));
  }

  private fail(err: FileGetError): void {
    const x = this.current;
    this.current = undefined;
    if (this.phase !== 'closed') {
      this.phase = 'closed';
      this.pool.unpark(this);
      this.socket.destroy();
    }
    x?.fail(err);
  }
}

/** One GET: its answer's head, then its body. */
class Exchange implements FileBody {
  readonly answer: Promise<FileResponse>;
  private settleAnswer!: { resolve: (r: FileResponse) => void; reject: (e: Error) => void };
  private onData: ((view: Buffer) => boolean) | undefined;
  private pending: Buffer | undefined;
  private remaining = 0;
  private reusable = true;
  private keepMs = 0;
  private state: 'head' | 'waiting' | 'pumping' | 'done' | 'failed' = 'head';
  private failure: Error | undefined;
  private settlePump: { resolve: () => void; reject: (e: Error) => void } | undefined;
  private readonly onAbort: () => void;

  constructor(private readonly conn: Connection, private readonly reused: boolean, private readonly signal: AbortSignal | undefined) {
    this.answer = new Promise<FileResponse>((resolve, reject) => {
      this.settleAnswer = { resolve, reject };
    });
    this.onAbort = () => this.conn.destroy(new FileGetError(`aborted: ${String((signal?.reason as Error | undefined)?.message ?? signal?.reason)}`, 'ABORT_ERR'));
    signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  /** The head is in: hand the answer over; the body waits for its pump. */
  start(head: ParsedHead, rest: Buffer, keepMs: number): boolean {
    this.remaining = head.length;
    this.reusable = head.keepAlive;
    this.keepMs = keepMs;
    this.state = 'waiting';
    if (rest.length > 0) this.pending = Buffer.from(rest);
    this.settleAnswer.resolve({ status: head.status, headers: head.headers, length: head.length, body: this });
    if (this.remaining === 0 && !this.pending) {
      this.finish();
      return true;
    }
    return false;
  }

  pump(onData: (view: Buffer) => boolean): Promise<void> {
    if (this.state === 'failed') return Promise.reject(this.failure!);
    if (this.state === 'done') return Promise.resolve();
    if (this.state !== 'waiting') return Promise.reject(new Error('a body is pumped once'));
    this.state = 'pumping';
    this.onData = onData;
    const pumped = new Promise<void>((resolve, reject) => {
      this.settlePump = { resolve, reject };
    });
    const pending = this.pending;
    this.pending = undefined;
    let more = true;
    try {
      if (pending) more = this.deliver(pending);
    } catch (err) {
      this.conn.destroy(err instanceof FileGetError ? err : new FileGetError((err as Error).message));
      return pumped;
    }
    if (more && this.state === 'pumping') this.conn.resume();
    return pumped;
  }

  /** A piece of the body from the socket (or what came with the head). */
  deliver(view: Buffer): boolean {
    if (this.state === 'waiting') {
      // The socket was asked to pause; a piece already on its way waits copied.
      this.pending = this.pending ? Buffer.concat([this.pending, view]) : Buffer.from(view);
      return false;
    }
    let piece = view;
    if (piece.length > this.remaining) {
      // Bytes past the length: the body is what the length says, the connection is not reused.
      this.reusable = false;
      piece = piece.subarray(0, this.remaining);
    }
    this.remaining -= piece.length;
    const more = piece.length > 0 ? this.onData!(piece) : true;
    if (this.remaining === 0) {
      this.finish();
      return true;
    }
    return more;
  }

  resume(): void {
    if (this.state === 'pumping') this.conn.resume();
  }

  destroy(err?: Error): void {
    // After its end the connection belongs to the pool (or the next GET): nothing to give up.
    if (this.state === 'done' || this.state === 'failed') return;
    this.conn.destroy(new FileGetError(err?.message ?? 'the body was given up'));
  }

  async text(limit: number): Promise<string> {
    const pieces: Buffer[] = [];
    let kept = 0;
    if (this.remaining > limit) {
      // Not worth reading: the first bytes that are here, then the connection goes.
      const here = this.pending?.subarray(0, limit).toString('utf8') ?? '';
      this.destroy();
      return here;
    }
    await this.pump((view) => {
      pieces.push(Buffer.from(view));
      kept += view.length;
      return true;
    });
    return Buffer.concat(pieces, kept).toString('utf8');
  }

  fail(err: FileGetError): void {
    if (this.state === 'done' || this.state === 'failed') return;
    const wasHead = this.state === 'head';
    this.state = 'failed';
    this.failure = err;
    this.signal?.removeEventListener('abort', this.onAbort);
    if (wasHead) {
      this.settleAnswer.reject(this.reused && err.code !== 'ABORT_ERR' && err.code !== 'HEADERS_TIMEOUT' ? new UnansweredError(err.message, err.code) : err);
      return;
    }
    this.settlePump?.reject(err);
  }

  private finish(): void {
    this.state = 'done';
    this.signal?.removeEventListener('abort', this.onAbort);
    this.conn.finished(this.reusable, this.keepMs);
    this.settlePump?.resolve();
  }
}

interface ParsedHead {
  status: number;
  headers: Map<string, string>;
  length: number;
  keepAlive: boolean;
  keepAliveMs: number;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

function parseHead(text: string): ParsedHead {
  const lines = text.split('\r\n');
  const status = /^HTTP\/1\.1 ([1-5]\d\d)(?: .*)?$/.exec(lines[0]!);
  if (!status) throw new FileGetError(`not an HTTP/1.1 answer: ${JSON.stringify(lines[0]!.slice(0, 80))}`);
  const headers = new Map<string, string>();
  const lengths: string[] = [];
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    const name = line.slice(0, colon).toLowerCase();
    if (colon <= 0 || !TOKEN.test(name)) throw new FileGetError(`a malformed header line: ${JSON.stringify(line.slice(0, 80))}`);
    const value = line.slice(colon + 1).trim();
    if (name === 'content-length') lengths.push(value);
    const before = headers.get(name);
    headers.set(name, before === undefined ? value : `${before}, ${value}`);
  }
  const code = Number(status[1]);
  if (code < 200) throw new FileGetError(`an interim answer (${code}) to a GET`);
  if (headers.has('transfer-encoding')) throw new FileGetError(`a ${code} answer with Transfer-Encoding ${JSON.stringify(headers.get('transfer-encoding'))}: file bodies are framed by Content-Length`);
  if (lengths.length !== 1 || !/^\d{1,16}$/.test(lengths[0]!)) throw new FileGetError(`a ${code} answer without one Content-Length (${JSON.stringify(lengths)})`);
  const connection = (headers.get('connection') ?? '').toLowerCase().split(',').map((s) => s.trim());
  const timeout = /(?:^|,)\s*timeout=(\d+)/i.exec(headers.get('keep-alive') ?? '');
  const keepAliveMs = timeout ? Number(timeout[1]) * 1000 - KEEP_ALIVE_MARGIN_MS : Infinity;
  return { status: code, headers, length: Number(lengths[0]), keepAlive: !connection.includes('close'), keepAliveMs };
}

function requestBytes(target: FileGetTarget, path: string, headers: Record<string, string>): Buffer {
  if (!/^\/[\x21-\x7e]*$/.test(path)) throw new FileGetError(`not a request path: ${JSON.stringify(path.slice(0, 80))}`);
  const host = target.host.includes(':') ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`;
  let text = `GET ${path} HTTP/1.1\r\nhost: ${host}\r\n`;
  for (const [name, value] of Object.entries(headers)) {
    // A header value with a line break would be a second header (or request): refused.
    if (!TOKEN.test(name) || /[\r\n\0]/.test(value)) throw new FileGetError(`refused to send header ${JSON.stringify(name)}`);
    text += `${name}: ${value}\r\n`;
  }
  return Buffer.from(`${text}\r\n`, 'latin1');
}

function keyOf(target: FileGetTarget): string {
  return `${target.host}|${target.port}|${target.servername}`;
}
