// The export's pure pieces (docs/export.md): a pcap's packets counted in any chunking, the
// keys an export owns (an interrupted attempt's uploads are aborted under these only), the
// manifest built from what was written, and the shared byte rate holding streams to it.
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import t from 'tap';
import { ByteRate, rateLimited } from '../../src/flow/byte-rate.js';
import { fileKey, ownsKey } from '../../src/export/export-objects.js';
import { buildManifest } from '../../src/export/manifest.js';
import { exportSettings, withCondition, type PacketCaptureExport } from '../../src/export/packetcapture-export.js';
import { packetTimeIso, PcapTally } from '../../src/pcap/pcap-tally.js';
import { dnsQueryFrame, pcapGlobalHeader, pcapRecord } from '../harness/pcap-fixtures.js';

const records = Array.from({ length: 40 }, (_, i) => pcapRecord(dnsQueryFrame('192.0.2.1', '192.0.2.53', 40000 + i, i, `r${i}.example`), 1_700_000_000_000_000 + i * 1_000_003));
const file = Buffer.concat([pcapGlobalHeader(), ...records]);

t.test('PcapTally counts every packet and the time span whatever the chunking, and says when bytes end mid-record', async (t) => {
  for (const size of [1, 7, 16, 24, 100, 4096, file.length]) {
    const tally = new PcapTally();
    for (let at = 0; at < file.length; at += size) tally.feed(file.subarray(at, at + size));
    t.equal(tally.packets, 40, `chunks of ${size}`);
    t.ok(tally.whole);
    t.equal(packetTimeIso(tally.first!), '2023-11-14T22:13:20.000000000Z');
    t.equal(packetTimeIso(tally.last!), '2023-11-14T22:13:59.000117000Z', 'the last: 39 x 1.000003 s later');
  }
  const cut = new PcapTally();
  cut.feed(file.subarray(0, file.length - 3));
  t.equal(cut.packets, 40, 'the last record\'s header was read');
  t.notOk(cut.whole, 'but its bytes are short');
  const notPcap = new PcapTally();
  notPcap.feed(Buffer.alloc(100, 0x41));
  t.equal(notPcap.packets, 0);
  t.match(notPcap.invalid, /not a pcap/);
});

const exp: PacketCaptureExport = {
  apiVersion: 'kube-pcap.io/v1alpha1', kind: 'PacketCaptureExport',
  metadata: { name: 'e1', namespace: 'shop', uid: 'u-1' },
  spec: { captureName: 'dns', format: 'files', compression: 'zstd', destination: { s3: { bucket: 'b' } } },
};

t.test('an export owns its own keys only: data objects of its format, and its manifest', async (t) => {
  const s = exportSettings(exp);
  t.equal(s.keyPrefix, 'shop/dns/e1/', 'default prefix <namespace>/<capture>/<export>/');
  t.equal(s.when, 'OnFinish', 'defaults as the CRD has them');
  t.equal(fileKey(s, 'node-1', 'web_eth0.pcap'), 'shop/dns/e1/node-1/web_eth0.pcap.zst');
  t.ok(ownsKey(s, 'shop/dns/e1/node-1/web_eth0.pcap.zst'));
  t.ok(ownsKey(s, 'shop/dns/e1/manifest.json'));
  t.notOk(ownsKey(s, 'shop/dns/e1/node-1/web_eth0.pcap'), 'not the uncompressed name');
  t.notOk(ownsKey(s, 'shop/dns/e10/node-1/web_eth0.pcap.zst'), 'not a neighbour prefix');
  t.notOk(ownsKey(s, 'shop/dns/e1/a/b/web_eth0.pcap.zst'), 'not deeper');
  const zip = exportSettings({ ...exp, spec: { ...exp.spec, format: 'zip', destination: { s3: { bucket: 'b', keyPrefix: 'shared/' } } } });
  t.ok(ownsKey(zip, 'shared/files.zip'), 'a zip is never wrapped: compression deflates its entries');
  t.notOk(ownsKey(zip, 'shared/files.zip.zst'));
  t.notOk(ownsKey(zip, 'shared/other-export.zip'), 'another export sharing the prefix is left alone');
});

