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
import { checkCaBundle } from '../tls/ca-bundle.js';
import { watchFiles } from '../tls/file-watch.js';

export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  certFile?: string;
  keyFile?: string;
  /**
   * CA bundle for client certificates: when set, the server asks every client for one
   * (without requiring it) and a route decides what a verified certificate is worth.
   */
  clientCa?: Buffer;
  clientCaFile?: string;
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

/** The serving material plus a client CA bundle (see TlsMaterial.clientCa). */
export async function withClientCa(tls: TlsMaterial, clientCaFile: string | undefined, what: string): Promise<TlsMaterial> {
  if (!clientCaFile) return tls;
  return { ...tls, clientCa: checkCaBundle(await readFile(clientCaFile), what), clientCaFile };
}

export function fingerprint(cert: Buffer): string {
  try {
    return new X509Certificate(cert).fingerprint256;
  } catch {
    return createHash('sha256').update(cert).digest('hex');
  }
}

/** Swaps the server's certificate (and client CA) when their files change. Returns a stop function. */
export function watchTls(server: Server, current: TlsMaterial, log: Logger, intervalMs = 2000): () => void {
  if (!current.certFile || !current.keyFile) return () => undefined;
  const files = [current.certFile, current.keyFile, ...(current.clientCaFile ? [current.clientCaFile] : [])];
  const initial = [current.cert, current.key, ...(current.clientCa ? [current.clientCa] : [])];
  return watchFiles(files, ([cert, key, clientCa]) => {
    const context = { cert: cert!, key: key!, ...(clientCa ? { ca: checkCaBundle(clientCa, current.clientCaFile!) } : {}) };
    // Throws, and the previous context stays, when the pair does not match or a PEM is bad.
    createSecureContext(context);
    server.setSecureContext(context);
    log.info({ fingerprint: fingerprint(cert!) }, 'serving certificate installed');
  }, { what: 'serving certificate', log, initial, intervalMs });
}
