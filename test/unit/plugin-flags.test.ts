// kubectl pcap's translations and verdicts, as pure functions: Kubernetes label selectors to
// Calico's (matching the same pods), --filter to filter rules, flags to a spec, the wait
// conditions, the format -w asks for, and the progress line.
import t from 'tap';
import { specFromFlags } from '../../src/plugin/commands/create.js';
import { downloadFormat } from '../../src/plugin/commands/download.js';
import { waitVerdict } from '../../src/plugin/commands/wait.js';
import { filterRule } from '../../src/plugin/filter-flags.js';
import { calicoFromLabelSelector } from '../../src/plugin/label-selector.js';
import { ProgressBar } from '../../src/plugin/progress.js';
import type { NodeCaptureStatus, PacketCapture } from '../../src/kube/packetcapture.js';
import { parseSelector } from '../../src/selector/selector.js';

t.test('-l: Kubernetes label selectors become Calico selectors that match the same pods', async (t) => {
  const pods: Record<string, string>[] = [{}, { app: 'web' }, { app: 'web', tier: 'db' }, { app: 'api', tier: 'cache' }, { app: 'web', canary: 'true' }, { 'example.com/team': 'a-1' }];
  // Kubernetes' own meaning of each selector, written out per pod.
  const cases: [string, string, boolean[]][] = [
    ['app=web', 'app == "web"', [false, true, true, false, true, false]],
    ['app==web', 'app == "web"', [false, true, true, false, true, false]],
    ['tier!=db', 'tier != "db"', [true, true, false, true, true, true]],
    ['app in (web, api)', 'app in {"api", "web"}', [false, true, true, true, true, false]],
    ['tier notin (db)', 'tier not in {"db"}', [true, true, false, true, true, true]],
    ['canary', 'has(canary)', [false, false, false, false, true, false]],
    ['!canary', '!has(canary)', [true, true, true, true, false, true]],
    ['app=web,!canary,tier notin (db,cache)', '(app == "web" && !has(canary) && tier not in {"cache", "db"})', [false, true, false, false, false, false]],
    ['example.com/team=a-1', 'example.com/team == "a-1"', [false, false, false, false, false, true]],
    ['', 'all()', [true, true, true, true, true, true]],
  ];
  for (const [k8s, calico, matches] of cases) {
    const out = calicoFromLabelSelector(k8s);
    t.equal(out, calico, `"${k8s}"`);
    t.same(pods.map((p) => parseSelector(out).matches(p)), matches, `"${k8s}" selects the pods Kubernetes would`);
  }
  for (const [bad, at, why] of [['app=web,,x', 8, /empty requirement/], ['a>3', 0, /numeric comparisons/], ['app in ()', 7, /at least one value/], ['app=we"b', 4, /not a label value/], ['-app=x', 0, /not a label key/], ['app in (a', 0, /expected "key"/]] as const) {
    t.throws(() => calicoFromLabelSelector(bad), { position: at, message: why }, bad);
  }
});

t.test('--filter: tcpdump\'s spelling in, Calico\'s out; mistakes named', async (t) => {
  t.same(filterRule('udp:53'), { protocol: 'UDP', ports: [53] });
  t.same(filterRule('TCP:80-90,443'), { protocol: 'TCP', ports: ['80:90', 443] });
  t.same(filterRule('icmp6'), { protocol: 'ICMPv6' });
  t.same(filterRule(':8080'), { ports: [8080] });
  t.same(filterRule('132'), { protocol: 132 });
  t.throws(() => filterRule('gre:1'), /unknown protocol "gre"/);
  t.throws(() => filterRule('tcp:90-80'), /port range 90:80 is not "from:to"/);
  t.throws(() => filterRule('tcp:'), /no port after ":"/);
  t.throws(() => filterRule('300'), /protocol 300 is not a number from 1 to 255/);
  t.throws(() => filterRule(''), /needs a protocol, ports or both/);
});

