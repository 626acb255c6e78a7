// npm run bench:scale — what kube-pcap costs the API server, the agents and the gateway as
// the cluster grows (docs/status.md). 1 000 real agents do not fit on two cores, so:
// --probes real agents in real node namespaces, each capturing a real pod's traffic, plus
// nodes played at the API level by bench/sim-nodes.ts (their Node and Pod objects, their
// agents' watches opened and byte-counted, their reports written with the agents' identity,
// their files served to the gateway by a stand-in endpoint). For each N of --sizes, one
// capture selecting one pod per node is started, held steady, listed and downloaded, and
// stopped; each figure is printed per N with the exponent of its growth (least squares of
// log figure on log N). Then 1 000 captures on one node (agent RSS and CPU per resync), and
// many concurrent downloads of one 4.5 MiB capture (gateway RSS against concurrency).
//
//   npm run bench:scale [-- --sizes 50,100,200,400,800 --probes 12 --steady-seconds 20]
import { readFile } from 'node:fs/promises';
import { availableParallelism, cpus, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { connect } from '../src/kube/config.js';
import { reportsPath, type NodeReport } from '../src/kube/node-report.js';
import { capturesPath, getPacketCapture } from '../src/kube/packetcapture.js';
import { createLogger } from '../src/log/logger.js';
import { Reflector } from '../src/kube/reflector.js';
import { bridgeAddress } from '../test/harness/addresses.js';
import type { KubeClient } from '../src/kube/client.js';
import { createPodObject, Topology } from '../test/harness/topology.js';
import { TestCluster } from '../test/harness/cluster.js';
import { ControlPlane, REPO_ROOT } from '../test/harness/control-plane.js';
import { startDnsSender } from '../test/harness/dns-sender.js';
import { apiServerRequestCounts } from '../test/harness/apiserver-metrics.js';
import { AGENTS_NAMESPACE, gatewayMetric, installKubePcap, makePki, publishAgents, scratchDir, serviceAccountKubeconfig, startAgent, startGateway, type AgentHandle, type GatewayHandle, type Pki } from '../test/harness/kube-pcap.js';
import { writeDnsPcap } from '../test/harness/pcap-fixtures.js';
import { shippedMemoryLimitMiB } from '../test/harness/shipped-privileges.js';
import { waitFor } from '../test/harness/wait.js';
import { join } from 'node:path';
import { cpuSeconds, peakRssBytes, percentile, runBench, Teardowns } from './lib.js';
import { SimNode, simDispatcher, type SimContext } from './sim-nodes.js';

const { values: args } = parseArgs({
  options: {
    sizes: { type: 'string', default: '50,100,200,400,800' },
    probes: { type: 'string', default: '12' },
    'steady-seconds': { type: 'string', default: '20' },
    captures: { type: 'string', default: '1000' },
    concurrency: { type: 'string', default: '10,50,200,500' },
    sections: { type: 'string', default: 'sweep,many,downloads' },
    // As deploy/gateway/deployment.yaml starts the gateway.
    'gateway-node-options': { type: 'string', default: '--max-old-space-size=128' },
  },
});
const SIZES = args.sizes.split(',').map(Number).sort((a, b) => a - b);
const PROBES = Number(args.probes);
const STEADY_S = Number(args['steady-seconds']);
const MANY = Number(args.captures);
const CONCURRENCY = args.concurrency.split(',').map(Number);
const SECTIONS = new Set(args.sections.split(','));
const LABELS = { app: 'scale' };
const MiB = 2 ** 20;

interface Probes {
  kube: KubeClient;
  ns: string;
  pki: Pki;
  logDir: string;
  agents: AgentHandle[];
  agentService: string;
}

/**
 * The real agents: nodes as network namespaces (four per topology: its pod ranges), one
 * pod each with a little traffic (UDP from the pod to its node, answered by ICMP), each
 * node's agent with the shipped privileges, published in the agents' Service.
 */
async function probes(td: Teardowns, c: TestCluster, count: number): Promise<Probes> {
  await installKubePcap(c);
  const pki = await makePki(td);
  const logDir = await scratchDir(td, 'bench-scale');
  const ns = await c.createNamespace('storefront');
  const kube = await connect(c.info.kubeconfig);
  td.teardown(() => kube.close());
  const agents: AgentHandle[] = [];
  let topo: Topology | undefined;
  for (let i = 0; i < count; i++) {
    if (i % 4 === 0) topo = new Topology(td, logDir);
    const node = await topo!.addNode(`probe-${String(i + 1).padStart(2, '0')}`);
    const pod = await topo!.addPod(node, ns, `probe-${i + 1}`);
    await createPodObject(c, { namespace: ns, name: pod.name, node: node.name, ip: pod.ip, labels: LABELS });
    startDnsSender(td, pod, node.ip, `probe${i + 1}`, 0, 200, logDir);
    const captureDir = await scratchDir(td, `captures-${node.name}`);
    // Probes log at debug: the resync line says how many captures the agent holds.
    agents.push(await startAgent(td, c, {
      node: node.name, address: node.ip, captureDir, pki, logDir, netnsPid: node.ns.pid,
      apiServer: `https://${process.env.KUBE_PCAP_BRIDGE_IP}:${c.info.port}`, sourceMaps: false,
      extraArgs: ['--status-interval-ms=1000', '--resync-seconds=10', `--cni-results-dir=${topo!.cniResultsDir(node)}`],
    }));
  }
  const agentService = 'kube-pcap-agent-bench';
  await publishAgents(c, agentService, agents);
  return { kube, ns, pki, logDir, agents, agentService };
}

async function rssBytes(pid: number): Promise<number> {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? NaN) * 1024;
}

