// kube-pcap's own components as real processes against the test control plane: agents and
// gateways started from dist/src/cli.js with their ServiceAccounts' real tokens, the RBAC
// of deploy/, TLS from a test CA, and the EndpointSlices the EndpointSlice controller would
// publish for the agents' headless Service.
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NODE_FLAGS } from '../../src/node-flags.js';
import { createCertificateAuthority, issueCertificate, type KeyPair } from '../../src/tls/certificates.js';
import { uniqueName, type Teardown, type TestCluster } from './cluster.js';
import { REPO_ROOT } from './control-plane.js';
import { installCrd } from './crd.js';
import { ensureNode } from './node-reports.js';
import { https } from './http.js';
import { OwnedProcess } from './processes.js';
import { agentPrivileges, setprivArgs, type ContainerPrivileges } from './shipped-privileges.js';
import { waitFor } from './wait.js';

export const CLI = join(REPO_ROOT, 'dist', 'src', 'cli.js');
/** The gateway's namespace (deploy/namespace.yaml). */
export const SYSTEM_NAMESPACE = 'kube-pcap';
/** The agents' namespace, apart from the gateway's (docs/security.md, "Trust boundaries"). */
export const AGENTS_NAMESPACE = 'kube-pcap-agents';
export const AGENT_SERVER_NAME = 'kube-pcap-agent.kube-pcap-agents.svc';

/** A scratch directory under the sandbox's /tmp, removed on teardown. */
export async function scratchDir(t: Teardown, prefix: string): Promise<string> {
  const root = join(process.env.KUBE_PCAP_TMP ?? '/tmp', 'kube-pcap-test');
  await mkdir(root, { recursive: true });
  const dir = await mkdtemp(join(root, `${prefix}-`));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export interface Pki {
  dir: string;
  ca: KeyPair;
  gateway: KeyPair;
  agent: KeyPair;
  /** The gateway's client certificate for the agents (mutual TLS). */
  gatewayClient: KeyPair;
}

/** A CA with a gateway certificate (localhost) and the agents' certificate (service name). */
export async function makePki(t: Teardown): Promise<Pki> {
  const dir = await scratchDir(t, 'pki');
  const ca = await createCertificateAuthority(dir, 'ca', 'kube-pcap test CA');
  const gateway = await issueCertificate(dir, 'gateway', ca, { commonName: 'kube-pcap-gateway', usage: 'server', dnsNames: ['localhost', 'kube-pcap-gateway.kube-pcap.svc'], ipAddresses: ['127.0.0.1'] });
  const agent = await issueCertificate(dir, 'agent', ca, { commonName: AGENT_SERVER_NAME, usage: 'server', dnsNames: [AGENT_SERVER_NAME] });
  const gatewayClient = await issueCertificate(dir, 'gateway-client', ca, { commonName: 'kube-pcap-gateway', usage: 'client' });
  return { dir, ca, gateway, agent, gatewayClient };
}

/** deploy/'s namespace, ServiceAccounts and RBAC for the gateway and the agents (idempotent). */
export async function installKubePcap(c: TestCluster): Promise<void> {
  await installCrd(c);
  for (const f of ['namespace.yaml', 'gateway/serviceaccount.yaml', 'gateway/rbac.yaml', 'gateway/ca-reader-rbac.yaml', 'agent/serviceaccount.yaml', 'agent/rbac.yaml', 'agent/report-policy.yaml']) {
    await c.applyYaml(join(REPO_ROOT, 'deploy', f));
  }
}

/**
 * A kubeconfig that authenticates as a ServiceAccount with a real token; with `boundNode`,
 * one bound to that node as a DaemonSet pod's token is (an agent's: deploy/agent/report-policy.yaml).
 */
export async function serviceAccountKubeconfig(c: TestCluster, dir: string, namespace: string, sa: string, server = c.info.server, boundNode?: string): Promise<string> {
  const token = await c.tokenFor(namespace, sa, { expirationSeconds: 7200, boundNode });
  const file = join(dir, `${sa}${boundNode ? `-${boundNode}` : ''}.kubeconfig`);
  await writeFile(file, [
    'apiVersion: v1', 'kind: Config',
    'clusters:', '- name: test', '  cluster:', `    server: ${server}`, `    certificate-authority: ${c.info.caFile}`,
    'users:', `- name: ${sa}`, '  user:', `    token: ${token}`,
    'contexts:', '- name: test', `  context: {cluster: test, user: ${sa}}`,
    'current-context: test', '',
  ].join('\n'));
  return file;
}

/**
 * Waits for the "Server listening at https://host:port" log line and returns the port: the
 * main listener's, or with `listener`, the one whose log lines carry that name (the
 * gateway's operations listener, "ops").
 */
async function listeningPort(proc: OwnedProcess, listener?: string): Promise<number> {
  return await waitFor(async () => {
    if (!proc.running) throw await proc.failure('exited before listening');
    const log = await readFile(proc.opts.logFile, 'utf8').catch(() => '');
    for (const line of log.split('\n')) {
      const m = /Server listening at https:\/\/[^"]*:(\d+)"/.exec(line);
      const of = /"listener":"([^"]+)"/.exec(line)?.[1];
      if (m && of === listener) return Number(m[1]);
    }
    return undefined;
  }, { what: `${proc.opts.name} to listen${listener ? ` (${listener})` : ''}`, timeoutMs: 20_000, intervalMs: 50 });
}