t.test('flags to a spec: times, durations and limits checked before anything is sent', async (t) => {
  const now = Date.parse('2026-11-28T10:00:00Z');
  t.same(specFromFlags({ filters: [], duration: '1h30m' }, now), { endTime: '2026-11-28T11:30:00.000Z' });
  t.same(specFromFlags({ filters: [], start: '2026-11-28T12:00:00Z', duration: '90s' }, now), { startTime: '2026-11-28T12:00:00.000Z', endTime: '2026-11-28T12:01:30.000Z' });
  t.same(specFromFlags({ filters: [], snapLen: '128', maxPackets: '1000' }, now), { snapLen: 128, maxPackets: 1000 });
  t.throws(() => specFromFlags({ filters: [], duration: '10m', end: '2026-11-28T11:00:00Z' }, now), /either --duration or --end/);
  t.throws(() => specFromFlags({ filters: [], end: '2026-11-28T09:00:00Z' }, now), /would end .* before it starts/);
  t.throws(() => specFromFlags({ filters: [], duration: '10 minutes' }, now), /--duration must be a duration/);
  t.throws(() => specFromFlags({ filters: [], snapLen: '300000' }, now), /--snaplen must be a whole number from 1 to 262144/);
  t.throws(() => specFromFlags({ filters: [], selector: 'a == "b"', labels: 'a=b' }, now), /either --selector .* or -l/);
});

t.test('wait: capturing means some node captures and none failed; finished means every node', async (t) => {
  const pc = (...files: Partial<NodeCaptureStatus>[]): PacketCapture => ({ apiVersion: 'projectcalico.org/v3', kind: 'PacketCapture', metadata: { name: 'c', namespace: 'n' }, status: { files: files.map((f, i) => ({ node: `n${i}`, ...f })) } });
  const C = { state: 'Capturing' as const };
  const W = { state: 'WaitingForTraffic' as const };
  const F = { state: 'Finished' as const, fileNames: ['a.pcap'] };
  const F0 = { state: 'Finished' as const };
  const E = { state: 'Error' as const, message: 'tcpdump: boom' };
  t.same(waitVerdict(pc(), 'capturing', false), { done: false }, 'no node yet');
  t.same(waitVerdict(pc(C, W), 'capturing', false), { done: true });
  t.same(waitVerdict(pc(C, W), 'capturing', true), { done: false }, '--all-nodes waits for the idle node');
  t.same(waitVerdict(pc(C, F), 'capturing', true), { done: true }, 'a node that finished with files has captured');
  t.match(waitVerdict(pc(C, E), 'capturing', false), { done: false, failed: /n1: tcpdump: boom/ });
  t.match(waitVerdict(pc(F0, F0), 'capturing', false), { done: false, failed: /Finished without capturing/ });
  t.same(waitVerdict(pc(C, F), 'finished', false), { done: false });
  t.same(waitVerdict(pc(F, F0), 'finished', false), { done: true });
});

t.test('download: the format follows -w', async (t) => {
  t.equal(downloadFormat(undefined, undefined), 'zip');
  t.equal(downloadFormat('x.pcapng', undefined), 'pcapng');
  t.equal(downloadFormat('X.ZIP', undefined), 'zip');
  t.equal(downloadFormat('-', undefined), 'pcapng', 'stdout: a pcapng for tshark -r -');
  t.equal(downloadFormat('-', 'zip'), 'zip');
  t.equal(downloadFormat('capture', 'pcapng'), 'pcapng');
  t.throws(() => downloadFormat('capture.pcap', undefined), /end the name in \.zip/);
  t.throws(() => downloadFormat('a.zip', 'pcapng'), /says zip but --format says pcapng/);
});

t.test('the progress line: share of the exact total, rate and time left; bytes and rate without a total', async (t) => {
  const sink = { write: () => true, columns: 200 } as unknown as NodeJS.WriteStream;
  const started = Date.now();
  const bar = new ProgressBar(sink, 'files.zip', 4 << 20);
  bar.add(1 << 20);
  t.match(bar.line(started + 1000), /^files\.zip {2}25% \[=====> {18}\] 1\.0 MiB of 4\.0 MiB {2}1\.0 MiB\/s {2}ETA 3s$/);
  const open = new ProgressBar(sink, 'files.pcapng', undefined);
  open.add(3 << 20);
  t.match(open.line(started + 2000), /^files\.pcapng {2}3\.0 MiB {2}1\.5 MiB\/s$/);
});
