// Counters in node reports move at most once per counter interval (docs/status.md,
// "Counters"), while the agent's /metrics has them live and state changes still go out at
// once. Run with a 3 s interval (the shipped default is 60 s, checked in the options
// test) so that several intervals fit in a test.
import t from 'tap';
import { captureWorld } from '../harness/capture-fixture.js';
import { cluster } from '../harness/cluster.js';
import { startDnsSender } from '../harness/dns-sender.js';
import { agentMetric, metricsReaderToken } from '../harness/kube-pcap.js';
import { captureReports } from '../harness/node-reports.js';
import { waitFor } from '../harness/wait.js';

const INTERVAL_MS = 3000;
const c = await cluster(t);
const w = await captureWorld(t, c, { nodes: 1, agentArgs: [`--report-counters-interval-seconds=${INTERVAL_MS / 1000}`] });
const token = await metricsReaderToken(c);
const node = w.nodes[0]!;
const pod = await w.addPod(node, 'logging-a', { app: 'logging' });
await w.applyCapture('cadence', '  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]');
await w.waitForState('cadence', 'node-1', 'WaitingForTraffic');
startDnsSender(t, pod, w.dns.ip, 'cadence', 0, 20, w.logDir);

interface Sample { at: number; rv: string; packets: number; countersTime: string; live: number }

t.test('under steady traffic the report\'s counters move once per interval; /metrics moves all the time', async (t) => {
  const first = await w.waitForState('cadence', 'node-1', 'Capturing');
  t.ok((first.packets ?? 0) > 0, `the change to Capturing carries the counters of its moment (${first.packets} packets)`);
  const agent = w.agents.get('node-1')!;
  const samples: Sample[] = [];
  // Sample until four counter updates were seen after the first.
  await waitFor(async () => {
    const r = (await captureReports(w.kube, w.ns, 'cadence')).get(node.name)!;
    const live = await agentMetric(agent, w.pki, token, 'kube_pcap_agent_packets_written_total', 'capture="cadence"');
    samples.push({ at: Date.now(), rv: r.metadata.resourceVersion!, packets: r.status?.packets ?? 0, countersTime: r.status?.countersTime ?? '', live });
    return new Set(samples.map((s) => s.countersTime)).size >= 5;
  }, { what: 'five counter updates in the report', timeoutMs: 40_000, intervalMs: 150 });
  const updates = [...new Set(samples.map((s) => s.countersTime))].map((x) => Date.parse(x));
  const gaps = updates.slice(1).map((u, i) => u - updates[i]!);
  t.ok(gaps.every((g) => g >= INTERVAL_MS), `counters moved no sooner than every ${INTERVAL_MS} ms: gaps ${gaps.join(', ')} ms`);
  const writes = new Set(samples.map((s) => s.rv)).size;
  t.ok(writes <= updates.length, `the report was written ${writes} times for ${updates.length} counter updates: nothing else churns it`);
  // Between two report updates, Prometheus saw the packets go up.
  const window = samples.filter((s) => s.countersTime === samples[samples.length - 2]!.countersTime);
  t.ok(window.length >= 3, `${window.length} samples in one interval`);
  t.ok(window[window.length - 1]!.live > window[0]!.live, `/metrics moved within one interval (${window[0]!.live} → ${window[window.length - 1]!.live}) while the report stayed at ${window[0]!.packets}`);
  t.ok(samples[samples.length - 1]!.packets > first.packets!, 'and the report caught up at its interval');
});
