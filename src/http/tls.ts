// Serving certificates: read at start, and re-read when the files change, so a rotated
// Secret (cert-manager, a kubelet-updated mount) takes effect without a restart. A
// half-written or mismatched pair is never installed: the previous one stays until the
// new pair is complete and consistent.
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Server } from 'node:https';
import { createSecureContext } from 'node:tls';
import type { Logger } from 'pino';
import type { ServerConfig } from '../config/common.js';
import { createCertificateAuthority, issueCertificate } from '../tls/certificates.js';

export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  certFile?: string;
  keyFile?: string;
}

async function readPair(certFile: string, keyFile: string): Promise<TlsMaterial> {
  const [cert, key] = await Promise.all([readFile(certFile), readFile(keyFile)]);
  // Throws when they do not belong together or cannot be parsed.
  createSecureContext({ cert, key });
  return { cert, key, certFile, keyFile };
}

/** The configured certificate, or a throwaway self-signed one for --dev-self-signed. */
export async function loadTls(tls: ServerConfig['tls'], commonName: string, log: Logger): Promise<TlsMaterial> {
  if ('selfSigned' in tls) {
    log.warn('serving a self-signed certificate (--dev-self-signed): for development only');
    const dir = await mkdtemp(join(tmpdir(), 'kube-pcap-dev-tls-'));
    try {
      const ca = await createCertificateAuthority(dir, 'ca', `${commonName} development CA`);
      const leaf = await issueCertificate(dir, 'tls', ca, { commonName, usage: 'server', dnsNames: ['localhost', commonName], ipAddresses: ['127.0.0.1', '::1'] });
      const [cert, key] = await Promise.all([readFile(leaf.certFile), readFile(leaf.keyFile)]);
      return { cert, key };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  return await readPair(tls.certFile, tls.keyFile);
}

export function fingerprint(cert: Buffer): string {
  try {
    return new X509Certificate(cert).fingerprint256;
  } catch {
    return createHash('sha256').update(cert).digest('hex');
  }
}

/** Polls the files and swaps the server's certificate when they change. Returns a stop function. */
export function watchTls(server: Server, current: TlsMaterial, log: Logger, intervalMs = 2000): () => void {
  if (!current.certFile || !current.keyFile) return () => undefined;
  const { certFile, keyFile } = current;
  let installed = fingerprint(current.cert) + createHash('sha256').update(current.key).digest('hex');
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    readPair(certFile, keyFile)
      .then((next) => {
        const id = fingerprint(next.cert) + createHash('sha256').update(next.key).digest('hex');
        if (id === installed) return;
        server.setSecureContext({ cert: next.cert, key: next.key });
        installed = id;
        log.info({ fingerprint: fingerprint(next.cert) }, 'serving certificate reloaded');
      })
      .catch((err: unknown) => log.warn({ err: (err as Error).message }, 'serving certificate files changed but are not usable yet; keeping the previous one'))
      .finally(() => {
        busy = false;
      });
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
