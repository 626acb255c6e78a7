// X.509 certificates made with the openssl CLI.
//
// Node can generate keys but not certificates, and a hand-rolled ASN.1 encoder is not
// something to trust in a security tool; openssl is on every machine and image we target.
// Used by the gateway's explicit development flag and by the test harness's PKI.
import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface KeyPair {
  certFile: string;
  keyFile: string;
}

export interface CertificateRequest {
  /** Common name; for client certificates the Kubernetes user name. */
  commonName: string;
  /** Organisations; for client certificates the Kubernetes groups. */
  organizations?: string[];
  dnsNames?: string[];
  ipAddresses?: string[];
  usage: 'server' | 'client' | 'server+client';
  days?: number;
}

async function openssl(args: string[], cwd?: string): Promise<void> {
  try {
    await run('openssl', args, { cwd });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`openssl ${args[0]} failed: ${e.stderr?.trim() || e.message}`);
  }
}

/** A self-signed certificate authority in dir/<name>.crt and dir/<name>.key. */
export async function createCertificateAuthority(dir: string, name = 'ca', commonName = 'kube-pcap-ca'): Promise<KeyPair> {
  await mkdir(dir, { recursive: true });
  const pair = { certFile: join(dir, `${name}.crt`), keyFile: join(dir, `${name}.key`) };
  await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', pair.keyFile]);
  await openssl([
    'req', '-x509', '-new', '-key', pair.keyFile, '-sha256', '-days', '3650',
    '-subj', `/CN=${escapeSubject(commonName)}`,
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-out', pair.certFile,
  ]);
  return pair;
}

/** A leaf certificate signed by ca, written to dir/<name>.crt and dir/<name>.key. */
export async function issueCertificate(dir: string, name: string, ca: KeyPair, req: CertificateRequest): Promise<KeyPair> {
  await mkdir(dir, { recursive: true });
  const pair = { certFile: join(dir, `${name}.crt`), keyFile: join(dir, `${name}.key`) };
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  const subject = [`/CN=${escapeSubject(req.commonName)}`, ...(req.organizations ?? []).map((o) => `/O=${escapeSubject(o)}`)].join('');
  const sans = [...(req.dnsNames ?? []).map((d) => `DNS:${d}`), ...(req.ipAddresses ?? []).map((ip) => `IP:${ip}`)];
  const eku = { server: 'serverAuth', client: 'clientAuth', 'server+client': 'serverAuth,clientAuth' }[req.usage];
  await writeFile(ext, [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    `extendedKeyUsage=${eku}`,
    ...(sans.length > 0 ? [`subjectAltName=${sans.join(',')}`] : []),
  ].join('\n') + '\n');
  await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', pair.keyFile]);
  await openssl(['req', '-new', '-key', pair.keyFile, '-subj', subject, '-out', csr]);
  await openssl([
    'x509', '-req', '-in', csr, '-CA', ca.certFile, '-CAkey', ca.keyFile, '-CAcreateserial',
    '-sha256', '-days', String(req.days ?? 365), '-extfile', ext, '-out', pair.certFile,
  ]);
  return pair;
}

/** An RSA key pair (PEM) for signing ServiceAccount tokens. */
export async function createRsaKey(file: string): Promise<string> {
  await openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', file]);
  return file;
}

export async function readPair(pair: KeyPair): Promise<{ cert: Buffer; key: Buffer }> {
  const [cert, key] = await Promise.all([readFile(pair.certFile), readFile(pair.keyFile)]);
  return { cert, key };
}

// Subjects are passed as one argument, so only openssl's own separators need escaping.
function escapeSubject(value: string): string {
  return value.replace(/([/+=\\])/g, '\\$1');
}
