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
// The wire format is file-get-wire.ts's; one GET's answer and body, file-get-exchange.ts's.
import type { OnReadOpts } from 'node:net';
import { connect, type ConnectionOptions, type SecureContext, type TLSSocket } from 'node:tls';
import { Exchange, type ExchangeConnection, type FileResponse } from './file-get-exchange.js';
import { FileGetError, parseHead, requestBytes, UnansweredError, type FileGetTarget } from './file-get-wire.js';

export type { FileBody, FileResponse } from './file-get-exchange.js';
export { FileGetError, type FileGetTarget } from './file-get-wire.js';

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

/** The largest TLS record's plaintext: SSL_read hands over at most one record per call. */
const READ_BYTES = 16 * 1024;
/** An agent's answer head is a few hundred bytes. */
const MAX_HEAD_BYTES = 16 * 1024;

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

type Phase = 'head' | 'body' | 'idle' | 'closed';

/** One TLS connection to an agent, one GET at a time. */
class Connection implements ExchangeConnection {
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

function keyOf(target: FileGetTarget): string {
  return `${target.host}|${target.port}|${target.servername}`;
}