t.test('the manifest: objects as written, files per node with their packets, totals, nodes left out', async (t) => {
  const s = exportSettings(exp);
  const m = buildManifest({
    exp, settings: s, captureUID: 'c-1',
    objects: [
      { key: 'shop/dns/e1/n1/a.pcap.zst', size: 10, sha256: 'a'.repeat(64), packets: 3, contentType: 'application/zstd' },
      { key: 'shop/dns/e1/n2/b.pcap.zst', size: 20, sha256: 'b'.repeat(64), packets: 4, contentType: 'application/zstd' },
    ],
    files: [
      { node: 'n2', name: 'b.pcap', size: 200, modified: '2026-01-01T00:00:00Z', key: 'shop/dns/e1/n2/b.pcap.zst', packets: 4, first: { s: 10, ns: 5 }, last: { s: 20, ns: 0 } },
      { node: 'n1', name: 'a.pcap', size: 100, modified: '2026-01-01T00:00:00Z', key: 'shop/dns/e1/n1/a.pcap.zst', packets: 3, first: { s: 9, ns: 0 }, last: { s: 12, ns: 0 } },
    ],
    missing: [{ node: 'n3', problem: 'AgentUnreachable', why: 'gone' }],
    startTime: new Date(0), completionTime: new Date(1000),
  });
  t.equal(m.packets, 7);
  t.equal(m.bytes, 30);
  t.equal(m.firstPacketTime, '1970-01-01T00:00:09.000000000Z');
  t.equal(m.lastPacketTime, '1970-01-01T00:00:20.000000000Z');
  t.same(m.nodes.map((n) => n.node), ['n1', 'n2'], 'nodes in order');
  t.same(m.capture, { namespace: 'shop', name: 'dns', uid: 'c-1' });
  t.same(m.missing, [{ node: 'n3', problem: 'AgentUnreachable', why: 'gone' }]);
  const uncounted = buildManifest({ exp, settings: s, captureUID: 'c', objects: [{ key: 'k', size: 1, sha256: 'c'.repeat(64), contentType: 'application/zip' }], files: [], missing: [], startTime: new Date(0), completionTime: new Date(0) });
  t.equal(uncounted.packets, null, 'no count rather than a wrong one');
});

t.test('a condition keeps its transition time while its status holds', async (t) => {
  const t0 = new Date(1000);
  const a = withCondition(undefined, { type: 'Uploading', status: 'True', reason: 'Started' }, t0);
  const b = withCondition(a, { type: 'Uploading', status: 'True', reason: 'Resumed' }, new Date(5000));
  t.equal(b[0]!.lastTransitionTime, t0.toISOString());
  t.equal(b[0]!.reason, 'Resumed');
  const c = withCondition(b, { type: 'Uploading', status: 'False', reason: 'Complete' }, new Date(9000));
  t.equal(c[0]!.lastTransitionTime, new Date(9000).toISOString());
});

t.test('one byte rate shared by two streams holds them together to it', async (t) => {
  const rate = new ByteRate(400_000);
  const chunk = Buffer.alloc(20_000);
  const started = Date.now();
  // 1.2 MB through two streams at 400 kB/s (the first second's bucket is full): about 2 s.
  const send = (): Promise<void> => pipeline(Readable.from(Array.from({ length: 30 }, () => chunk)), rateLimited(rate), async (src: AsyncIterable<Buffer>) => {
    for await (const _ of src) void _;
  });
  await Promise.all([send(), send()]);
  const seconds = (Date.now() - started) / 1000;
  t.ok(seconds >= 1.7 && seconds < 4, `1.2 MB at 400 kB/s took ${seconds.toFixed(2)} s`);
});
