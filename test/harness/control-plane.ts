// A real Kubernetes control plane for tests (the envtest pattern): etcd and kube-apiserver
// on this machine, RBAC authorization, a client-certificate admin in system:masters and a
// ServiceAccount issuer, so that TokenRequest, TokenReview and SubjectAccessReview are the
// API server's own. No controller-manager: tests create what controllers would.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, fetch } from 'undici';
import { createCertificateAuthority, createRsaKey, issueCertificate, readPair, type KeyPair } from '../../src/tls/certificates.js';
import { OwnedProcess } from './processes.js';
import { waitFor } from './wait.js';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export interface ControlPlaneInfo {
  /** https://host:port of the API server as seen from the test processes. */
  server: string;
  caFile: string;
  adminCertFile: string;
  adminKeyFile: string;
  /** kubeconfig for the admin (system:masters). */
  kubeconfig: string;
  /** Directory holding kube-apiserver, etcd and kubectl. */
  binDir: string;
  /** The ServiceAccount token issuer: the API server's own URL, so it is also a real OIDC issuer. */
  issuer: string;
  /** The key that signs ServiceAccount tokens (to mint an already-expired one, which TokenRequest refuses to). */
  saKeyFile: string;
  /** Addresses (besides 127.0.0.1) at which the API server is reachable, e.g. from node namespaces. */
  extraAddresses: string[];
  port: number;
  /** The key of caFile's CA, which is also the API server's client CA: to issue users' client certificates. */
  caKeyFile: string;
  /** Users of the API server's --token-auth-file: opaque tokens, as static, bootstrap and cloud tokens are. */
  staticTokens: StaticTokenUser[];
}

export interface StaticTokenUser {
  token: string;
  username: string;
  uid: string;
  groups: string[];
}

export interface ControlPlaneOptions {
  /** Address the API server listens on; 127.0.0.1 unless node namespaces must reach it. */
  bindAddress?: string;
  /** Further IPs for the serving certificate (how node namespaces reach the API server). */
  extraAddresses?: string[];
  binDir?: string;
  /** More kube-apiserver flags (e.g. OIDC), for a control plane of the test's own. */
  extraApiServerArgs?: string[];
  /**
   * A control plane for real nodes (test/cluster): Node and RBAC authorization with the
   * NodeRestriction admission plugin, the `kubernetes` Service's endpoints kept by the API
   * server itself, services from this range (its first address is in the serving
   * certificate), and a client certificate for the kubelets' API (logs, exec, port-forward)
   * that checks their serving certificates against the cluster CA.
   */
  forNodes?: { serviceCidr: string; serviceIp: string };
}

/** The directory with the binaries: KUBE_PCAP_CONTROL_PLANE_BIN, else build/find them. */
export function controlPlaneBinDir(): string {
  const fromEnv = process.env.KUBE_PCAP_CONTROL_PLANE_BIN;
  if (fromEnv) return fromEnv;
  const script = join(REPO_ROOT, 'test', 'controlplane', 'build-binaries.sh');
  return execFileSync('bash', [script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
}

export async function freePort(host: string): Promise<number> {
  return await new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolvePort(addr.port) : reject(new Error('no port'))));
    });
  });
}

/**
 * `n` distinct free ports: all held open at once while they are picked, since a port closed
 * again may be handed out by the next pick (two servers then fail on one port: seen as
 * SeaweedFS's S3 gRPC port equal to its HTTP port).
 */
export async function freePorts(host: string, n: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: n }, () => new Promise<Server>((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => resolve(srv));
  })));
  const ports = servers.map((srv) => {
    const addr = srv.address();
    if (typeof addr !== 'object' || !addr) throw new Error('no port');
    return addr.port;
  });
  await Promise.all(servers.map((srv) => new Promise<void>((resolve) => srv.close(() => resolve()))));
  return ports;
}

export class ControlPlane {
  private etcd: OwnedProcess | undefined;
  private apiserver: OwnedProcess | undefined;
  private apiserverArgs: string[] = [];

  private constructor(
    readonly dir: string,
    readonly info: ControlPlaneInfo,
    private readonly etcdArgs: string[],
  ) {}