export interface AgentHandle {
  node: string;
  address: string;
  port: number;
  captureDir: string;
  logFile: string;
  proc: OwnedProcess;
}

export interface AgentOptions {
  node: string;
  /** Address to listen on (a node address: EndpointSlices refuse loopback). */
  address: string;
  port?: number;
  captureDir: string;
  pki: Pki;
  /** Run inside this network namespace (the node's). */
  netnsPid?: number;
  /** How the agent reaches the API server (from a node namespace: the bridge address). */
  apiServer?: string;
  extraArgs?: string[];
  logDir: string;
  /** Source-mapped stack traces (default); benchmarks turn them off, as the images do. */
  sourceMaps?: boolean;
  /**
   * The privileges the agent runs with: by default exactly those of the shipped DaemonSet
   * (shipped-privileges.ts), never the test's root.
   */
  privileges?: ContainerPrivileges;
}

export async function startAgent(t: Teardown, c: TestCluster, o: AgentOptions): Promise<AgentHandle> {
  // A real cluster's node has its Node object: the status aggregator drops the reports of
  // nodes without one.
  await ensureNode(await c.rest(), o.node);
  const kubeconfig = await serviceAccountKubeconfig(c, o.logDir, AGENTS_NAMESPACE, 'kube-pcap-agent', o.apiServer, o.node);
  const logFile = join(o.logDir, `${uniqueName(`agent-${o.node}`)}.log`);
  const proc = new OwnedProcess(process.execPath, [
    ...NODE_FLAGS, ...(o.sourceMaps === false ? [] : ['--enable-source-maps']), CLI, 'agent',
    `--node-name=${o.node}`,
    `--listen=${o.address}:${o.port ?? 0}`,
    `--capture-dir=${o.captureDir}`,
    `--tls-cert-file=${o.pki.agent.certFile}`,
    `--tls-key-file=${o.pki.agent.keyFile}`,
    `--client-ca-file=${o.pki.ca.certFile}`,
    `--kubeconfig=${kubeconfig}`,
    '--log-level=debug',
    ...(o.extraArgs ?? []),
  ], { name: `agent ${o.node}`, logFile, netnsPid: o.netnsPid, env: { ...process.env, KUBECONFIG: '' }, privileges: setprivArgs(o.privileges ?? await agentPrivileges()) });
  t.teardown(() => proc.stop());
  const port = await listeningPort(proc);
  return { node: o.node, address: o.address, port, captureDir: o.captureDir, logFile, proc };
}