function rates(before: Map<string, number>, after: Map<string, number>, seconds: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const [k, v] of after) {
    const d = v - (before.get(k) ?? 0);
    if (d > 0) out.set(k, d / seconds);
  }
  return out;
}

const INTEREST = ['packetcaptures', 'packetcaptures/status', 'packetcapturenodereports', 'pods', 'nodes', 'leases'];
function summarizeRates(r: Map<string, number>): string {
  const parts: string[] = [];
  for (const [k, v] of [...r].sort((a, b) => b[1] - a[1])) {
    const resource = k.split(' ')[1]!;
    if (!INTEREST.includes(resource) || k.startsWith('WATCH')) continue;
    parts.push(`${k} ${v.toFixed(1)}/s`);
  }
  return parts.slice(0, 6).join(', ');
}

/** Slope of log(y) on log(x): the growth exponent. */
function exponent(xs: number[], ys: number[]): number {
  const pts = xs.map((x, i) => [Math.log(x), Math.log(Math.max(ys[i]!, 1e-9))] as const).filter(([, y]) => Number.isFinite(y));
  const n = pts.length;
  const mx = pts.reduce((s, [x]) => s + x, 0) / n;
  const my = pts.reduce((s, [, y]) => s + y, 0) / n;
  const num = pts.reduce((s, [x, y]) => s + (x - mx) * (y - my), 0);
  const den = pts.reduce((s, [x]) => s + (x - mx) ** 2, 0);
  return num / den;
}

function extrapolate(xs: number[], ys: number[], at: number): number {
  const k = exponent(xs, ys);
  const last = xs.length - 1;
  return ys[last]! * (at / xs[last]!) ** k;
}

interface Row {
  n: number;
  startP50: number;
  startP99: number;
  probeP99: number;
  allCapturingMs: number;
  statusConvergedMs: number;
  watchBytesStart: number;
  watchBytesSteady: number;
  watchBytesStop: number;
  getBytesPerAgent: number;
  statusWritesSteady: number;
  reportWritesSteady: number;
  apiStart: string;
  apiSteady: string;
  apiStop: string;
  pcBytes: number;
  pcManagedBytes: number;
  largestReport: number;
  listColdMs: number;
  listWarmMs: number;
  firstByteMs: number;
  gatewayRss: number;
  agentRss: number;
}

