// TLS on the gateway: certificate files reloaded when they change (without a restart, never
// half-installed), a self-signed certificate only with the explicit development flag.
import { X509Certificate } from 'node:crypto';
import { copyFile, readFile, rename, writeFile } from 'node:fs/promises';
import { connect } from 'node:tls';
import { join } from 'node:path';
import t from 'tap';
import { issueCertificate } from '../../src/tls/certificates.js';
import { cluster } from '../harness/cluster.js';
import { run } from '../harness/http.js';
import { CLI, installKubePcap, makePki, scratchDir, startGateway } from '../harness/kube-pcap.js';
import { OwnedProcess } from '../harness/processes.js';
import { waitFor } from '../harness/wait.js';

async function servedCertificate(port: number): Promise<X509Certificate> {
  return await new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      const raw = s.getPeerCertificate(true).raw;
      s.destroy();
      resolve(new X509Certificate(raw));
    });
    s.on('error', reject);
  });
}

const c = await cluster(t);
await installKubePcap(c);

t.test('changed certificate files are served to new connections, a broken pair never', async (t) => {
  const pki = await makePki(t);
  const dir = await scratchDir(t, 'tls');
  // Serve from copies, replaced the way a kubelet updates a Secret volume: write, then rename.
  const cert = join(dir, 'tls.crt');
  const key = join(dir, 'tls.key');
  await copyFile(pki.gateway.certFile, cert);
  await copyFile(pki.gateway.keyFile, key);
  const gw = await startGateway(t, c, { pki: { ...pki, gateway: { certFile: cert, keyFile: key } }, logDir: dir, agentService: 'none' });
  const first = await servedCertificate(gw.port);
  t.equal(first.fingerprint256, new X509Certificate(await readFile(pki.gateway.certFile)).fingerprint256);

  const next = await issueCertificate(join(dir, 'next'), 'rotated', pki.ca, { commonName: 'kube-pcap-gateway-rotated', usage: 'server', ipAddresses: ['127.0.0.1'] });
  await copyFile(next.keyFile, `${key}.new`);
  await copyFile(next.certFile, `${cert}.new`);
  await rename(`${key}.new`, key);
  await rename(`${cert}.new`, cert);
  const rotated = await waitFor(async () => {
    const c2 = await servedCertificate(gw.port);
    return c2.subject.includes('kube-pcap-gateway-rotated') ? c2 : undefined;
  }, { what: 'the new certificate to be served', timeoutMs: 15_000, intervalMs: 250 });
  t.not(rotated.fingerprint256, first.fingerprint256);

  // A certificate without its key (mid-update, or a mistake) is not installed.
  const other = await issueCertificate(join(dir, 'other'), 'other', pki.ca, { commonName: 'mismatched', usage: 'server' });
  await copyFile(other.certFile, cert);
  await waitFor(async () => (await readFile(gw.logFile, 'utf8')).includes('not usable'), { what: 'the gateway to notice the broken pair', timeoutMs: 15_000 });
  t.equal((await servedCertificate(gw.port)).fingerprint256, rotated.fingerprint256, 'the previous certificate is still served');
  t.ok(gw.proc.running, 'and the gateway is still up');
});

t.test('--dev-self-signed serves a generated certificate; nothing is self-signed without it', async (t) => {
  const dir = await scratchDir(t, 'dev');
  const pki = await makePki(t);
  await writeFile(join(dir, 'token'), 'x.y.z');
  const logFile = join(dir, 'gw.log');
  const kubeconfig = c.info.kubeconfig;
  const proc = new OwnedProcess(process.execPath, [CLI, 'gateway', '--dev-self-signed', '--listen=127.0.0.1:0', `--kubeconfig=${kubeconfig}`, `--agent-ca-file=${c.info.caFile}`, `--agent-token-file=${join(dir, 'token')}`, `--agent-client-cert-file=${pki.gatewayClient.certFile}`, `--agent-client-key-file=${pki.gatewayClient.keyFile}`, '--agent-service=kube-pcap/none', '--disable-exports'], { name: 'dev gateway', logFile });
  t.teardown(() => proc.stop());
  const port = await waitFor(async () => {
    const m = /Server listening at https:\/\/127\.0\.0\.1:(\d+)/.exec(await readFile(logFile, 'utf8'));
    return m ? Number(m[1]) : undefined;
  }, { what: 'the dev gateway to listen', timeoutMs: 20_000 });
  const served = await servedCertificate(port);
  t.match(served.subject, /CN=kube-pcap-gateway/);
  t.match(await readFile(logFile, 'utf8'), /self-signed certificate \(--dev-self-signed\): for development only/);
  const refused = await run(process.execPath, [CLI, 'gateway', `--agent-ca-file=${c.info.caFile}`, `--agent-token-file=${join(dir, 'token')}`, '--agent-client-cert-file=/c', '--agent-client-key-file=/k']);
  t.equal(refused.code, 2);
  t.match(refused.stderr, /TLS is required/);
});
