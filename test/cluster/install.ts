// kube-pcap installed on the real cluster the way the README tells a user to: the TLS
// Secrets and the CA ConfigMap first, then the chart (`helm install`, images from the node's
// store: pullPolicy Never, as no registry is reachable here) or `kubectl apply -k deploy/`.
// Nothing else is changed: the shipped manifests run as they are.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createCertificateAuthority, issueCertificate } from '../../src/tls/certificates.js';
import { REPO_ROOT } from '../harness/control-plane.js';
import { waitFor } from '../harness/wait.js';
import type { ClusterHandle } from './handle.js';

/** The gateway's namespace, where users port-forward. */
export const SYSTEM_NS = 'kube-pcap';
/** The agents' namespace, where nobody but admins has rights (docs/security.md). */
export const AGENTS_NS = 'kube-pcap-agents';
export const RELEASE = 'kube-pcap';
export const CHART = join(REPO_ROOT, 'charts', 'kube-pcap');

export interface KubePcapTls {
  dir: string;
  /** The CA of the gateway's serving certificate (what curl --cacert and kubectl pcap verify). */
  gatewayCaFile: string;
}

/** The Secrets and ConfigMap of the README's "Deploying to a cluster" (idempotent). */
export async function createTls(c: ClusterHandle, dir: string): Promise<KubePcapTls> {
  await mkdir(dir, { recursive: true });
  const agentCa = await createCertificateAuthority(dir, 'agent-ca', 'kube-pcap-agent-ca');
  const agent = await issueCertificate(dir, 'agent', agentCa, { commonName: `kube-pcap-agent.${AGENTS_NS}.svc`, usage: 'server', dnsNames: [`kube-pcap-agent.${AGENTS_NS}.svc`] });
  const client = await issueCertificate(dir, 'gateway-client', agentCa, { commonName: 'kube-pcap-gateway', usage: 'client' });
  const gatewayCa = await createCertificateAuthority(dir, 'gateway-ca', 'kube-pcap-gateway-ca');
  const gateway = await issueCertificate(dir, 'gateway', gatewayCa, { commonName: 'kube-pcap-gateway', usage: 'server', dnsNames: ['kube-pcap-gateway.kube-pcap.svc', 'localhost'], ipAddresses: ['127.0.0.1'] });
  const apply = async (args: string[]): Promise<void> => {
    const manifest = await c.kubectlOk([...args, '--dry-run=client', '-o', 'yaml']);
    await c.kubectlOk(['apply', '-f', '-'], { input: manifest });
  };
  await apply(['-n', AGENTS_NS, 'create', 'secret', 'generic', 'kube-pcap-agent-tls', `--from-file=tls.crt=${agent.certFile}`, `--from-file=tls.key=${agent.keyFile}`, `--from-file=ca.crt=${agentCa.certFile}`]);
  await apply(['-n', SYSTEM_NS, 'create', 'secret', 'generic', 'kube-pcap-gateway-agent-client', `--from-file=tls.crt=${client.certFile}`, `--from-file=tls.key=${client.keyFile}`, `--from-file=ca.crt=${agentCa.certFile}`]);
  await apply(['-n', SYSTEM_NS, 'create', 'secret', 'tls', 'kube-pcap-gateway-tls', `--cert=${gateway.certFile}`, `--key=${gateway.keyFile}`]);
  await apply(['-n', SYSTEM_NS, 'create', 'configmap', 'kube-pcap-gateway-ca', `--from-file=ca.crt=${gatewayCa.certFile}`]);
  return { dir, gatewayCaFile: gatewayCa.certFile };
}

/** The namespaces the README has users create for the chart: deploy/namespace.yaml. */
export async function createSystemNamespace(c: ClusterHandle): Promise<void> {
  await c.kubectlOk(['apply', '-f', join(REPO_ROOT, 'deploy', 'namespace.yaml')]);
}

/** `helm install` of the shipped chart; waits for the agents on every node and the gateways. */
export async function helmInstall(c: ClusterHandle, tlsDir: string, extraSet: string[] = []): Promise<KubePcapTls> {
  await createSystemNamespace(c);
  const tls = await createTls(c, tlsDir);
  const r = await c.helm(['install', RELEASE, CHART, '--namespace', SYSTEM_NS,
    '--set', 'images.gateway.pullPolicy=Never', '--set', 'images.agent.pullPolicy=Never',
    ...extraSet.flatMap((s) => ['--set', s]),
    '--wait', '--timeout', '4m']);
  if (r.code !== 0) {
    const pods = await c.kubectl(['get', 'pods,events', '-n', SYSTEM_NS, '-o', 'wide']);
    const agents = await c.kubectl(['get', 'pods,events', '-n', AGENTS_NS, '-o', 'wide']);
    throw new Error(`helm install: ${r.stderr.trim()}\n${pods.stdout}\n${agents.stdout}`);
  }
  await waitUntilRunning(c);
  return tls;
}

/** Every node's agent and both gateway replicas Ready. */
export async function waitUntilRunning(c: ClusterHandle): Promise<void> {
  await c.rollout(AGENTS_NS, 'daemonset/kube-pcap-agent', 180);
  await c.rollout(SYSTEM_NS, 'deployment/kube-pcap-gateway', 180);
  await waitFor(async () => {
    const agents = await c.pods(AGENTS_NS, 'app.kubernetes.io/name=kube-pcap-agent');
    return new Set(agents.filter((p) => p.ready).map((p) => p.node)).size === c.nodeNames.length;
  }, { what: 'an agent Ready on every node', timeoutMs: 60_000 });
}

/**
 * kube-pcap installed by the chart, for the tests that use it rather than test the install:
 * installs it when it is not there (a file run alone, or after the install test removed it).
 */
export async function ensureKubePcap(c: ClusterHandle): Promise<KubePcapTls> {
  const dir = join(c.info.logDir, '..', 'kube-pcap-tls');
  const status = await c.helm(['status', RELEASE, '--namespace', SYSTEM_NS]);
  const ca = await c.kubectl(['get', 'configmap', 'kube-pcap-gateway-ca', '-n', SYSTEM_NS, '-o', 'jsonpath={.data.ca\\.crt}']);
  if (status.code === 0 && /STATUS: deployed/.test(status.stdout) && ca.code === 0 && ca.stdout.includes('BEGIN CERTIFICATE')) {
    await waitUntilRunning(c);
    await mkdir(dir, { recursive: true });
    // What the ConfigMap publishes: all a client needs to verify the gateway.
    const gatewayCaFile = join(dir, 'published-gateway-ca.crt');
    await writeFile(gatewayCaFile, ca.stdout);
    return { dir, gatewayCaFile };
  }
  return await helmInstall(c, dir);
}