async function main(): Promise<void> {
  const td = new Teardowns();
  try {
    const cpu = cpus()[0]?.model ?? 'unknown CPU';
    process.stdout.write(`kube-pcap scale benchmark: N = ${SIZES.join(', ')} nodes (${PROBES} real agents, the rest played at the API level), ${availableParallelism()} cores (${cpu}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB\n`);
    const cp = await ControlPlane.start({ bindAddress: '0.0.0.0', extraAddresses: [process.env.KUBE_PCAP_BRIDGE_IP!] });
    td.teardown(() => cp.stop());
    const c = new TestCluster(cp.info, cp);
    const w = await probes(td, c, PROBES);
    const kube = w.kube;
    const rename = { renameNamespace: { from: 'storefront', to: w.ns } };
    for (const f of ['devops-serviceaccount.yaml', 'files-role.yaml']) await c.applyYaml(join(REPO_ROOT, 'rbac-examples', f), rename);
    const userToken = await c.tokenFor(w.ns, 'devops-sa', { expirationSeconds: 7200 });
    const gateway = await startShippedGateway(td, c, { pki: w.pki, logDir: w.logDir, agentService: w.agentService, extraArgs: ['--log-level=info', '--max-downloads-per-user=0', '--max-live-streams-per-user=0', '--max-requests-per-user=0'], sourceMaps: false });
    // The played nodes share one identity with the agents' ClusterRole. The real agents'
    // ServiceAccount writes only its token's node's reports (deploy/agent/report-policy.yaml),
    // and a token per played node would measure TokenRequests, not the API's load.
    await c.createServiceAccount(AGENTS_NAMESPACE, 'played-nodes');
    await c.applyManifest(JSON.stringify({
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name: 'kube-pcap-played-nodes' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'kube-pcap-agent' },
      subjects: [{ kind: 'ServiceAccount', name: 'played-nodes', namespace: AGENTS_NAMESPACE }],
    }));
    const agentKube = await connect(await serviceAccountKubeconfig(c, w.logDir, AGENTS_NAMESPACE, 'played-nodes'));
    td.teardown(() => agentKube.close());
    const agentToken = await c.tokenFor(AGENTS_NAMESPACE, 'played-nodes', { expirationSeconds: 7200 });
    const address = await bridgeAddress(td);
    const dispatcher = simDispatcher(await readFile(c.info.caFile));
    td.teardown(() => dispatcher.close());

    const states = new Map<string, { state: string; at: number }>();
    const ctx: SimContext = { c, agentKube, agentToken, pki: w.pki, address, namespace: w.ns, labels: LABELS };
    const sims: SimNode[] = [];
    td.teardown(() => Promise.all(sims.map((s) => s.stop())));
    const probeNames = new Set(w.agents.map((a) => a.node));
    const rows: Row[] = [];
    const userDispatcher = new Agent({ connect: { ca: await readFile(w.pki.ca.certFile) } });
    td.teardown(() => userDispatcher.close());

    // Every node's report, watched as an observer (admin): when did each reach each state.
    const reports = new Reflector<NodeReport>(kube, { path: reportsPath(w.ns), log: createLogger('warn', 'bench-observer') });
    let currentUid = '';
    reports.on('change', (_t, r) => {
      if (!r || r.spec.captureUID !== currentUid || !r.status?.state) return;
      const prev = states.get(r.spec.nodeName);
      if (prev?.state !== r.status.state) states.set(r.spec.nodeName, { state: r.status.state, at: Date.now() });
    });
    reports.start();
    td.teardown(() => reports.stop());

    const watchBytes = (): number => sims.reduce((n, s) => n + s.watchBytes, 0);
    const getBytes = (): number => sims.reduce((n, s) => n + s.getBytes, 0);
    const reportWrites = (): number => sims.reduce((n, s) => n + s.reportWrites, 0);
    const refused = (): number => sims.reduce((n, s) => n + s.refused, 0);

    for (const n of SECTIONS.has('sweep') ? SIZES : []) {
      // Grow the played nodes to N − probes.
      const want = n - PROBES;
      const fresh: SimNode[] = [];
      while (sims.length < want) {
        const s = new SimNode(`sim-${String(sims.length).padStart(4, '0')}`, ctx, dispatcher);
        sims.push(s);
        fresh.push(s);
      }
      for (let i = 0; i < fresh.length; i += 25) await Promise.all(fresh.slice(i, i + 25).map((s) => s.start()));
      await publishAgents(c, w.agentService, fresh.map((s) => ({ node: s.name, address, port: s.port })));
      // Let the new nodes' objects and watches settle before measuring.
      await waitFor(async () => (await kube.request<{ items: unknown[] }>({ path: '/api/v1/nodes', query: { limit: 5000 } })).items.length >= n, { what: 'every Node object', timeoutMs: 60_000 });

      const name = `scale-${n}`;
      // --- start ---
      states.clear();
      const api0 = await apiServerRequestCounts(c);
      const wb0 = watchBytes();
      const gb0 = getBytes();
      const refused0 = refused();
      const t0 = Date.now();
      for (const s of sims) s.follow(name);
      const created = await kube.request<{ metadata: { uid: string } }>({ method: 'POST', path: capturesPath(w.ns), body: { apiVersion: 'projectcalico.org/v3', kind: 'PacketCapture', metadata: { name, namespace: w.ns }, spec: { selector: 'app == "scale"' } } });
      currentUid = created.metadata.uid;
      await waitFor(() => states.size >= n && [...states.values()].every((s) => s.state === 'Capturing'), { what: `all ${n} nodes Capturing`, timeoutMs: 120_000, intervalMs: 20 });
      const capturingAt = [...states.entries()].map(([node, s]) => ({ node, ms: s.at - t0 }));
      const allCapturingMs = Math.max(...capturingAt.map((x) => x.ms));
      await waitFor(async () => (await getPacketCapture(kube, w.ns, name))?.status?.summary === `${n} Capturing`, { what: 'the status to say every node Capturing', timeoutMs: 120_000, intervalMs: 50 });
      const statusConvergedMs = Date.now() - t0;
      const startS = (Date.now() - t0) / 1000;
      const api1 = await apiServerRequestCounts(c);
      const wb1 = watchBytes();
      const gb1 = getBytes();
      const refusedStart = refused() - refused0;

      // Sizes, once every node is in the status.
      const full = await kube.request<{ metadata: { managedFields?: unknown[] } }>({ path: `${capturesPath(w.ns)}/${name}` });
      const pcBytes = JSON.stringify(full).length;
      const pcManagedBytes = JSON.stringify(full.metadata.managedFields ?? []).length;
      const list = await kube.request<{ items: NodeReport[] }>({ path: reportsPath(w.ns), query: { labelSelector: `kube-pcap.io/capture-uid=${currentUid}` } });
      const largestReport = Math.max(...list.items.map((r) => JSON.stringify(r).length));

      // --- steady --- (a measurement window, not a wait for anything)
      const writes0 = await gatewayMetric(gateway, w.pki, 'kube_pcap_gateway_status_writes_total');
      const rw0 = reportWrites();
      const ts = Date.now();
      await new Promise((r) => setTimeout(r, STEADY_S * 1000));
      const steadyS = (Date.now() - ts) / 1000;
      const api2 = await apiServerRequestCounts(c);
      const wb2 = watchBytes();
      const statusWritesSteady = ((await gatewayMetric(gateway, w.pki, 'kube_pcap_gateway_status_writes_total')) - writes0) / steadyS;
      const reportWritesSteady = (reportWrites() - rw0) / steadyS;

      // --- the gateway: list every node's files (cold, warm), first zip byte ---
      const filesUrl = `${gateway.url}/packet-capture/files/${w.ns}/${name}`;
      const timed = async (url: string): Promise<{ ms: number; status: number; firstByteMs: number }> => {
        const t = Date.now();
        const res = await request(url, { headers: { authorization: `Bearer ${userToken}` }, dispatcher: userDispatcher });
        let firstByteMs = NaN;
        for await (const chunk of res.body) {
          if (Number.isNaN(firstByteMs) && (chunk as Buffer).length > 0) firstByteMs = Date.now() - t;
        }
        return { ms: Date.now() - t, status: res.statusCode, firstByteMs };
      };
      const cold = await timed(filesUrl);
      const warm = await timed(filesUrl);
      if (cold.status !== 200 || warm.status !== 200) throw new Error(`listing ${n} nodes answered ${cold.status}/${warm.status}`);
      const zip = await timed(`${gateway.url}/packet-capture/download/${w.ns}/${name}/files.zip`);
      if (zip.status !== 200) throw new Error(`files.zip of ${n} nodes answered ${zip.status}`);

      // --- stop ---
      const api3 = await apiServerRequestCounts(c);
      const wb3 = watchBytes();
      const refused3 = refused();
      const t3 = Date.now();
      await kube.request({ method: 'PATCH', path: `${capturesPath(w.ns)}/${name}`, contentType: 'application/merge-patch+json', body: { spec: { endTime: new Date(Date.now() - 1000).toISOString() } } });
      await waitFor(async () => {
        const summary = (await getPacketCapture(kube, w.ns, name))?.status?.summary;
        if (summary !== `${n} Finished`) throw new Error(`status.summary "${summary}"; reports not Finished: ${[...states].filter(([, s]) => s.state !== 'Finished').map(([node, s]) => `${node} ${s.state}`).slice(0, 10).join(', ')}`);
        return true;
      }, { what: 'the status to say every node Finished', timeoutMs: 120_000, intervalMs: 50 });
      const stopS = (Date.now() - t3) / 1000;
      const api4 = await apiServerRequestCounts(c);
      const wb4 = watchBytes();
      const gb4 = getBytes();
      const refusedStop = refused() - refused3;

      const probeTimes = capturingAt.filter((x) => probeNames.has(x.node)).map((x) => x.ms);
      const agents = w.agents;
      const row: Row = {
        n,
        startP50: percentile(capturingAt.map((x) => x.ms), 50),
        startP99: percentile(capturingAt.map((x) => x.ms), 99),
        probeP99: percentile(probeTimes, 99),
        allCapturingMs,
        statusConvergedMs,
        watchBytesStart: (wb1 - wb0) / sims.length,
        watchBytesSteady: (wb2 - wb1) / sims.length / steadyS,
        watchBytesStop: (wb4 - wb3) / sims.length,
        getBytesPerAgent: (gb1 - gb0 + gb4 - gb1) / sims.length / 2,
        statusWritesSteady,
        reportWritesSteady,
        apiStart: summarizeRates(rates(api0, api1, startS)),
        apiSteady: summarizeRates(rates(api1, api2, steadyS)),
        apiStop: summarizeRates(rates(api3, api4, stopS)),
        pcBytes,
        pcManagedBytes,
        largestReport,
        listColdMs: cold.ms,
        listWarmMs: warm.ms,
        firstByteMs: zip.firstByteMs,
        gatewayRss: await rssBytes(gateway.proc.pid!),
        agentRss: (await Promise.all(agents.map((a) => rssBytes(a.proc.pid!)))).reduce((s, x) => s + x, 0) / agents.length,
      };
      rows.push(row);
      process.stdout.write(`\nN = ${n}\n`);
      process.stdout.write(`  start: every node Capturing ${row.allCapturingMs} ms after the create (p50 ${row.startP50} ms, p99 ${row.startP99} ms; real agents' p99 ${row.probeP99} ms); status says so after ${row.statusConvergedMs} ms; requests refused by the API server (429) and retried: ${refusedStart}\n`);
      process.stdout.write(`  watch bytes per agent: start ${row.watchBytesStart.toFixed(0)}, steady ${row.watchBytesSteady.toFixed(1)}/s, stop ${row.watchBytesStop.toFixed(0)}; GET bytes per agent per spec change ${row.getBytesPerAgent.toFixed(0)}\n`);
      process.stdout.write(`  writes: status ${row.statusWritesSteady.toFixed(2)}/s per capture (steady), reports ${row.reportWritesSteady.toFixed(2)}/s (steady)\n`);
      process.stdout.write(`  stop: status says every node Finished after ${(stopS * 1000).toFixed(0)} ms; requests refused (429) and retried: ${refusedStop}\n`);
      process.stdout.write(`  API server, start: ${row.apiStart}\n  API server, steady: ${row.apiSteady}\n  API server, stop: ${row.apiStop}\n`);
      process.stdout.write(`  PacketCapture ${(row.pcBytes / 1024).toFixed(1)} KiB (managedFields ${(row.pcManagedBytes / 1024).toFixed(2)} KiB), largest report ${row.largestReport} B\n`);
      process.stdout.write(`  gateway: listing every node's files ${row.listColdMs} ms cold, ${row.listWarmMs} ms warm; first zip byte ${row.firstByteMs} ms; RSS ${(row.gatewayRss / MiB).toFixed(0)} MiB; real agents' RSS ${(row.agentRss / MiB).toFixed(0)} MiB\n`);
      for (const s of sims) s.follow(undefined);
      await kube.request({ method: 'DELETE', path: `${capturesPath(w.ns)}/${name}` });
    }

    // --- the fits ---
    const xs = rows.map((r) => r.n);
    if (rows.length >= 2) {
    const fit = (label: string, pick: (r: Row) => number, unit: string): void => {
      const ys = rows.map(pick);
      process.stdout.write(`  ${label.padEnd(48)} ${ys.map((y) => `${y.toFixed(unit === 'B' ? 0 : 1)}`).join(' / ').padEnd(40)} ${unit.padEnd(6)} exponent ${exponent(xs, ys).toFixed(2)}\n`);
    };
    process.stdout.write(`\nGrowth with N (${xs.join(' / ')}), exponent of a least-squares fit of log figure on log N:\n`);
    fit('watch bytes per agent, start', (r) => r.watchBytesStart, 'B');
    fit('watch bytes per agent, stop', (r) => r.watchBytesStop, 'B');
    fit('watch bytes per agent per s, steady', (r) => r.watchBytesSteady, 'B/s');
    fit('GET bytes per agent per spec change', (r) => r.getBytesPerAgent, 'B');
    fit('status writes per capture per s, steady', (r) => r.statusWritesSteady, '/s');
    fit('report writes per s, steady (all nodes)', (r) => r.reportWritesSteady, '/s');
    fit('PacketCapture size', (r) => r.pcBytes, 'B');
    fit('PacketCapture managedFields', (r) => r.pcManagedBytes, 'B');
    fit('largest report', (r) => r.largestReport, 'B');
    fit('time to every node Capturing, p99', (r) => r.startP99, 'ms');
    fit('gateway: list every node, warm', (r) => r.listWarmMs, 'ms');
    fit('gateway: list every node, cold', (r) => r.listColdMs, 'ms');
    fit('gateway: first zip byte', (r) => r.firstByteMs, 'ms');
    fit('gateway RSS', (r) => r.gatewayRss / MiB, 'MiB');
    process.stdout.write(`  PacketCapture at 1 000 nodes, extrapolated from the fit: ${(extrapolate(xs, rows.map((r) => r.pcBytes), 1000) / 1024).toFixed(0)} KiB (target < 256 KiB)\n`);
    process.stdout.write(`  gateway listing 1 000 nodes (warm), extrapolated: ${extrapolate(xs, rows.map((r) => r.listWarmMs), 1000).toFixed(0)} ms (target < 2000 ms)\n`);
    }

    if (SECTIONS.has('many')) await manyCaptures(kube, w);
    // --- many users at once ---
    if (SECTIONS.has('downloads')) await downloads(td, c, w, userToken);
  } finally {
    await td.run();
  }
}

