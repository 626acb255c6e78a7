// The agent's desired state is a pure function of what it observes: tested here without
// processes, disks or an API server (docs/agent.md, "Desired state").
import t from 'tap';
import { nodeEntry, planCapture, type CaptureView, type NodeBudgetView, type PlanInputs, type PodView } from '../../src/agent/capture-plan.js';
import type { FilterVerdict } from '../../src/agent/filter-checks.js';
import type { InterfaceVerdict } from '../../src/agent/interface-cache.js';

const NODE = 'node-a';
const capture = (spec: CaptureView['spec'] = {}): CaptureView => ({ namespace: 'shop', name: 'dns', uid: 'u1', spec });
const pod = (name: string, labels: Record<string, string>, o: Partial<PodView> = {}): PodView => ({
  namespace: 'shop', name, uid: `uid-${name}`, ip: `192.0.2.${name.length + 10}`, labels, nodeName: NODE, hostNetwork: false, deleting: false, phase: 'Running', ...o,
});
const budget = (o: Partial<NodeBudgetView> = {}): NodeBudgetView => ({ freeWorkerSlots: 32, maxWorkers: 32, diskFree: 1e12, diskReserved: 0, perWorkerBytes: 30e6, captureDir: '/var/lib/kube-pcap', ...o });
const valid = (): FilterVerdict => ({ kind: 'valid' });
const found = (p: { name: string }): InterfaceVerdict => ({ kind: 'found', iface: `cali-${p.name}`, via: 'route' });

function inputs(o: Partial<PlanInputs>): PlanInputs {
  return { capture: capture(), nodeName: NODE, pods: [], filter: valid, iface: found, now: Date.parse('2026-11-27T12:00:00Z'), running: new Set(), budget: budget(), written: { packets: 0, bytes: 0 }, ...o };
}

t.test('selects pods of its namespace on this node, by label, and plans one worker each', async (t) => {
  const plan = planCapture(inputs({
    capture: capture({ selector: 'app == "logging"', filters: [{ protocol: 'UDP', ports: [53] }] }),
    pods: [
      pod('logging-a', { app: 'logging' }),
      pod('logging-b', { app: 'logging' }),
      pod('web', { app: 'web' }),
      pod('other-ns', { app: 'logging' }, { namespace: 'elsewhere' }),
      pod('other-node', { app: 'logging' }, { nodeName: 'node-b' }),
      pod('host', { app: 'logging' }, { hostNetwork: true }),
      pod('leaving', { app: 'logging' }, { deleting: true }),
      pod('done', { app: 'logging' }, { phase: 'Succeeded' }),
      pod('no-ip', { app: 'logging' }, { ip: undefined }),
    ],
  }));
  t.equal(plan.phase, 'Active');
  t.same(plan.workers.map((w) => [w.pod.name, w.iface, w.bpf]), [['logging-a', 'cali-logging-a', '(udp and (port 53))'], ['logging-b', 'cali-logging-b', '(udp and (port 53))']]);
  t.same(plan.matchedPods.map((p) => p.name), ['logging-a', 'logging-b']);
  t.same(plan.hostNetworkPods, ['host'], 'the selected host-network pod is set apart, not captured');
});

