// How kubectl pcap reaches the gateway and what it leaves behind: kubectl port-forward to the
// gateway Service (a stub kubectl stands in for it: TEST DOUBLE, test/harness/kubectl-stub.ts,
// since the harness has no kubelet), the gateway's certificate verified against the CA in
// the ConfigMap kube-pcap/kube-pcap-gateway-ca for the Service's DNS name, answers for each
// missing piece, a progress bar on a terminal and silence on a pipe, and a download cut by
// a killed gateway that exits non-zero and leaves no file that looks complete.
import { chmod, readdir, readFile, writeFile } from 'node:fs/promises';
import { createConnection, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { createCertificateAuthority } from '../../src/tls/certificates.js';
import { cluster } from '../harness/cluster.js';
import { REPO_ROOT } from '../harness/control-plane.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { run, zipEntries } from '../harness/http.js';
import { scratchDir, startGateway, SYSTEM_NAMESPACE } from '../harness/kube-pcap.js';
import { writeLargePcap } from '../harness/pcap-fixtures.js';
import { PLUGIN, runPlugin, writeKubeconfig } from '../harness/plugin.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await storefrontWorld(t, c);
await w.grantFiles();
const rename = { renameNamespace: { from: 'storefront', to: w.ns } };
await c.applyYaml(join(REPO_ROOT, 'rbac-examples', 'gateway-access.yaml'), rename);
const dir = await scratchDir(t, 'plugin-access');
const kubeconfig = await writeKubeconfig(c, dir, 'devops', { token: w.devopsToken }, w.ns);

// The gateway Service as deploy/ defines it (no controller here: only the object matters to
// the plugin, which reads its port), and the stub kubectl first on PATH.
await c.applyYaml(join(REPO_ROOT, 'deploy', 'gateway', 'service.yaml'));
const stubDir = join(dir, 'bin');
await run('mkdir', ['-p', stubDir]);
const stubLog = join(dir, 'kubectl-stub.log');
await writeFile(join(stubDir, 'kubectl'), `#!/bin/sh\nexec "${process.execPath}" "${join(REPO_ROOT, 'dist', 'test', 'harness', 'kubectl-stub.js')}" "$@"\n`);
await chmod(join(stubDir, 'kubectl'), 0o755);
const env = { PATH: `${stubDir}:${process.env.PATH}`, KUBECTL_STUB_LOG: stubLog, KUBECTL_STUB_TARGET: `127.0.0.1:${w.gateway.port}` };
const kp = async (args: string[], extraEnv: Record<string, string> = {}) => await runPlugin(args, { kubeconfig, cwd: dir, env: { ...env, ...extraEnv } });

async function publishCa(pem: string | undefined, urls?: string): Promise<void> {
  const path = `/api/v1/namespaces/${SYSTEM_NAMESPACE}/configmaps/kube-pcap-gateway-ca`;
  const kube = await c.rest();
  await kube.request({ method: 'DELETE', path }).catch(() => undefined);
  if (pem !== undefined) await c.applyManifest(JSON.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'kube-pcap-gateway-ca', namespace: SYSTEM_NAMESPACE }, data: { 'ca.crt': pem, ...(urls ? { urls } : {}) } }));
}

const stubRuns = async (): Promise<{ pid: number; args: string[] }[]> =>
  (await readFile(stubLog, 'utf8').catch(() => '')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as { pid: number; args: string[] });
const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

t.test('port-forward to the gateway Service, verified against the published CA, and gone afterwards', async (t) => {
  await publishCa(await readFile(w.pki.ca.certFile, 'utf8'));
  const before = (await stubRuns()).length;
  const r = await kp(['download', CAPTURE, '-w', 'pf.zip', '--context', 'test']);
  t.equal(r.code, 0, r.stderr);
  t.same((await zipEntries(join(dir, 'pf.zip'))).sort(), [...w.files.keys()].sort(), 'the zip, through the port-forward');
  const runs = (await stubRuns()).slice(before);
  t.equal(runs.length, 1, 'one port-forward for the command');
  t.same(runs[0]!.args, ['--context', 'test', 'port-forward', '--namespace', 'kube-pcap', '--address', '127.0.0.1', 'service/kube-pcap-gateway', ':9443'], 'kubectl with the same context, to the Service\'s https port');
  t.notOk(alive(runs[0]!.pid), 'the port-forward ended with the command');
});