/** 1 000 captures on one node, none selecting its pods: the agent's RSS and CPU per resync. */
async function manyCaptures(kube: KubeClient, w: Probes): Promise<void> {
  {
    const probe = w.agents[0]!;
    const pid = probe.proc.pid!;
    const window = 30;
    const idle0 = await cpuSeconds(pid);
    await new Promise((r) => setTimeout(r, window * 1000));
    const idleCpu = (await cpuSeconds(pid)) - idle0;
    const rss0 = await rssBytes(pid);
    for (let i = 0; i < MANY; i += 50) {
      await Promise.all(Array.from({ length: Math.min(50, MANY - i) }, (_, j) => kube.request({ method: 'POST', path: capturesPath(w.ns), body: { apiVersion: 'projectcalico.org/v3', kind: 'PacketCapture', metadata: { name: `many-${i + j}`, namespace: w.ns }, spec: { selector: 'app == "nothing-here"' } } })));
    }
    await waitFor(async () => /"captures":(\d+)/.exec((await readFile(probe.logFile, 'utf8')).split('\n').filter((l) => l.includes('resync: every capture queued')).pop() ?? '')?.[1] === String(MANY), { what: 'the agent to hold every capture', timeoutMs: 120_000, intervalMs: 500 });
    const busy0 = await cpuSeconds(pid);
    await new Promise((r) => setTimeout(r, window * 1000));
    const busyCpu = (await cpuSeconds(pid)) - busy0;
    const rss1 = await rssBytes(pid);
    const resyncs = window / 10;
    process.stdout.write(`\n${MANY} captures on one node (none selecting its pods; resync every 10 s): agent RSS ${(rss0 / MiB).toFixed(0)} → ${(rss1 / MiB).toFixed(0)} MiB; CPU per resync ${(((busyCpu - idleCpu) / resyncs) * 1000).toFixed(0)} ms (${busyCpu.toFixed(2)} CPU-s over ${window} s against ${idleCpu.toFixed(2)} with one capture)\n`);
  }
}

