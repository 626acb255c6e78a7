// The gateway's side of the agent API: HTTPS to the agent's address, the agent's
// certificate checked against the agents' CA and service name; the gateway proves itself
// with a client certificate from that CA (mutual TLS), and presents its ServiceAccount
// token (audience kube-pcap-agent) only for the agent's SubjectAccessReview of the
// namespace: a token alone opens no agent (docs/security.md).
import { readFile, stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { Agent, request, type Dispatcher } from 'undici';
import { etagOf } from '../pcap/file-names.js';
import { ReloadingAgent } from '../tls/reloading-agent.js';
import type { AgentEndpoint } from './agent-directory.js';
import { InvalidListingError, isCaptureFileName, parseListing, parsePin, type AgentFile, type AgentPin } from './agent-listing.js';

export type { AgentFile, AgentPin } from './agent-listing.js';

/** The agent could not be asked, or did not answer as the contract says. */
export class AgentError extends Error {
  constructor(readonly node: string, message: string, readonly status?: number) {
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

export class AgentClient {
  private readonly https: ReloadingAgent;
  private token: { value: string; mtimeMs: number } | undefined;

  constructor(private readonly opts: AgentClientOptions) {
    // The agents' CA and the gateway's client certificate follow their Secret's files.
    this.https = new ReloadingAgent({ caFile: opts.caFile, certFile: opts.certFile, keyFile: opts.keyFile }, ({ ca, cert, key }) => new Agent({
      connect: { ca, cert, key, servername: opts.serverName, rejectUnauthorized: true },
      headersTimeout: opts.timeoutMs,
      bodyTimeout: opts.idleTimeoutMs ?? 120_000,
      keepAliveTimeout: 30_000,
    }), { what: 'agents\' CA and the gateway\'s client certificate', log: opts.log });
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
      const text = await res.body.text().catch(() => '');
      let message = text.slice(0, 300);
      try {
        message = (JSON.parse(text) as { message?: string }).message ?? message;
      } catch {
        // not a Status object: keep the text
      }
      throw new AgentError(ep.node, `${method} ${path} answered ${res.statusCode}: ${message}`, res.statusCode);
    }
    return res;
  }

  /**
   * The node's files, each checked (InvalidListingError for anything off-contract). The
   * whole listing must arrive within the agent timeout: one stuck agent among a thousand
   * costs a download that long, not the body timeout.
   */
  async list(ep: AgentEndpoint, namespace: string, name: string): Promise<AgentFile[]> {
    return parseListing(ep.node, await this.json(ep, 'GET', `/v1/captures/${enc(namespace)}/${enc(name)}/files`));
  }

  /** Pins the node's files for a download: they are served as listed until released (src/agent/file-pins.ts). */
  async pin(ep: AgentEndpoint, namespace: string, name: string): Promise<AgentPin> {
    return parsePin(ep.node, await this.json(ep, 'POST', `/v1/captures/${enc(namespace)}/${enc(name)}/pins`));
  }

  /** Keeps a pin while its download runs. */
  async renewPin(ep: AgentEndpoint, namespace: string, name: string, pin: string): Promise<void> {
    await this.json(ep, 'PUT', `/v1/captures/${enc(namespace)}/${enc(name)}/pins/${enc(pin)}`);
  }

  async releasePin(ep: AgentEndpoint, namespace: string, name: string, pin: string): Promise<void> {
    await this.json(ep, 'DELETE', `/v1/captures/${enc(namespace)}/${enc(name)}/pins/${enc(pin)}`);
  }

  /** A JSON answer, whole within the agent timeout. */
  private async json(ep: AgentEndpoint, method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string): Promise<unknown> {
    const deadline = AbortSignal.timeout(this.opts.timeoutMs);
    const res = await this.call(ep, method, path, deadline);
    try {
      return await res.body.json();
    } catch {
      if (deadline.aborted) throw new AgentError(ep.node, `the answer to ${method} ${path} did not arrive within ${this.opts.timeoutMs} ms`);
      throw new InvalidListingError(ep.node, `the answer to ${method} ${path} is not JSON`);
    }
  }

  /** The file's bytes as a stream that errors if the transfer is cut short. */
  async open(ep: AgentEndpoint, namespace: string, name: string, file: string, signal?: AbortSignal): Promise<{ body: Readable; length: number | undefined }> {
    const res = await this.call(ep, 'GET', `/v1/captures/${enc(namespace)}/${enc(name)}/files/${enc(file)}`, signal);
    const len = Number(res.headers['content-length']);
    return { body: res.body, length: Number.isFinite(len) ? len : undefined };
  }

  /**
   * A pinned file's bytes: exactly the listed file at its listed size, or an error before
   * any of it is used. The agent's ETag must be the listed identity and its length the
   * listed size; If-Match makes the agent refuse anything else as well.
   */
  async openPinned(ep: AgentEndpoint, namespace: string, name: string, pin: string, file: AgentFile, signal?: AbortSignal): Promise<{ body: Readable; length: number }> {
    const etag = etagOf(file.identity);
    const res = await this.call(ep, 'GET', `/v1/captures/${enc(namespace)}/${enc(name)}/pins/${enc(pin)}/files/${enc(file.name)}`, signal, { 'if-match': etag });
    const length = Number(res.headers['content-length']);
    if (res.headers.etag !== etag || length !== file.size) {
      res.body.destroy();
      throw new AgentError(ep.node, `pinned ${file.name} came as ${String(res.headers.etag)} with ${String(res.headers['content-length'])} bytes, not as listed (${etag}, ${file.size} bytes)`);
    }
    return { body: res.body, length };
  }

  /** The pin's files on this node as one time-ordered pcapng (src/agent/node-pcapng.ts); its length is not known ahead. */
  async openPinnedPcapng(ep: AgentEndpoint, namespace: string, name: string, pin: string, signal?: AbortSignal): Promise<Readable> {
    const res = await this.call(ep, 'GET', `/v1/captures/${enc(namespace)}/${enc(name)}/pins/${enc(pin)}/files.pcapng`, signal);
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
    const res = await this.call(ep, 'GET', `/v1/captures/${enc(namespace)}/${enc(name)}/stream?since=${enc(since)}`, signal);
    const type = String(res.headers['content-type'] ?? '');
    if (!type.startsWith('application/x-pcapng')) {
      res.body.destroy();
      throw new AgentError(ep.node, `the node's live stream came as ${JSON.stringify(type.slice(0, 80))}, not application/x-pcapng`);
    }
    return res.body;
  }

  async deleteFiles(ep: AgentEndpoint, namespace: string, name: string): Promise<string[]> {
    const res = await this.call(ep, 'DELETE', `/v1/captures/${enc(namespace)}/${enc(name)}/files`);
    const body = (await res.body.json().catch(() => undefined)) as { removed?: unknown } | undefined;
    const removed = body?.removed;
    if (!Array.isArray(removed) || !removed.every(isCaptureFileName)) throw new InvalidListingError(ep.node, 'the list of removed files is not a list of plain *.pcap names');
    return removed;
  }

  async close(): Promise<void> {
    await this.https.close();
  }
}

const enc = encodeURIComponent;
