// The fast tier's world: the gateway's two applications built in this process and driven
// through fastify's `inject`, two agents' applications built in this process and listening on
// loopback (the gateway reaches them over mutual TLS as in a cluster), real pcap files on
// disk, and one test double: the fake API server (fake-api-server.ts) for reviews and objects.
// No tcpdump runs here: the agents' view of what is being captured is fixed (CAPTURING).
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyInstance, RouteOptions } from 'fastify';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { buildAgentApp } from '../../src/agent/app.js';
import { CaptureStore } from '../../src/agent/capture-store.js';
import { FilePins } from '../../src/agent/file-pins.js';
import { RotationGate } from '../../src/agent/rotation-gate.js';
import { agentConfig, agentOptions } from '../../src/config/agent.js';
import { gatewayConfig, gatewayOptions } from '../../src/config/gateway.js';
import { parseOptions } from '../../src/config/options.js';
import { buildGatewayApp } from '../../src/gateway/app.js';
import { loadTls, withClientCa } from '../../src/http/tls.js';
import { KubeClient } from '../../src/kube/client.js';
import { nodeReportOf, reportsPath, type NodeReport, type NodeReportStatus } from '../../src/kube/node-report.js';
import { PACKETCAPTURE, capturesPath } from '../../src/kube/packetcapture.js';
import { AGENT_SERVER_NAME, AGENTS_NAMESPACE, makePki, scratchDir, type Pki } from '../harness/kube-pcap.js';
import { writeDnsPcap } from '../harness/pcap-fixtures.js';
import type { Teardown } from '../harness/cluster.js';
import { waitFor } from '../harness/wait.js';
import { FakeApiServer, type AccessQuestion } from './fake-api-server.js';

export const NS = 'storefront';
/** Capturing on both nodes, files on both. */
export const CAPTURING = 'dns';
/** Finished on both nodes: its files may be deleted, its stream ends. */
export const FINISHED = 'done';
/** Finished, its files on a node whose agent does not answer. */
export const UNREACHABLE = 'lost';
export const NODES = ['node-1', 'node-2'] as const;
const LOST_NODE = 'node-9';

/** Bearer tokens the fake API server knows, by who holds them. */
export const TOKENS = {
  devops: 'fast-devops-token',
  onlooker: 'fast-onlooker-token',
  scraper: 'fast-scraper-token',
  /** TokenReview of this one answers 503: the API server cannot be asked. */
  outage: 'fast-outage-token',
} as const;
const GATEWAY_TO_AGENTS = 'fast-gateway-agents-token';
const GATEWAY_SA = 'system:serviceaccount:kube-pcap:kube-pcap-gateway';

export interface FastWorld {
  api: FastifyInstance;
  ops: FastifyInstance;
  fake: FakeApiServer;
  pki: Pki;
  /** Every route the gateway's two applications registered, as "METHOD url". */
  routes: { api: string[]; ops: string[] };
  /** The files on each node, by "<node>/<file>". */
  files: Map<string, Buffer>;
}

function allow(q: AccessQuestion): boolean {
  if (q.path === '/metrics') return q.user === 'system:serviceaccount:monitoring:prometheus' && q.verb === 'get';
  const files = q.resource === 'packetcaptures' && q.subresource === 'files';
  if (q.user === GATEWAY_SA) return files && (q.verb === 'get' || q.verb === 'delete');
  if (q.user === `system:serviceaccount:${NS}:devops-sa`) return files && q.namespace === NS && (q.verb === 'get' || q.verb === 'delete');
  return false;
}

function capture(name: string, finished: boolean): { metadata: { name: string; namespace: string; uid: string }; [k: string]: unknown } {
  return {
    apiVersion: PACKETCAPTURE.apiVersion, kind: PACKETCAPTURE.kind,
    metadata: { name, namespace: NS, uid: `uid-${name}` },
    spec: { selector: 'app == "logging"', ...(finished ? { endTime: '2026-01-01T00:00:00Z' } : {}) },
  };
}

