// The HTTP/1.1 that the agents' file client speaks (file-get.ts): the request it sends and
// the answer heads it accepts. Only what the agents' file endpoints send: a status line,
// token-named headers, and exactly one Content-Length; anything else is an error, never a
// guess. A request is refused rather than sent when a path or header could smuggle a second
// line.

/** Margin under the agent's announced keep-alive, so that it never closes a connection we are about to use. */
const KEEP_ALIVE_MARGIN_MS = 1_000;

export interface FileGetTarget {
  host: string;
  port: number;
  /** The name the agent's certificate must carry. */
  servername: string;
}

/** The GET failed before or while its answer arrived; `code` is the socket's or TLS's error code. */
export class FileGetError extends Error {
  constructor(message: string, readonly code?: string) {
    super(message);
    this.name = 'FileGetError';
  }
}

/**
 * A reused connection failed before a whole answer head: closed under us, or bytes that were
 * no answer (the tail of an agent's previous answer, past its length, arriving after the
 * connection was parked: found by test/unit/file-get-fuzz.test.ts). A GET: safe to ask again,
 * once, on a new connection.
 */
export class UnansweredError extends FileGetError {}

export interface ParsedHead {
  status: number;
  headers: Map<string, string>;
  length: number;
  keepAlive: boolean;
  keepAliveMs: number;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

export function parseHead(text: string): ParsedHead {
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

export function requestBytes(target: FileGetTarget, path: string, headers: Record<string, string>): Buffer {
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

