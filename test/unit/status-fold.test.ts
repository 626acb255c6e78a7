// The aggregator's pure parts (docs/status.md): folding node reports into the Calico view,
// when that view needs a write, how often it may be written, report names, and the
// reflector's full-jitter back-off.
import t from 'tap';
import { fitFiles, foldReports, STATUS_MAX_BYTES, statusMatches, writeIntervalMs } from '../../src/gateway/aggregate-status.js';
import { equalJitterDelay, fullJitterDelay } from '../../src/kube/backoff.js';
import { entryOf, REPORT_LIMITS, reportName, type NodeReport, type NodeReportStatus } from '../../src/kube/node-report.js';
import type { PacketCapture } from '../../src/kube/packetcapture.js';

function report(node: string, uid: string, status: NodeReportStatus, extra: Partial<NodeReport['metadata']> = {}): NodeReport {
  return {
    apiVersion: 'kube-pcap.io/v1alpha1',
    kind: 'PacketCaptureNodeReport',
    metadata: { name: reportName('pc', node), namespace: 'ns', ...extra },
    spec: { nodeName: node, captureName: 'pc', captureUID: uid },
    status,
  };
}

const present = (): 'present' => 'present';

t.test('the fold: one entry per reporting node, sorted, summary by state, countersTime left out', async (t) => {
  const f = foldReports('u1', [
    report('node-b', 'u1', { state: 'Capturing', fileNames: ['b.pcap'], packets: 5, countersTime: '2026-01-01T00:00:00Z' }),
    report('node-a', 'u1', { state: 'WaitingForTraffic', fileNames: [] }),
    report('node-c', 'u1', { state: 'Capturing' }),
  ], present);
  t.same(f.files.map((e) => e.node), ['node-a', 'node-b', 'node-c']);
  t.equal(f.summary, '1 WaitingForTraffic, 2 Capturing');
  t.same(f.files[1], { node: 'node-b', state: 'Capturing', fileNames: ['b.pcap'], packets: 5 });
  t.same(f.gone, []);
});

t.test('reports of an earlier capture of the same name, and reports being deleted, are left out', async (t) => {
  const f = foldReports('u2', [
    report('node-a', 'u1', { state: 'Finished' }),
    report('node-b', 'u2', { state: 'Capturing' }, { deletionTimestamp: '2026-01-01T00:00:00Z' }),
    report('node-c', 'u2', { state: 'Capturing' }),
  ], present);
  t.same(f.files.map((e) => e.node), ['node-c']);
});

t.test('a node known to be absent is a pruning candidate; an unknown one (Nodes not listed) is kept', async (t) => {
  const reports = [report('gone', 'u', { state: 'Capturing' }), report('here', 'u', { state: 'Capturing' })];
  const absent = foldReports('u', reports, (n) => (n === 'gone' ? 'absent' : 'present'));
  t.same(absent.files.map((e) => e.node), ['here']);
  t.same(absent.gone.map((r) => r.spec.nodeName), ['gone']);
  const unknown = foldReports('u', reports, () => 'unknown');
  t.same(unknown.files.map((e) => e.node), ['gone', 'here'], 'never pruned on a guess');
  t.same(unknown.gone, []);
});

t.test('statusMatches: equal content in any order and with absent defaults needs no write', async (t) => {
  const fold = foldReports('u', [report('a', 'u', { state: 'Capturing', fileNames: ['x'] }), report('b', 'u', { state: 'Finished' })], present);
  const pc = (status: PacketCapture['status']): PacketCapture => ({ apiVersion: 'projectcalico.org/v3', kind: 'PacketCapture', metadata: { name: 'pc', namespace: 'ns' }, status });
  t.ok(statusMatches(pc({ files: [{ node: 'b', state: 'Finished', fileNames: [] }, { node: 'a', state: 'Capturing', fileNames: ['x'] }], summary: '1 Capturing, 1 Finished' }), fold));
  t.notOk(statusMatches(pc({ files: [{ node: 'a', state: 'Capturing', fileNames: ['x'] }], summary: '1 Capturing' }), fold), 'a missing node');
  t.notOk(statusMatches(pc({ files: [{ node: 'b', state: 'Finished' }, { node: 'a', state: 'Capturing', fileNames: ['x'] }], summary: 'stale' }), fold), 'a stale summary');
  t.notOk(statusMatches(pc({ files: [{ node: 'b', state: 'Finished', packets: 1 }, { node: 'a', state: 'Capturing', fileNames: ['x'] }], summary: '1 Capturing, 1 Finished' }), fold), 'counters differ');
  t.ok(statusMatches(pc(undefined), foldReports('u', [], present)), 'no reports, no status: nothing to write');
});