function report(captureName: string, node: string, state: NodeReportStatus['state'], fileNames: string[]): NodeReport {
  return nodeReportOf({ namespace: NS, name: captureName, uid: `uid-${captureName}` }, node, { state, fileNames, directory: `/var/lib/kube-pcap/${NS}/${captureName}` });
}

async function startAgent(t: Teardown, fake: FakeApiServer, pki: Pki, node: string, root: string, capturing: Set<string>, logFile: string): Promise<number> {
  const { values } = parseOptions('agent', agentOptions, [
    `--node-name=${node}`, `--client-ca-file=${pki.ca.certFile}`, `--tls-cert-file=${pki.agent.certFile}`, `--tls-key-file=${pki.agent.keyFile}`,
    `--capture-dir=${root}`, '--listen=127.0.0.1:0',
  ], {});
  const config = agentConfig(values);
  const log = pino({ level: 'warn' }, pino.destination({ dest: logFile, append: true, sync: true }));
  const kube = KubeClient.fromConnection({ server: fake.url, authorization: async () => `Bearer fast-agent-${node}` });
  const store = new CaptureStore(root);
  const pins = new FilePins({ root, store, gate: new RotationGate(), ttlMs: 60_000, maxPins: 16, log });
  const app = await buildAgentApp({
    kube, log, tls: await withClientCa(await loadTls(config.tls, 'kube-pcap-agent', log), config.clientCaFile, '--client-ca-file'),
    registry: new Registry(), store, pins, limits: config.limits, nodeName: node,
    activity: { isCapturing: (ns, name) => ns === NS && capturing.has(name), kernelDrops: () => new Map(), deletingFiles: () => Promise.resolve(), filesDeleted: () => undefined },
    authAudience: config.authAudience, gatewayClientNames: config.gatewayClientNames, apiTimeoutMs: 5000,
    notReadyReason: async () => undefined,
  });
  t.teardown(async () => {
    await app.close();
    await kube.close();
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  return (app.server.address() as { port: number }).port;
}

export async function fastWorld(t: Teardown, opts: { gatewayArgs?: string[] } = {}): Promise<FastWorld> {
  const dir = await scratchDir(t, 'fast');
  const pki = await makePki(t);
  const fake = new FakeApiServer({
    tokens: {
      [TOKENS.devops]: { username: `system:serviceaccount:${NS}:devops-sa` },
      [TOKENS.onlooker]: { username: `system:serviceaccount:${NS}:onlooker` },
      [TOKENS.scraper]: { username: 'system:serviceaccount:monitoring:prometheus' },
      [GATEWAY_TO_AGENTS]: { username: GATEWAY_SA, audiences: ['kube-pcap-agent'] },
    },
    unavailableTokens: [TOKENS.outage],
    allow,
  });
  await fake.start();
  t.teardown(() => fake.stop());

  const files = new Map<string, Buffer>();
  const capturing = new Set([CAPTURING]);
  for (const [i, node] of NODES.entries()) {
    const root = join(dir, node);
    for (const [name, state] of [[CAPTURING, 'Capturing'], [FINISHED, 'Finished']] as const) {
      const captureDir = join(root, NS, name);
      await mkdir(captureDir, { recursive: true });
      const names = [`logging-${i}_cali${i}-1700000000000001.pcap`, `logging-${i}_cali${i}.pcap`];
      for (const [f, file] of names.entries()) files.set(`${node}/${name}/${file}`, await writeDnsPcap(join(captureDir, file), 5 + f + i, { src: `192.0.2.${10 + i}`, startMicros: 1_700_000_000_000_000 + f * 1000 }));
      fake.put(reportsPath(NS), report(name, node, state, names.slice().sort()));
    }
    // One port for both agents is what a DaemonSet's EndpointSlice says; here each listens on
    // its own, so each gets its own slice.
    const port = await startAgent(t, fake, pki, node, root, capturing, join(dir, 'agents.log'));
    fake.put(`/apis/discovery.k8s.io/v1/namespaces/${AGENTS_NAMESPACE}/endpointslices`, {
      metadata: { name: `kube-pcap-agent-${node}`, namespace: AGENTS_NAMESPACE, labels: { 'kubernetes.io/service-name': 'kube-pcap-agent' } },
      addressType: 'IPv4', endpoints: [{ addresses: ['127.0.0.1'], nodeName: node, conditions: { ready: true } }], ports: [{ name: 'https', port, protocol: 'TCP' }],
    });
    fake.put('/api/v1/nodes', { metadata: { name: node } });
  }
  // A node whose agent does not answer: its slice names a port nothing listens on.
  fake.put(`/apis/discovery.k8s.io/v1/namespaces/${AGENTS_NAMESPACE}/endpointslices`, {
    metadata: { name: `kube-pcap-agent-${LOST_NODE}`, namespace: AGENTS_NAMESPACE, labels: { 'kubernetes.io/service-name': 'kube-pcap-agent' } },
    addressType: 'IPv4', endpoints: [{ addresses: ['127.0.0.1'], nodeName: LOST_NODE, conditions: { ready: true } }], ports: [{ name: 'https', port: 1, protocol: 'TCP' }],
  });
  fake.put('/api/v1/nodes', { metadata: { name: LOST_NODE } });
  for (const [name, finished] of [[CAPTURING, false], [FINISHED, true], [UNREACHABLE, true]] as const) fake.put(capturesPath(NS), capture(name, finished));
  fake.put(reportsPath(NS), report(UNREACHABLE, LOST_NODE, 'Finished', ['logging-9_cali9.pcap']));

  const tokenFile = join(dir, 'gateway-agent-token');
  await writeFile(tokenFile, GATEWAY_TO_AGENTS, { mode: 0o600 });
  const { values } = parseOptions('gateway', gatewayOptions, [
    `--tls-cert-file=${pki.gateway.certFile}`, `--tls-key-file=${pki.gateway.keyFile}`,
    `--agent-service=${AGENTS_NAMESPACE}/kube-pcap-agent`, `--agent-ca-file=${pki.ca.certFile}`, `--agent-server-name=${AGENT_SERVER_NAME}`,
    `--agent-token-file=${tokenFile}`, `--agent-client-cert-file=${pki.gatewayClient.certFile}`, `--agent-client-key-file=${pki.gatewayClient.keyFile}`,
    `--audit-log=${join(dir, 'audit.log')}`, '--leader-election-identity=fast',
    ...(opts.gatewayArgs ?? []),
  ], {});
  const config = gatewayConfig(values);
  const log = pino({ level: 'warn' }, pino.destination({ dest: join(dir, 'gateway.log'), append: true, sync: true }));
  const kube = KubeClient.fromConnection({ server: fake.url, authorization: async () => 'Bearer fast-gateway-token' });
  const routes = { api: [] as string[], ops: [] as string[] };
  const onRoute = (into: string[]) => (r: RouteOptions): void => {
    for (const m of [r.method].flat()) if (m !== 'HEAD') into.push(`${m} ${r.url}`);
  };
  const { api, ops } = await buildGatewayApp({ config, kube, log, tls: await loadTls(config.tls, 'kube-pcap-gateway', log), onRoute: { api: onRoute(routes.api), ops: onRoute(routes.ops) } });
  t.teardown(async () => {
    await api.close();
    await ops.close();
    await kube.close();
  });
  await api.ready();
  await ops.ready();
  await waitFor(async () => (await ops.inject({ method: 'GET', url: '/readyz' })).statusCode === 200, { what: 'the gateway to be ready (agents\' endpoints synced, API server answering)', timeoutMs: 10_000, intervalMs: 20 });
  return { api, ops, fake, pki, routes, files };
}
