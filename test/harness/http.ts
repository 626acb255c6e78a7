// HTTPS from tests: undici with the test CA, and the real curl.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { Agent, request } from 'undici';

export interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  json<T = Record<string, unknown>>(): T;
}

const agents = new Map<string, Agent>();

async function dispatcher(caFile: string, servername?: string, clientCert?: { certFile: string; keyFile: string }): Promise<Agent> {
  const key = `${caFile}|${servername ?? ''}|${clientCert?.certFile ?? ''}`;
  let a = agents.get(key);
  if (!a) {
    const identity = clientCert ? { cert: await readFile(clientCert.certFile), key: await readFile(clientCert.keyFile) } : {};
    a = new Agent({ connect: { ca: await readFile(caFile), ...(servername ? { servername } : {}), ...identity } });
    agents.set(key, a);
  }
  return a;
}

export interface HttpsOptions {
  caFile: string;
  token?: string;
  method?: 'GET' | 'DELETE' | 'POST';
  headers?: Record<string, string>;
  body?: string;
  servername?: string;
  /** A client certificate to present (mutual TLS). */
  clientCert?: { certFile: string; keyFile: string };
  /** Fail when headers or body have not arrived in this long (a server that hangs). */
  timeoutMs?: number;
}

export async function https(url: string, opts: HttpsOptions): Promise<Response> {
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  const timeouts = opts.timeoutMs !== undefined ? { headersTimeout: opts.timeoutMs, bodyTimeout: opts.timeoutMs } : {};
  const res = await request(url, { method: opts.method ?? 'GET', headers, body: opts.body, dispatcher: await dispatcher(opts.caFile, opts.servername, opts.clientCert), ...timeouts });
  const body = Buffer.from(await res.body.arrayBuffer());
  return {
    status: res.statusCode,
    headers: res.headers,
    body,
    json: <T>() => JSON.parse(body.toString('utf8')) as T,
  };
}

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (stdout/stderr captured, never a shell). */
export async function run(cmd: string, args: string[], opts: { cwd?: string; timeoutMs?: number; maxBuffer?: number; env?: NodeJS.ProcessEnv } = {}): Promise<CommandResult> {
  return await new Promise((resolve) => {
    execFile(cmd, args, { cwd: opts.cwd, env: opts.env, timeout: opts.timeoutMs ?? 120_000, maxBuffer: opts.maxBuffer ?? 64 << 20, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Whether something accepts TCP connections at host:port now. */
export async function portOpen(host: string, port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const s = createConnection({ host, port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

/** The entries of a zip file in its own order, as unzip lists them (throws if unzip cannot read it). */
export async function zipEntries(file: string): Promise<string[]> {
  const r = await run('unzip', ['-Z1', file]);
  if (r.code !== 0) throw new Error(`unzip -Z1 ${file}: ${r.stderr || r.stdout}`);
  return r.stdout.split('\n').filter(Boolean);
}