t.test('a gateway certificate from another CA is refused; --insecure-skip-tls-verify is the explicit way out', async (t) => {
  const other = await createCertificateAuthority(join(dir, 'other-ca'), 'ca', 'not the gateway CA');
  await publishCa(await readFile(other.certFile, 'utf8'));
  const r = await kp(['download', CAPTURE, '-w', 'wrong-ca.zip']);
  t.equal(r.code, 1);
  t.match(r.stderr, /cannot reach the gateway \(port-forward to service\/kube-pcap-gateway in kube-pcap\): .*(certificate|self.signed)/i);
  t.same((await readdir(dir)).filter((f) => f.includes('wrong-ca')), [], 'no file');
  const insecure = await kp(['download', CAPTURE, '-w', 'insecure.zip', '--insecure-skip-tls-verify']);
  t.equal(insecure.code, 0, insecure.stderr);
});

t.test('missing pieces are answers: no CA ConfigMap, no gateway Service, no kubectl', async (t) => {
  await publishCa(undefined);
  const noCa = await kp(['download', CAPTURE, '-w', 'x.zip']);
  t.equal(noCa.code, 1);
  t.match(noCa.stderr, /there is no ConfigMap kube-pcap\/kube-pcap-gateway-ca\. The ConfigMap .* publishes the CA of the gateway's certificate/);
  await publishCa(await readFile(w.pki.ca.certFile, 'utf8'));
  // As someone who may read any Service (devops-sa may read only the gateway's: for it, a 403 naming gateway-access.yaml).
  const noService = await runPlugin(['download', CAPTURE, '-w', 'x.zip', '-n', w.ns, '--gateway-service', 'kube-pcap/no-such-gateway'], { kubeconfig: c.info.kubeconfig, cwd: dir, env });
  t.equal(noService.code, 1);
  t.match(noService.stderr, /the kube-pcap gateway is not installed in this cluster \(context "[^"]+"\): there is no Service kube-pcap\/no-such-gateway\. Install kube-pcap with "kubectl apply -k deploy\/"/);
  const forbidden = await kp(['download', CAPTURE, '-w', 'x.zip', '--gateway-service', 'kube-pcap/no-such-gateway']);
  t.match(forbidden.stderr, /you may not read the Service kube-pcap\/no-such-gateway, which port-forward needs: rbac-examples\/gateway-access.yaml/);
  const emptyBin = join(dir, 'empty-bin');
  await run('mkdir', ['-p', emptyBin]);
  const noKubectl = await kp(['download', CAPTURE, '-w', 'x.zip'], { PATH: emptyBin });
  t.equal(noKubectl.code, 1);
  t.match(noKubectl.stderr, /kubectl was not found on PATH/);
  t.notMatch(noKubectl.stderr + noService.stderr + noCa.stderr, /\n\s+at /, 'no stack trace');
});

t.test('a progress bar on a terminal (bytes of the exact total, rate, ETA); nothing on a pipe', async (t) => {
  // script(1) gives the command a pseudo-terminal, as an interactive shell would.
  const cmd = ['env', ...Object.entries({ ...env, KUBECONFIG: kubeconfig, KUBE_PCAP_GATEWAY: '' }).map(([k, v]) => `${k}=${v}`), process.execPath, PLUGIN, 'download', CAPTURE, '-w', 'tty.zip']
    .map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(' ');
  const tty = await run('script', ['-qec', `cd '${dir}' && ${cmd}`, '/dev/null']);
  t.equal(tty.code, 0, tty.stdout);
  const size = (await readFile(join(dir, 'tty.zip'))).length;
  t.match(tty.stdout, /tty\.zip 100% \[=+\] [\d.]+ (B|KiB|MiB) of [\d.]+ (B|KiB|MiB) +[\d.]+ \w+\/s +ETA 0s/, 'the final state of the bar');
  t.match(tty.stdout, new RegExp(`Saved tty\\.zip \\(${size < 1024 ? `${size} B` : '[\\d.]+ KiB'}\\)`));
  const quiet = await run('script', ['-qec', `cd '${dir}' && ${cmd} --quiet`, '/dev/null']);
  t.equal(quiet.code, 0);
  t.notMatch(quiet.stdout, /ETA/, '--quiet: no bar');
  const piped = await kp(['download', CAPTURE, '-w', 'pipe.zip']);
  t.equal(piped.code, 0, piped.stderr);
  t.equal(piped.stderr, '', 'nothing on a pipe');
  t.equal(piped.text, '');
});

t.test('a download cut by a killed gateway exits non-zero and leaves no complete-looking file', async (t) => {
  // A large file, so that the download is still running when its gateway dies.
  await w.addFileOnFirstNode('logging-0_cali0-1700000000000009.pcap', (p) => writeLargePcap(p, 96 << 20));
  const doomed = await startGateway(t, c, { pki: w.pki, logDir: w.logDir, agentService: w.agentService, name: 'gateway-doomed' });
  // Between the plugin and the doomed gateway: a relay that holds the response after its
  // first 2 MiB until the gateway has been killed, then lets the connection end as it ends.
  let held: (() => void) | undefined;
  const sockets = new Set<Socket>();
  const relay = createServer((client) => {
    const upstream = createConnection({ host: '127.0.0.1', port: doomed.port });
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    let forwarded = 0;
    upstream.on('data', (d: Buffer) => {
      client.write(d);
      forwarded += d.length;
      if (forwarded > 2 << 20 && !held) {
        upstream.pause();
        held = () => upstream.resume();
      }
    });
    upstream.on('close', () => client.end());
    upstream.on('error', () => undefined);
    client.on('error', () => upstream.destroy());
  });
  await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    relay.close();
  });
  const port = (relay.address() as { port: number }).port;
  const download = kp(['download', CAPTURE, '-w', 'cut.zip', '--gateway', `https://127.0.0.1:${port}`, '--gateway-ca-file', w.pki.ca.certFile, '--trust-gateway-url']);
  await waitFor(async () => held !== undefined && (await readdir(dir)).some((f) => f.startsWith('.cut.zip.part-')), { what: 'the download under way, held by the relay', timeoutMs: 30_000 });
  doomed.proc.child.kill('SIGKILL');
  await waitFor(() => !doomed.proc.running, { what: 'the gateway to die', timeoutMs: 10_000 });
  held!();
  const r = await download;
  t.not(r.code, 0, 'non-zero exit');
  t.match(r.stderr, /the download of pc-storefront-logging-dns was cut after [\d.]+ MiB of [\d.]+ MiB .*nothing was written to cut\.zip/);
  t.same((await readdir(dir)).filter((f) => f.includes('cut.zip')), [], 'neither cut.zip nor its temporary file');
});