/** A gateway with the Node options the Deployment gives it (NODE_OPTIONS), the agents untouched. */
async function startShippedGateway(...a: Parameters<typeof startGateway>): Promise<GatewayHandle> {
  const before = process.env.NODE_OPTIONS;
  process.env.NODE_OPTIONS = args['gateway-node-options'];
  try {
    return await startGateway(...a);
  } finally {
    if (before === undefined) delete process.env.NODE_OPTIONS;
    else process.env.NODE_OPTIONS = before;
  }
}


/** Gateway RSS against concurrent downloads of one 4.5 MiB capture, bounded (defaults) and unbounded. */
async function downloads(td: Teardowns, c: TestCluster, w: Probes, token: string): Promise<void> {
  const name = 'downloads';
  await c.applyManifest(`apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata: {name: ${name}, namespace: ${w.ns}}\nspec: {selector: app == "nothing-here"}\n`);
  const dir = join(w.agents[0]!.captureDir, w.ns, name);
  const { mkdir } = await import('node:fs/promises');
  await mkdir(dir, { recursive: true });
  const bytes = await writeDnsPcap(join(dir, 'probe-1_cali0-1700000000000001.pcap'), 50_000);
  await c.kubectl(['annotate', '--overwrite', '-n', w.ns, 'packetcaptures.projectcalico.org', name, `bench/poke=${Date.now()}`]);
  await waitFor(async () => (await c.kubectl(['get', 'pcnr', '-n', w.ns, '-o', 'jsonpath={.items[*].status.fileNames}'])).stdout.includes('probe-1_cali0-1700000000000001.pcap'), { what: 'the agent to list the file', timeoutMs: 30_000 });
  process.stdout.write(`\nConcurrent downloads of one ${(bytes.length / MiB).toFixed(1)} MiB capture (gateway memory limit in deploy/: ${await shippedMemoryLimitMiB('Deployment', 'kube-pcap-gateway', 'gateway')} MiB):\n`);
  const ca = await readFile(w.pki.ca.certFile);
  for (const bounded of [true, false]) {
    for (const n of CONCURRENCY) {
      const g = await startShippedGateway(td, c, { pki: w.pki, logDir: w.logDir, agentService: w.agentService, extraArgs: ['--log-level=info', '--max-downloads-per-user=0', '--max-live-streams-per-user=0', '--max-requests-per-user=0', '--authn-failure-limit=0', ...(bounded ? [] : ['--max-concurrent-downloads=100000', '--download-queue=0'])], sourceMaps: false });
      // 500 TLS handshakes at once on two cores take a while: a generous connect timeout.
      const d = new Agent({ connect: { ca, timeout: 120_000 }, connections: null });
      const t = Date.now();
      const codes = new Map<string, number>();
      await Promise.all(Array.from({ length: n }, async () => {
        try {
          const res = await request(`${g.url}/packet-capture/download/${w.ns}/${name}/files.zip`, { headers: { authorization: `Bearer ${token}` }, dispatcher: d, headersTimeout: 300_000 });
          for await (const _ of res.body) { /* drained */ }
          codes.set(String(res.statusCode), (codes.get(String(res.statusCode)) ?? 0) + 1);
        } catch (err) {
          const what = (err as { code?: string }).code ?? (err as Error).message;
          codes.set(what, (codes.get(what) ?? 0) + 1);
        }
      }));
      const peak = await peakRssBytes(g.proc.pid!);
      await d.close();
      await g.proc.stop();
      process.stdout.write(`  ${bounded ? 'bounded (defaults: 16 at once, 512 queued)' : 'unbounded (--max-concurrent-downloads=100000)'}, ${String(n).padStart(3)} clients: peak RSS ${(peak / MiB).toFixed(0)} MiB, ${((Date.now() - t) / 1000).toFixed(1)} s, answers ${[...codes].map(([k, v]) => `${k} x${v}`).join(', ')}\n`);
    }
  }
}

runBench(main);
