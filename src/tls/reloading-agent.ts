// An HTTPS client (undici Agent) whose trust and identity follow their files: a CA bundle,
// and optionally a client certificate and key. When the files change, new requests use a
// new Agent built from them; the old one closes once its requests are done.
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import type { Logger } from 'pino';
import { Agent } from 'undici';
import { checkCaBundle } from './ca-bundle.js';
import { watchFiles } from './file-watch.js';

export interface ClientTlsFiles {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

export interface ClientTls {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

function check(files: ClientTlsFiles, tls: ClientTls): ClientTls {
  if (tls.ca) checkCaBundle(tls.ca, files.caFile ?? 'CA bundle');
  if (tls.cert || tls.key) createSecureContext({ cert: tls.cert, key: tls.key });
  return tls;
}

export class ReloadingAgent {
  private agent: Agent;
  private readonly stopWatch: () => void;

  constructor(files: ClientTlsFiles, private readonly build: (tls: ClientTls) => Agent, opts: { what: string; log: Logger; onReload?: () => void; intervalMs?: number }) {
    const names = (['caFile', 'certFile', 'keyFile'] as const).filter((k) => files[k] !== undefined);
    const read = (contents: Buffer[]): ClientTls => {
      const tls: ClientTls = {};
      names.forEach((k, i) => {
        tls[k === 'caFile' ? 'ca' : k === 'certFile' ? 'cert' : 'key'] = contents[i]!;
      });
      return check(files, tls);
    };
    const initial = names.map((k) => readFileSync(files[k]!));
    this.agent = build(read(initial));
    this.stopWatch = names.length === 0 ? () => undefined : watchFiles(names.map((k) => files[k]!), (contents) => {
      const next = this.build(read(contents));
      const old = this.agent;
      this.agent = next;
      void old.close().catch(() => undefined);
      opts.onReload?.();
    }, { what: opts.what, log: opts.log, initial, intervalMs: opts.intervalMs });
  }

  /** The Agent for a new request. */
  get current(): Agent {
    return this.agent;
  }

  async close(): Promise<void> {
    this.stopWatch();
    await this.agent.close();
  }
}