t.test('a --gateway URL gets the credentials only when the cluster publishes it, or with --trust-gateway-url', async (t) => {
  // A relay in front of the gateway that counts connections: the URL a user was handed.
  let connections = 0;
  const sockets = new Set<Socket>();
  const relay = createServer((client) => {
    connections++;
    const upstream = createConnection({ host: '127.0.0.1', port: w.gateway.port });
    sockets.add(client).add(upstream);
    client.pipe(upstream).pipe(client);
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  });
  await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    relay.close();
  });
  const url = `https://127.0.0.1:${(relay.address() as { port: number }).port}`;
  const pem = await readFile(w.pki.ca.certFile, 'utf8');
  await publishCa(pem);
  const args = (out: string) => ['download', CAPTURE, '-w', out, '--gateway', url, '--gateway-ca-file', w.pki.ca.certFile];
  const unpublished = await kp(args('unpublished.zip'));
  t.equal(unpublished.code, 2);
  t.match(unpublished.stderr, new RegExp(`not sending your credentials to ${url.replaceAll('.', '\\.')}: it is not a gateway URL this cluster publishes \\(the ConfigMap kube-pcap/kube-pcap-gateway-ca lists no gateway URL under the key urls\\)\\. .*--trust-gateway-url`));
  t.equal(connections, 0, 'nothing was sent to it');
  await publishCa(pem, 'https://pcap.example.com');
  const other = await kp(args('other.zip'));
  t.equal(other.code, 2);
  t.match(other.stderr, /it publishes https:\/\/pcap\.example\.com/);
  t.equal(connections, 0, 'still nothing');
  await publishCa(pem, `https://pcap.example.com\n${url}/`);
  const published = await kp(args('published.zip'));
  t.equal(published.code, 0, published.stderr);
  t.ok(connections > 0, 'the published URL is used');
  const entries = await zipEntries(join(dir, 'published.zip'));
  t.ok([...w.files.keys()].every((f) => entries.includes(f)), 'the capture\'s files, through the published URL');
  await publishCa(pem);
  const trusted = await kp([...args('trusted.zip'), '--trust-gateway-url']);
  t.equal(trusted.code, 0, `--trust-gateway-url: the user vouches for it (${trusted.stderr})`);
});
