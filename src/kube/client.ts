// A small Kubernetes REST client over one keep-alive connection pool.
//
// Requests go through here rather than @kubernetes/client-node's generated clients because
// those open a new connection pool for every request (too slow for a review on every
// download), and because callers need to tell "the API server said no" (KubeApiError) from
// "the API server could not be asked" (KubeUnavailableError): the gateway fails closed with
// 503 on the second, and nothing retried is ever treated as an answer.
import { Readable } from 'node:stream';
import { Agent, fetch, type Dispatcher } from 'undici';

export interface KubeStatus {
  kind?: string;
  status?: string;
  message?: string;
  reason?: string;
  code?: number;
  details?: unknown;
}

/** The API server answered with a 4xx status (not 429). */
/** Where the API server is and how to present ourselves to it (config.ts finds one). */
export interface Connection {
  server: string;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  insecureSkipTlsVerify?: boolean;
  tlsServerName?: string;
  /** The Authorization header to send now (tokens are rotated on disk). */
  authorization: () => Promise<string | undefined>;
}

export class KubeApiError extends Error {
  constructor(readonly status: number, readonly body: KubeStatus, what: string) {
    super(`${what}: ${status} ${body.reason ?? ''} ${body.message ?? ''}`.trim());
    this.name = 'KubeApiError';
  }
  get reason(): string | undefined {
    return this.body.reason;
  }
}

/** The API server could not be reached, timed out, or answered 5xx/429. */
export class KubeUnavailableError extends Error {
  constructor(message: string, cause?: unknown) {
    super(message, { cause });
    this.name = 'KubeUnavailableError';
  }
}

export interface KubeRequest {
  method?: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  path: string;
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  /** Defaults to application/json when there is a body. */
  contentType?: string;
  /** Defaults to application/json; e.g. PartialObjectMetadata for metadata-only reads. */
  accept?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
}

const DEFAULT_TIMEOUT_MS = 10_000;

export class KubeClient {
  private constructor(
    readonly server: string,
    private readonly authorization: Connection['authorization'],
    private readonly dispatcher: Dispatcher,
  ) {}

  static fromConnection(conn: Connection): KubeClient {
    const dispatcher = new Agent({
      connect: {
        ca: conn.ca,
        cert: conn.cert,
        key: conn.key,
        servername: conn.tlsServerName,
        rejectUnauthorized: !conn.insecureSkipTlsVerify,
      },
      keepAliveTimeout: 30_000,
      connections: 32,
    });
    return new KubeClient(conn.server.replace(/\/+$/, ''), conn.authorization, dispatcher);
  }

  private async headers(): Promise<Record<string, string>> {
    const auth = await this.authorization();
    return auth ? { authorization: auth } : {};
  }

  url(path: string, query?: KubeRequest['query']): string {
    const u = new URL(this.server + path);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) u.searchParams.set(k, String(v));
    return u.toString();
  }

  private async send(req: KubeRequest, accept: string): Promise<Awaited<ReturnType<typeof fetch>>> {
    const what = `${req.method ?? 'GET'} ${req.path}`;
    const signals = [AbortSignal.timeout(req.timeoutMs ?? DEFAULT_TIMEOUT_MS)];
    if (req.signal) signals.push(req.signal);
    const headers: Record<string, string> = { ...(await this.headers()), accept };
    let body: string | undefined;
    if (req.body !== undefined) {
      headers['content-type'] = req.contentType ?? 'application/json';
      body = typeof req.body === 'string' ? req.body : JSON.stringify(req.body);
    }
    let res;
    try {
      res = await fetch(this.url(req.path, req.query), {
        method: req.method ?? 'GET',
        headers,
        body,
        dispatcher: this.dispatcher,
        signal: AbortSignal.any(signals),
      });
    } catch (err) {
      if (req.signal?.aborted) throw err;
      throw new KubeUnavailableError(`${what}: ${describeFetchError(err)}`, err);
    }
    if (res.status >= 500 || res.status === 429) {
      const text = await res.text().catch(() => '');
      throw new KubeUnavailableError(`${what}: API server answered ${res.status} ${text.slice(0, 200)}`);
    }
    if (res.status >= 400) {
      const text = await res.text().catch(() => '');
      let status: KubeStatus;
      try {
        status = JSON.parse(text) as KubeStatus;
      } catch {
        status = { message: text.slice(0, 500) };
      }
      throw new KubeApiError(res.status, status, what);
    }
    return res;
  }

  async request<T>(req: KubeRequest): Promise<T> {
    const res = await this.send(req, req.accept ?? 'application/json');
    try {
      return (await res.json()) as T;
    } catch (err) {
      throw new KubeUnavailableError(`${req.method ?? 'GET'} ${req.path}: unreadable response: ${describeFetchError(err)}`, err);
    }
  }

  /** A streaming GET (watch): the body as a Node stream; the caller must consume or destroy it. */
  async stream(req: KubeRequest): Promise<Readable> {
    const res = await this.send(req, req.accept ?? 'application/json');
    if (!res.body) throw new KubeUnavailableError(`GET ${req.path}: empty body`);
    return Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>);
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }
}

function describeFetchError(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as { cause?: unknown }).cause;
    const detail = cause instanceof Error ? `: ${(cause as { code?: string }).code ?? ''} ${cause.message}`.trimEnd() : '';
    return `${err.name === 'TimeoutError' ? 'timed out' : err.message}${detail}`;
  }
  return String(err);
}