t.test('the write interval grows with the status so each watcher gets a bounded byte rate', async (t) => {
  t.equal(writeIntervalMs(10_000, 1000, 65_536), 1000, 'small status: the minimum');
  t.equal(writeIntervalMs(200 * 1024, 1000, 64 * 1024), 3125, '200 KiB at 64 KiB/s: 3.1 s');
  t.equal(writeIntervalMs(0, 250, 1), 250);
});

t.test('report names: <capture>.<node> when it fits, a hashed DNS subdomain when not', async (t) => {
  t.equal(reportName('dns', 'node-1'), 'dns.node-1');
  const long = reportName('c'.repeat(200), `${'n'.repeat(60)}.example.com`);
  t.ok(long.length <= 253, `${long.length} characters`);
  t.match(long, /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/);
  t.not(long, reportName('c'.repeat(200), `${'n'.repeat(60)}.example.org`), 'distinct nodes, distinct names');
  t.equal(long, reportName('c'.repeat(200), `${'n'.repeat(60)}.example.com`), 'stable');
  const dashy = reportName(`${'a'.repeat(236)}-`.padEnd(240, 'b'), 'x'.repeat(30));
  t.match(dashy, /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'never a part ending in a dash');
});

t.test('equal-jitter back-off (the work queues): at least half the step, never more than the step', async (t) => {
  t.equal(equalJitterDelay(0, 500, 60_000, () => 0), 250);
  t.equal(equalJitterDelay(0, 500, 60_000, () => 0.999), 499);
  t.equal(equalJitterDelay(4, 500, 60_000, () => 0.5), 6000);
  t.equal(equalJitterDelay(30, 500, 60_000, () => 0), 30_000, 'capped');
});

t.test('full-jitter back-off: uniform below the capped exponential, never above', async (t) => {
  t.equal(fullJitterDelay(0, 500, 5000, () => 0.999), 499);
  t.equal(fullJitterDelay(3, 500, 5000, () => 0.5), 2000);
  t.equal(fullJitterDelay(20, 500, 5000, () => 0.999), 4995, 'capped at the maximum');
  t.equal(fullJitterDelay(20, 500, 5000, () => 0), 0);
  // A thousand agents after an outage: spread over the window, not together.
  const draws = Array.from({ length: 1000 }, () => fullJitterDelay(10, 500, 5000));
  const buckets = new Array(5).fill(0) as number[];
  for (const d of draws) buckets[Math.floor(d / 1000)]!++;
  t.ok(buckets.every((b) => b > 120), `each second of the window gets a share: ${buckets.join(', ')}`);
});

t.test('bounds: a report past its limits is cut to them, and status.files fits etcd however many nodes report at their limits', async (t) => {
  const longName = (i: number): string => `${'p'.repeat(240)}-${String(i).padStart(6, '0')}.pcap`;
  const huge = report('node-x', 'u1', { state: 'Capturing', fileNames: Array.from({ length: REPORT_LIMITS.fileNames + 100 }, (_, i) => longName(i)), message: 'm'.repeat(5000), directory: `/${'d'.repeat(9000)}` });
  const e = entryOf(huge);
  t.equal(e.fileNames!.length, REPORT_LIMITS.fileNames, 'names beyond the limit left out');
  t.equal(e.fileNames!.at(-1), longName(REPORT_LIMITS.fileNames + 99), 'the last names kept');
  t.equal(e.message!.length, REPORT_LIMITS.messageLength);
  t.equal(e.directory!.length, REPORT_LIMITS.directoryLength);

  const atLimit = (node: string): NodeReport => report(node, 'u1', { state: 'Capturing', directory: '/var/lib/kube-pcap/ns/pc', fileNames: Array.from({ length: REPORT_LIMITS.fileNames }, (_, i) => longName(i)) });
  const one = Buffer.byteLength(JSON.stringify(entryOf(atLimit('node-0'))));
  t.ok(one < 1.5 * 1024 * 1024 - 64 * 1024, `one report at every limit is ${(one / 1024 / 1024).toFixed(2)} MiB, under etcd's 1.5 MiB`);
  const fold = foldReports('u1', Array.from({ length: 40 }, (_, i) => atLimit(`node-${i}`)), present);
  t.equal(fold.files.length, 40, 'every node keeps its entry');
  t.ok(Buffer.byteLength(JSON.stringify(fold.files)) <= STATUS_MAX_BYTES, 'and the whole fits');
  t.ok(fold.files.every((f) => f.fileNames!.length > 0 && f.fileNames!.at(-1) === longName(REPORT_LIMITS.fileNames - 1)), 'each keeps its last names');
  const small = [{ node: 'a', fileNames: ['a.pcap'] }];
  t.equal(fitFiles(small, STATUS_MAX_BYTES), small, 'what fits is left alone');
});