/** Publishes agents as the EndpointSlice controller would for the agents' headless Service. */
export async function publishAgents(c: TestCluster, service: string, agents: { node: string; address: string; port: number }[]): Promise<void> {
  for (const a of agents) {
    await c.applyManifest(JSON.stringify({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${service}-${a.node}`, namespace: AGENTS_NAMESPACE, labels: { 'kubernetes.io/service-name': service } },
      addressType: 'IPv4',
      endpoints: [{ addresses: [a.address], nodeName: a.node, conditions: { ready: true } }],
      ports: [{ name: 'https', port: a.port, protocol: 'TCP' }],
    }));
  }
}

export interface GatewayHandle {
  url: string;
  port: number;
  /** The operations listener: /healthz, /readyz, /metrics. */
  opsUrl: string;
  /** A token allowed to read its /metrics (metricsReaderToken). */
  metricsToken: string;
  logFile: string;
  proc: OwnedProcess;
  agentService: string;
}

export interface GatewayOptions {
  pki: Pki;
  /** A fixed identity in the aggregator's Lease (a random suffix is still added). */
  identity?: string;
  logDir: string;
  agentService: string;
  /** A private control plane's cluster when the test stops the API server. */
  extraArgs?: string[];
  name?: string;
  sourceMaps?: boolean;
  /** The main listener's address (default 127.0.0.1; 0.0.0.0 for a client in another network namespace). The URL stays 127.0.0.1. */
  listen?: string;
  /**
   * Run PacketCaptureExports (as every gateway does by default). Off unless asked: test files
   * share one API server, and an exporter leading in one file would take up another file's
   * exports without reaching its agents.
   */
  exports?: boolean;
  /** More environment (the AWS SDK's default credential chain reads AWS_ACCESS_KEY_ID...). */
  env?: Record<string, string>;
}

export async function startGateway(t: Teardown, c: TestCluster, o: GatewayOptions): Promise<GatewayHandle> {
  const kubeconfig = await serviceAccountKubeconfig(c, o.logDir, SYSTEM_NAMESPACE, 'kube-pcap-gateway');
  const tokenFile = join(o.logDir, 'gateway-agent-token');
  await writeFile(tokenFile, await c.tokenFor(SYSTEM_NAMESPACE, 'kube-pcap-gateway', { audience: 'kube-pcap-agent', expirationSeconds: 7200 }));
  const name = o.name ?? uniqueName('gateway');
  const logFile = join(o.logDir, `${name}.log`);
  const proc = new OwnedProcess(process.execPath, [
    ...NODE_FLAGS, ...(o.sourceMaps === false ? [] : ['--enable-source-maps']), CLI, 'gateway',
    `--listen=${o.listen ?? '127.0.0.1'}:0`,
    '--ops-listen=127.0.0.1:0',
    `--tls-cert-file=${o.pki.gateway.certFile}`,
    `--tls-key-file=${o.pki.gateway.keyFile}`,
    `--kubeconfig=${kubeconfig}`,
    `--agent-service=${AGENTS_NAMESPACE}/${o.agentService}`,
    `--agent-ca-file=${o.pki.ca.certFile}`,
    `--agent-server-name=${AGENT_SERVER_NAME}`,
    `--agent-token-file=${tokenFile}`,
    `--agent-client-cert-file=${o.pki.gatewayClient.certFile}`,
    `--agent-client-key-file=${o.pki.gatewayClient.keyFile}`,
    '--log-level=debug',
    `--leader-election-identity=${o.identity ?? name}`,
    ...(o.exports ? [] : ['--disable-exports']),
    ...(o.extraArgs ?? []),
  ], { name, logFile, env: { ...process.env, KUBECONFIG: '', ...o.env } });
  t.teardown(() => proc.stop());
  const port = await listeningPort(proc);
  const url = `https://127.0.0.1:${port}`;
  const opsUrl = `https://127.0.0.1:${await listeningPort(proc, 'ops')}`;
  await waitFor(async () => (await https(`${opsUrl}/readyz`, { caFile: o.pki.ca.certFile })).status === 200, { what: `${name} /readyz`, timeoutMs: 20_000 });
  return { url, port, opsUrl, metricsToken: await metricsReaderToken(c), logFile, proc, agentService: o.agentService };
}

/**
 * A token allowed to read the agents' /metrics: a ServiceAccount bound to
 * rbac-examples/metrics-reader.yaml's ClusterRole (as a Prometheus would be).
 */
export async function metricsReaderToken(c: TestCluster): Promise<string> {
  let token = scraperTokens.get(c);
  if (!token) {
    token = newMetricsReaderToken(c);
    scraperTokens.set(c, token);
  }
  return await token;
}
const scraperTokens = new WeakMap<TestCluster, Promise<string>>();

async function newMetricsReaderToken(c: TestCluster): Promise<string> {
  await installKubePcap(c);
  const [role] = await c.applyYaml(join(REPO_ROOT, 'rbac-examples', 'metrics-reader.yaml'));
  const sa = uniqueName('scraper');
  await c.createServiceAccount(SYSTEM_NAMESPACE, sa);
  await c.applyManifest(JSON.stringify({
    apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name: sa },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role!.metadata!.name },
    subjects: [{ kind: 'ServiceAccount', name: sa, namespace: SYSTEM_NAMESPACE }],
  }));
  return await c.tokenFor(SYSTEM_NAMESPACE, sa);
}

/**
 * A metric of an agent's /metrics, summed over its series (those whose labels contain
 * `labels`, when given), read with a token allowed get /metrics (metricsReaderToken).
 */
export async function agentMetric(agent: { address: string; port: number }, pki: Pki, token: string, name: string, labels?: string): Promise<number> {
  const res = await https(`https://${agent.address}:${agent.port}/metrics`, { caFile: pki.ca.certFile, servername: AGENT_SERVER_NAME, token });
  if (res.status !== 200) throw new Error(`/metrics of the agent at ${agent.address}:${agent.port}: ${res.status}`);
  return metricValue(res.body.toString(), name, labels);
}

/** A gateway's /metrics, read on its operations listener with a scraper's token. */
export async function gatewayMetricsText(gateway: Pick<GatewayHandle, 'opsUrl' | 'metricsToken'>, pki: Pki): Promise<string> {
  const res = await https(`${gateway.opsUrl}/metrics`, { caFile: pki.ca.certFile, token: gateway.metricsToken });
  if (res.status !== 200) throw new Error(`/metrics of the gateway at ${gateway.opsUrl}: ${res.status}`);
  return res.body.toString();
}

/** A metric of a gateway's /metrics, summed over its series. */
export async function gatewayMetric(gateway: Pick<GatewayHandle, 'opsUrl' | 'metricsToken'>, pki: Pki, name: string, labels?: string): Promise<number> {
  return metricValue(await gatewayMetricsText(gateway, pki), name, labels);
}

/** A metric in Prometheus' text format, summed over its series (those whose labels contain `labels`, when given). */
function metricValue(text: string, name: string, labels?: string): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name} `) && !line.startsWith(`${name}{`)) continue;
    if (labels !== undefined && !line.includes(labels)) continue;
    total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}