  static async start(opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
    const started = Date.now();
    const binDir = opts.binDir ?? controlPlaneBinDir();
    const root = join(process.env.KUBE_PCAP_TMP ?? tmpdir(), 'kube-pcap-test');
    await mkdir(root, { recursive: true });
    const dir = await mkdtemp(join(root, 'control-plane-'));
    try {
      const bind = opts.bindAddress ?? '127.0.0.1';
      const extra = opts.extraAddresses ?? [];
      const pki = join(dir, 'pki');
      const ca = await createCertificateAuthority(pki, 'ca', 'kube-pcap-test-ca');
      const serving = await issueCertificate(pki, 'apiserver', ca, {
        commonName: 'kube-apiserver',
        usage: 'server',
        dnsNames: ['localhost', 'kubernetes', 'kubernetes.default', 'kubernetes.default.svc'],
        ipAddresses: ['127.0.0.1', opts.forNodes?.serviceIp ?? '10.96.0.1', ...extra],
      });
      const admin = await issueCertificate(pki, 'admin', ca, {
        commonName: 'kube-pcap-test-admin',
        organizations: ['system:masters'],
        usage: 'client',
      });
      const saKey = await createRsaKey(join(pki, 'service-account.key'));
      // Opaque (non-JWT) tokens the API server itself authenticates: "token,user,uid,groups".
      const staticTokens: StaticTokenUser[] = ['static-alice', 'static-bob'].map((username, i) => ({
        token: `kpt-static-${randomBytes(24).toString('hex')}`, username, uid: `static-uid-${i + 1}`, groups: ['static-users'],
      }));
      const tokenFile = join(pki, 'static-tokens.csv');
      await writeFile(tokenFile, staticTokens.map((u) => `${u.token},${u.username},${u.uid},"${u.groups.join(',')}"`).join('\n') + '\n', { mode: 0o600 });
      const [etcdClient, etcdPeer] = await freePorts('127.0.0.1', 2);
      const apiPort = await freePort(bind);
      const etcdUrl = `http://127.0.0.1:${etcdClient}`;
      const etcdArgs = [
        '--name', 'default',
        '--data-dir', join(dir, 'etcd'),
        '--listen-client-urls', etcdUrl,
        '--advertise-client-urls', etcdUrl,
        '--listen-peer-urls', `http://127.0.0.1:${etcdPeer}`,
        '--initial-advertise-peer-urls', `http://127.0.0.1:${etcdPeer}`,
        '--initial-cluster', `default=http://127.0.0.1:${etcdPeer}`,
        // Test data is thrown away: fsync would only make every test slower.
        '--unsafe-no-fsync',
        '--log-level', 'warn',
      ];
      const server = `https://127.0.0.1:${apiPort}`;
      const issuer = server;
      const kubeconfig = join(dir, 'admin.kubeconfig');
      await writeFile(kubeconfig, adminKubeconfig(server, ca, admin));
      const cp = new ControlPlane(dir, {
        server, caFile: ca.certFile, adminCertFile: admin.certFile, adminKeyFile: admin.keyFile,
        kubeconfig, binDir, issuer, saKeyFile: saKey, extraAddresses: extra, port: apiPort, caKeyFile: ca.keyFile, staticTokens,
      }, etcdArgs);
      cp.apiserverArgs = [
        '--etcd-servers', etcdUrl,
        '--bind-address', bind,
        '--advertise-address', extra[0] ?? '10.96.0.2',
        '--secure-port', String(apiPort),
        '--tls-cert-file', serving.certFile,
        '--tls-private-key-file', serving.keyFile,
        '--client-ca-file', ca.certFile,
        '--token-auth-file', tokenFile,
        '--authorization-mode', opts.forNodes ? 'Node,RBAC' : 'RBAC',
        '--service-account-issuer', issuer,
        '--service-account-key-file', saKey,
        '--service-account-signing-key-file', saKey,
        '--service-cluster-ip-range', opts.forNodes?.serviceCidr ?? '10.96.0.0/16',
        '--allow-privileged=true',
        // Without nodes, nothing would use the "kubernetes" Service's endpoints.
        '--endpoint-reconciler-type', opts.forNodes ? 'lease' : 'none',
        '--v', '1',
        ...(opts.forNodes ? await kubeletClientArgs(pki, ca) : []),
        ...(opts.extraApiServerArgs ?? []),
      ];
      await cp.startEtcd();
      await cp.startApiServer();
      cp.startupMs = Date.now() - started;
      return cp;
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /** How long start() took, for the README's figure and the suite's summary. */
  startupMs = 0;

  private async startEtcd(): Promise<void> {
    this.etcd = new OwnedProcess(join(this.info.binDir, 'etcd'), this.etcdArgs, {
      name: 'etcd', logFile: join(this.dir, 'etcd.log'),
    });
    const url = this.etcdArgs[this.etcdArgs.indexOf('--listen-client-urls') + 1];
    await waitFor(async () => {
      if (!this.etcd?.running) throw await this.etcd!.failure('exited during start-up');
      const res = await fetch(`${url}/health`).catch(() => undefined);
      return res?.ok ?? false;
    }, { what: 'etcd to be healthy', timeoutMs: 30_000 });
  }

  /** Starts (or restarts) kube-apiserver on the same port, with the same etcd and keys. */
  async startApiServer(): Promise<void> {
    if (this.apiserver?.running) return;
    this.apiserver = new OwnedProcess(join(this.info.binDir, 'kube-apiserver'), this.apiserverArgs, {
      name: 'kube-apiserver', logFile: join(this.dir, 'kube-apiserver.log'),
    });
    const { cert, key } = await readPair({ certFile: this.info.adminCertFile, keyFile: this.info.adminKeyFile });
    const dispatcher = new Agent({ connect: { ca: await readFile(this.info.caFile), cert, key } });
    try {
      await waitFor(async () => {
        if (!this.apiserver?.running) throw await this.apiserver!.failure('exited during start-up');
        const res = await fetch(`${this.info.server}/readyz`, { dispatcher }).catch(() => undefined);
        await res?.body?.cancel();
        return res?.status === 200;
      }, { what: 'kube-apiserver /readyz', timeoutMs: 90_000, intervalMs: 200 });
    } catch (err) {
      throw await this.apiserver.failure((err as Error).message);
    } finally {
      await dispatcher.close();
    }
  }

  /** Freezes kube-apiserver (SIGSTOP): connections stay open and requests hang, as under overload. */
  pauseApiServer(): void {
    this.apiserver?.child.kill('SIGSTOP');
  }

  resumeApiServer(): void {
    this.apiserver?.child.kill('SIGCONT');
  }

  /** Stops kube-apiserver only: clients then see a refused connection, as in an outage. */
  async stopApiServer(): Promise<void> {
    await this.apiserver?.stop(10_000);
  }

  async stop(): Promise<void> {
    await this.apiserver?.stop(10_000);
    await this.etcd?.stop(10_000);
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** The API server's side of talking to kubelets, for a control plane with real nodes. */
async function kubeletClientArgs(pki: string, ca: KeyPair): Promise<string[]> {
  const kubeletClient = await issueCertificate(pki, 'apiserver-kubelet-client', ca, {
    commonName: 'kube-apiserver-kubelet-client', organizations: ['system:masters'], usage: 'client',
  });
  return [
    '--enable-admission-plugins', 'NodeRestriction',
    '--kubelet-client-certificate', kubeletClient.certFile,
    '--kubelet-client-key', kubeletClient.keyFile,
    '--kubelet-certificate-authority', ca.certFile,
    '--kubelet-preferred-address-types', 'InternalIP',
  ];
}

function adminKubeconfig(server: string, ca: KeyPair, admin: KeyPair): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: test',
    '  cluster:',
    `    server: ${server}`,
    `    certificate-authority: ${ca.certFile}`,
    'users:',
    '- name: admin',
    '  user:',
    `    client-certificate: ${admin.certFile}`,
    `    client-key: ${admin.keyFile}`,
    'contexts:',
    '- name: test',
    '  context: {cluster: test, user: admin}',
    'current-context: test',
    '',
  ].join('\n');
}