t.test('host-network pods are never captured, and the node says so (Error when they are all it has)', async (t) => {
  const only = planCapture(inputs({ capture: capture({ selector: 'app == "proxy"' }), pods: [pod('proxy-1', { app: 'proxy' }, { hostNetwork: true, ip: '198.51.100.7' })] }));
  t.same(only.workers, [], 'no tcpdump on the node\'s interfaces');
  const entry = nodeEntry({ nodeName: NODE, directory: '/d', plan: only, workers: [], sawTraffic: false, fileNames: [], observed: undefined });
  t.equal(entry?.state, 'Error', 'nothing will ever be captured on this node: an error, not a wait');
  t.match(entry?.message, /not captured: proxy-1 uses the node's own network \(hostNetwork: true\)/);
  const mixed = planCapture(inputs({ capture: capture({ selector: 'app == "proxy"' }), pods: [pod('proxy-1', { app: 'proxy' }, { hostNetwork: true }), pod('proxy-2', { app: 'proxy' })] }));
  t.same(mixed.workers.map((w) => w.pod.name), ['proxy-2'], 'the other pods are captured');
  const mixedEntry = nodeEntry({ nodeName: NODE, directory: '/d', plan: mixed, workers: [{ pod: 'proxy-2', iface: 'cali-proxy-2', packets: 1, bytes: 60, kernelDrops: 0, error: undefined }], sawTraffic: true, fileNames: ['proxy-2_cali-proxy-2.pcap'], observed: undefined });
  t.equal(mixedEntry?.state, 'Capturing');
  t.match(mixedEntry?.message, /not captured: proxy-1 uses/);
});

t.test('invalid selectors and filters are spec errors; a pending check is neither error nor capture', async (t) => {
  t.match(planCapture(inputs({ capture: capture({ selector: 'app = "x"' }) })), { phase: 'Invalid', error: /invalid selector at position 4/ });
  t.match(planCapture(inputs({ capture: capture({ filters: [{ protocol: 'HTTP' }] }) })), { phase: 'Invalid', error: /unknown protocol "HTTP"/ });
  const filters = [{ protocol: 'TCP' }];
  t.match(planCapture(inputs({ capture: capture({ filters }), filter: () => ({ kind: 'invalid', message: 'tcpdump refuses the filter' }) })), { phase: 'Invalid', error: 'tcpdump refuses the filter' });
  const pods = [pod('a', {})];
  const running = planCapture(inputs({ capture: capture({ filters }), pods, filter: () => ({ kind: 'pending' }) }));
  t.match(running, { phase: 'Active', error: undefined, settling: true, workers: [] }, 'a check in flight: nothing starts, nothing to report yet');
  const retrying = planCapture(inputs({ capture: capture({ filters }), pods, filter: () => ({ kind: 'pending', message: 'cannot run tcpdump: EAGAIN; checking again in 2 s' }) }));
  t.match(retrying, { phase: 'Active', error: undefined, settling: false, workers: [] });
  t.match(retrying.problems, [/checking the filter: cannot run tcpdump: EAGAIN/]);
  const entry = nodeEntry({ nodeName: NODE, directory: '/d', plan: retrying, workers: [], sawTraffic: false, fileNames: [], observed: undefined });
  t.equal(entry?.state, 'WaitingForTraffic', 'a failed check is not reported as an invalid filter');
  const missing = planCapture(inputs({ capture: capture({ filters }), pods, filter: () => ({ kind: 'pending', message: 'tcpdump not found', missing: true }) }));
  t.equal(nodeEntry({ nodeName: NODE, directory: '/d', plan: missing, workers: [], sawTraffic: false, fileNames: [], observed: undefined })?.state, 'Error');
});

t.test('the clock: Scheduled until startTime, Finished from endTime, with wake-ups at both', async (t) => {
  const now = Date.parse('2026-11-27T12:00:00Z');
  const pods = [pod('a', {})];
  const before = planCapture(inputs({ now, pods, capture: capture({ startTime: '2026-11-27T12:05:00Z', endTime: '2026-11-27T13:00:00Z' }) }));
  t.match(before, { phase: 'Scheduled', wakeAt: Date.parse('2026-11-27T12:05:00Z'), workers: [] });
  const during = planCapture(inputs({ now, pods, capture: capture({ startTime: '2026-11-27T11:00:00Z', endTime: '2026-11-27T13:00:00Z' }) }));
  t.match(during, { phase: 'Active', wakeAt: Date.parse('2026-11-27T13:00:00Z') });
  t.equal(during.workers.length, 1);
  const after = planCapture(inputs({ now, pods, capture: capture({ endTime: '2026-11-27T12:00:00Z' }) }));
  t.match(after, { phase: 'Finished', wakeAt: undefined, workers: [] });
});

t.test('failed interface lookups are per-pod problems; lookups in flight hold the status back', async (t) => {
  const plan = planCapture(inputs({
    pods: [pod('a', {}), pod('b', {}), pod('c', {})],
    iface: (p) => (p.name === 'a' ? { kind: 'found', iface: 'cali-a', via: 'route' } : p.name === 'b' ? { kind: 'failed', error: 'no route' } : { kind: 'pending' }),
  }));
  t.same(plan.workers.map((w) => w.pod.name), ['a']);
  t.same(plan.problems, ['pod b: no route']);
  t.equal(plan.settling, true);
});

t.test('node budgets: running workers stay, new ones fit the free slots and the disk not yet reserved', async (t) => {
  const pods = ['a', 'b', 'c', 'd'].map((n) => pod(n, {}));
  const slots = planCapture(inputs({ pods, budget: budget({ freeWorkerSlots: 2, maxWorkers: 5 }), running: new Set(['uid-a/cali-a']) }));
  t.same(slots.workers.map((w) => w.pod.name), ['a', 'b', 'c'], 'the running one, then two new ones');
  t.match(slots.refused, /node budget: 5 capture workers .* --max-capture-workers allows; not captured: d/);
  const entry = nodeEntry({ nodeName: NODE, directory: '/d', plan: slots, workers: [], sawTraffic: false, fileNames: [], observed: undefined });
  t.equal(entry?.state, 'Error', 'a refusal is an Error naming the budget');
  t.match(entry?.message, /node budget/);

  const disk = planCapture(inputs({ pods, budget: budget({ diskFree: 100e6, diskReserved: 40e6, perWorkerBytes: 30e6 }) }));
  t.same(disk.workers.map((w) => w.pod.name), ['a', 'b'], '60 MB not reserved: two workers of 30 MB');
  t.match(disk.refused, /not enough disk space on node node-a: 100\.0 MB free in \/var\/lib\/kube-pcap, 40\.0 MB of it reserved by running captures and downloads' pinned files, .* = 30\.0 MB; not captured: c, d/);

  const unknown = planCapture(inputs({ pods, budget: budget({ diskFree: Number.NaN }) }));
  t.equal(unknown.workers.length, 4, 'free space unknown: not checked');
  t.same(planCapture(inputs({ pods, budget: budget({ freeWorkerSlots: 2 }) })).workers, planCapture(inputs({ pods, budget: budget({ freeWorkerSlots: 2 }) })).workers, 'the same observation admits the same workers');
});

t.test('the node entry: states, counters and when a node says nothing', async (t) => {
  const plan = planCapture(inputs({ pods: [pod('a', {})] }));
  const workers = [{ pod: 'a', iface: 'cali-a', packets: 5, bytes: 500, kernelDrops: 1, error: undefined }];
  t.match(nodeEntry({ nodeName: NODE, directory: '/d', plan, workers, sawTraffic: true, fileNames: ['a_cali-a.pcap'], observed: undefined }), { state: 'Capturing', pods: 1, packets: 5, bytes: 500, kernelDrops: 1, fileNames: ['a_cali-a.pcap'] });
  t.match(nodeEntry({ nodeName: NODE, directory: '/d', plan, workers, sawTraffic: false, fileNames: [], observed: undefined }), { state: 'WaitingForTraffic' });
  const failing = [{ ...workers[0]!, error: 'no space left on the device holding /d/a.pcap: capture stopped on this interface' }];
  t.match(nodeEntry({ nodeName: NODE, directory: '/d', plan, workers: failing, sawTraffic: true, fileNames: [], observed: undefined }), { state: 'Error', pods: 0, message: /a\/cali-a: no space left/ });
  const idle = planCapture(inputs({ pods: [] }));
  t.equal(nodeEntry({ nodeName: NODE, directory: '/d', plan: idle, workers: [], sawTraffic: false, fileNames: [], observed: undefined }), undefined, 'no pods, no files: nothing to say');
  t.match(nodeEntry({ nodeName: NODE, directory: '/d', plan: idle, workers: [], sawTraffic: false, fileNames: [], observed: { node: NODE } }), { state: 'WaitingForTraffic', message: /no pod on node node-a matches/ }, 'an entry it wrote before is kept up to date');
});

t.test('limits: snapLen reaches the workers; a reached maxPackets or maxBytes finishes the node, and says why', async (t) => {
  const pods = [pod('logging-a', { app: 'logging' })];
  const active = planCapture(inputs({ capture: capture({ snapLen: 96, maxPackets: 10 }), pods, written: { packets: 9, bytes: 900 } }));
  t.equal(active.phase, 'Active');
  t.same(active.workers.map((w) => w.snapLen), [96]);
  const done = planCapture(inputs({ capture: capture({ maxPackets: 10 }), pods, written: { packets: 10, bytes: 1000 } }));
  t.equal(done.phase, 'Finished');
  t.same(done.workers, [], 'no worker runs');
  const entry = nodeEntry({ nodeName: NODE, directory: '/d', plan: done, workers: [], sawTraffic: true, fileNames: ['a.pcap'], observed: undefined, written: { packets: 10, bytes: 1000 } });
  t.same([entry?.state, entry?.message, entry?.packets, entry?.bytes], ['Finished', `spec.maxPackets (10) reached on node ${NODE}: 10 packets written`, 10, 1000]);
  t.equal(planCapture(inputs({ capture: capture({ maxBytes: 1000 }), pods, written: { packets: 3, bytes: 990 } })).phase, 'Finished', 'no record fits in the 10 bytes left');
  t.equal(planCapture(inputs({ capture: capture({ maxPackets: 10 }), pods, written: { packets: 10, bytes: 1000 }, now: Date.parse('2020-01-01T00:00:00Z') })).phase, 'Finished');
});

t.test('limits the API server did not check (Calico\'s own API server) are refused by the agent', async (t) => {
  for (const [spec, message] of [
    [{ snapLen: 0 }, /spec\.snapLen must be a whole number from 1 to 262144/],
    [{ snapLen: 70000.5 }, /spec\.snapLen must be a whole number/],
    [{ maxPackets: '10' as unknown as number }, /spec\.maxPackets must be a whole number from 1/],
    [{ maxBytes: -1 }, /spec\.maxBytes must be a whole number from 1/],
  ] as const) {
    const plan = planCapture(inputs({ capture: capture(spec), pods: [pod('logging-a', { app: 'logging' })] }));
    t.equal(plan.phase, 'Invalid');
    t.match(plan.error, message);
  }
});
