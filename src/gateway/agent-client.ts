// The gateway's side of the agent API: HTTPS to the agent's address, the agent's
// certificate checked against the agents' CA and service name; the gateway proves itself
// with a client certificate from that CA (mutual TLS), and presents its ServiceAccount
// token (audience kube-pcap-agent) only for the agent's SubjectAccessReview of the
// namespace: a token alone opens no agent (docs/security.md).
import { readFile, stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { createSecureContext } from 'node:tls';
import type { Logger } from 'pino';
import { Agent, request, type Dispatcher } from 'undici';
import { etagOf } from '../pcap/file-names.js';
import { ReloadingAgent } from '../tls/reloading-agent.js';
import type { AgentEndpoint } from './agent-directory.js';
import { FileGetPool, type FileResponse } from './file-get.js';
import type { PushBody } from './push-body.js';
import { AGENT_ANSWER_LIMITS, agentPath, type AgentFile } from '../contract/agent-api.js';
import { InvalidListingError, isCaptureFileName, parseListing, parsePin, type AgentPin } from './agent-listing.js';

export type { AgentFile } from '../contract/agent-api.js';
export type { AgentPin } from './agent-listing.js';

/** The agent could not be asked, or did not answer as the contract says. */
export class AgentError extends Error {
  /** `status`: the agent's HTTP answer, when it answered; `answer`: its own message then. */
  constructor(readonly node: string, message: string, readonly status?: number, readonly answer?: string) {
    super(`agent of node ${node}: ${message}`);
    this.name = 'AgentError';
  }
}

export interface AgentClientOptions {
  caFile: string;
  /** The gateway's client certificate and key for the agents (mutual TLS). */
  certFile: string;
  keyFile: string;
  serverName: string;
  tokenFile: string;
  log: Logger;
  /** Time allowed for an agent to start answering. */
  timeoutMs: number;
  /** Longest pause inside a file transfer (a stalled client pauses us too). */
  idleTimeoutMs?: number;
}

const ERROR_BODY_BYTES = AGENT_ANSWER_LIMITS.errorBytes;

/**
 * At most `max` bytes of an answer's body: `whole` is false when there was more, which is
 * then not read (the connection is closed rather than drained).
 */
async function readUpTo(body: Dispatcher.ResponseData['body'], max: number): Promise<{ data: Buffer; whole: boolean }> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    if (n + chunk.length > max) {
      chunks.push(chunk.subarray(0, max - n));
      body.destroy();
      return { data: Buffer.concat(chunks, max), whole: false };
    }
    chunks.push(chunk);
    n += chunk.length;
  }
  return { data: Buffer.concat(chunks, n), whole: true };
}

export class AgentClient {
  private readonly https: ReloadingAgent;
  /** File bodies (the bulk of a download) go through a leaner client than undici (file-get.ts). */
  private files: FileGetPool | undefined;
  private token: { value: string; mtimeMs: number } | undefined;

  constructor(private readonly opts: AgentClientOptions) {
    const idleTimeoutMs = opts.idleTimeoutMs ?? 120_000;
    const keepAliveMs = 30_000;
    // The agents' CA and the gateway's client certificate follow their Secret's files: both
    // clients are rebuilt from them, and connections made with the old ones end with their use.
    this.https = new ReloadingAgent({ caFile: opts.caFile, certFile: opts.certFile, keyFile: opts.keyFile }, ({ ca, cert, key }) => {
      this.files?.close();
      this.files = new FileGetPool(createSecureContext({ ca, cert, key }), { headersTimeoutMs: opts.timeoutMs, idleTimeoutMs, keepAliveMs, maxIdlePerAgent: 2 });
      return new Agent({
        connect: { ca, cert, key, servername: opts.serverName, rejectUnauthorized: true },
        headersTimeout: opts.timeoutMs,
        bodyTimeout: idleTimeoutMs,
        keepAliveTimeout: keepAliveMs,
      });
    }, { what: 'agents\' CA and the gateway\'s client certificate', log: opts.log });
  }

  /** The projected token file is rotated by the kubelet: re-read it whenever it changes. */
  private async bearer(): Promise<string> {
    const { mtimeMs } = await stat(this.opts.tokenFile);
    if (!this.token || this.token.mtimeMs !== mtimeMs) {
      this.token = { value: (await readFile(this.opts.tokenFile, 'utf8')).trim(), mtimeMs };
    }
    return this.token.value;
  }

