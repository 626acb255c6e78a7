// CA bundles (PEM) read from files: checked before they are trusted.
import { X509Certificate } from 'node:crypto';

/** Returns `pem`; throws unless it holds at least one certificate and every one parses. */
export function checkCaBundle(pem: Buffer, what: string): Buffer {
  const blocks = pem.toString('utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new Error(`${what} holds no PEM certificate`);
  for (const b of blocks) new X509Certificate(b);
  return pem;
}
