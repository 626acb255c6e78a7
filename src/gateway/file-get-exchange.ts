// One GET on an agent's connection (file-get.ts): its answer's head handed over, then its
// body pumped as views of the connection's read buffer, exactly as long as Content-Length
// says (push-body.ts). The connection is told when the body ended cleanly (it may be reused)
// and asked to pause, resume or close.
import type { PushBody } from './push-body.js';
import { FileGetError, UnansweredError, type ParsedHead } from './file-get-wire.js';

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

/** What an exchange needs of its connection. */
export interface ExchangeConnection {
  /** The body ended where its length said: reuse the connection if `reusable`, for up to `keepMs`. */
  finished(reusable: boolean, keepMs: number): void;
  resume(): void;
  destroy(err?: FileGetError): void;
}

/** One GET: its answer's head, then its body. */
export class Exchange implements FileBody {
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

  constructor(private readonly conn: ExchangeConnection, private readonly reused: boolean, private readonly signal: AbortSignal | undefined) {
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