  private url(ep: AgentEndpoint, path: string): string {
    const host = ep.address.includes(':') ? `[${ep.address}]` : ep.address;
    return `https://${host}:${ep.port}${path}`;
  }

  private async call(ep: AgentEndpoint, method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, signal?: AbortSignal, headers: Record<string, string> = {}): Promise<Dispatcher.ResponseData> {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(this.url(ep, path), {
        method,
        dispatcher: this.https.current,
        headers: { ...headers, authorization: `Bearer ${await this.bearer()}` },
        signal,
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string }; code?: string }).cause;
      throw new AgentError(ep.node, `${(err as { code?: string }).code ?? cause?.code ?? ''} ${(err as Error).message}`.trim());
    }
    if (res.statusCode >= 300) {
      const text = await readUpTo(res.body, ERROR_BODY_BYTES).then(({ data }) => data.toString(), () => '');
      const answer = statusMessage(text);
      throw new AgentError(ep.node, `${method} ${path} answered ${res.statusCode}: ${answer}`, res.statusCode, `${res.statusCode}: ${answer}`);
    }
    return res;
  }

  /** A file's GET through the file client: its answer's head, the body still to be pumped. */
  private async getFile(ep: AgentEndpoint, path: string, signal: AbortSignal | undefined, headers: Record<string, string>): Promise<FileResponse> {
    let res: FileResponse;
    try {
      res = await this.files!.get({ host: ep.address, port: ep.port, servername: this.opts.serverName }, path, { ...headers, authorization: `Bearer ${await this.bearer()}` }, signal);
    } catch (err) {
      throw new AgentError(ep.node, `${(err as { code?: string }).code ?? ''} ${(err as Error).message}`.trim());
    }
    if (res.status >= 300) {
      const text = await res.body.text(ERROR_BODY_BYTES).catch(() => '');
      const answer = statusMessage(text);
      throw new AgentError(ep.node, `GET ${path} answered ${res.status}: ${answer}`, res.status, `${res.status}: ${answer}`);
    }
    return res;
  }

  /**
   * The node's files, each checked (InvalidListingError for anything off-contract). The
   * whole listing must arrive within the agent timeout: one stuck agent among a thousand
   * costs a download that long, not the body timeout.
   */
  async list(ep: AgentEndpoint, namespace: string, name: string): Promise<AgentFile[]> {
    return parseListing(ep.node, await this.json(ep, 'GET', agentPath('files', { namespace, name })));
  }

  /** Pins the node's files for a download: they are served as listed until released (src/agent/file-pins.ts). */
  async pin(ep: AgentEndpoint, namespace: string, name: string): Promise<AgentPin> {
    return parsePin(ep.node, await this.json(ep, 'POST', agentPath('pins', { namespace, name })));
  }

  /** Keeps a pin while its download runs. */
  async renewPin(ep: AgentEndpoint, namespace: string, name: string, pin: string): Promise<void> {
    await this.json(ep, 'PUT', agentPath('pin', { namespace, name, pin }));
  }

  async releasePin(ep: AgentEndpoint, namespace: string, name: string, pin: string): Promise<void> {
    await this.json(ep, 'DELETE', agentPath('pin', { namespace, name, pin }));
  }

  /** A JSON answer, whole within the agent timeout. */
  private async json(ep: AgentEndpoint, method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string): Promise<unknown> {
    const deadline = AbortSignal.timeout(this.opts.timeoutMs);
    const res = await this.call(ep, method, path, deadline);
    return await this.jsonBody(ep, res, `${method} ${path}`, deadline);
  }

  /** A JSON body of at most AGENT_ANSWER_LIMITS.jsonBytes, parsed. */
  private async jsonBody(ep: AgentEndpoint, res: Dispatcher.ResponseData, what: string, deadline?: AbortSignal): Promise<unknown> {
    const max = AGENT_ANSWER_LIMITS.jsonBytes;
    const declared = Number(res.headers['content-length'] ?? 0);
    if (declared > max) {
      res.body.destroy();
      throw new InvalidListingError(ep.node, `the answer to ${what} is ${declared} bytes, more than the ${max} the gateway reads`);
    }
    let read: { data: Buffer; whole: boolean };
    try {
      read = await readUpTo(res.body, max);
    } catch {
      if (deadline?.aborted) throw new AgentError(ep.node, `the answer to ${what} did not arrive within ${this.opts.timeoutMs} ms`);
      throw new AgentError(ep.node, `the answer to ${what} broke off`);
    }
    if (!read.whole) throw new InvalidListingError(ep.node, `the answer to ${what} is more than the ${max} bytes the gateway reads`);
    try {
      return JSON.parse(read.data.toString()) as unknown;
    } catch {
      throw new InvalidListingError(ep.node, `the answer to ${what} is not JSON`);
    }
  }

  /**
   * A pinned file's bytes: exactly the listed file at its listed size, or an error before
   * any of it is used. The agent's ETag must be the listed identity and its length the
   * listed size; If-Match makes the agent refuse anything else as well.
   */
  async openPinned(ep: AgentEndpoint, namespace: string, name: string, pin: string, file: AgentFile, signal?: AbortSignal): Promise<{ body: PushBody; length: number }> {
    const etag = etagOf(file.identity);
    const res = await this.getFile(ep, agentPath('pinnedFile', { namespace, name, pin, file: file.name }), signal, { 'if-match': etag });
    const got = res.headers.get('etag');
    if (got !== etag || res.length !== file.size) {
      res.body.destroy();
      throw new AgentError(ep.node, `pinned ${file.name} came as ${String(got)} with ${res.length} bytes, not as listed (${etag}, ${file.size} bytes)`);
    }
    return { body: res.body, length: res.length };
  }

  /** The pin's files on this node as one time-ordered pcapng (src/agent/node-pcapng.ts); its length is not known ahead. */
  async openPinnedPcapng(ep: AgentEndpoint, namespace: string, name: string, pin: string, signal?: AbortSignal): Promise<Readable> {
    const res = await this.call(ep, 'GET', agentPath('pinnedPcapng', { namespace, name, pin }), signal);
    const type = String(res.headers['content-type'] ?? '');
    if (!type.startsWith('application/x-pcapng')) {
      res.body.destroy();
      throw new AgentError(ep.node, `the node's pcapng came as ${JSON.stringify(type.slice(0, 80))}, not application/x-pcapng`);
    }
    return res.body;
  }

  /**
   * The node's live pcapng of the capture from `sinceMicros` on (src/agent/live-follow.ts): open
   * until either side closes it. Its heartbeats keep it inside the body timeout.
   */
  async openLive(ep: AgentEndpoint, namespace: string, name: string, sinceMicros: number, signal?: AbortSignal): Promise<Readable> {
    const since = new Date(Math.floor(sinceMicros / 1000)).toISOString();
    const res = await this.call(ep, 'GET', `${agentPath('stream', { namespace, name })}?since=${enc(since)}`, signal);
    const type = String(res.headers['content-type'] ?? '');
    if (!type.startsWith('application/x-pcapng')) {
      res.body.destroy();
      throw new AgentError(ep.node, `the node's live stream came as ${JSON.stringify(type.slice(0, 80))}, not application/x-pcapng`);
    }
    return res.body;
  }

  async deleteFiles(ep: AgentEndpoint, namespace: string, name: string): Promise<string[]> {
    const res = await this.call(ep, 'DELETE', agentPath('files', { namespace, name }));
    const body = (await this.jsonBody(ep, res, 'DELETE files').catch(() => undefined)) as { removed?: unknown } | undefined;
    const removed = body?.removed;
    if (!Array.isArray(removed) || removed.length > AGENT_ANSWER_LIMITS.listingEntries || !removed.every(isCaptureFileName)) throw new InvalidListingError(ep.node, 'the list of removed files is not a list of plain *.pcap names');
    return removed;
  }

  async close(): Promise<void> {
    this.files?.close();
    await this.https.close();
  }
}

/** An agent's error answer: the message of its Status object, or the start of its text. */
function statusMessage(text: string): string {
  try {
    const message = (JSON.parse(text) as { message?: unknown }).message;
    if (typeof message === 'string') return message;
  } catch {
    // not a Status object: keep the text
  }
  return text.slice(0, 300);
}

const enc = encodeURIComponent;
