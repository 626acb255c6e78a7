// Reports at every bound (docs/security.md, "A node"): whatever the nodes write within the
// CRD's limits, the capture's status stays under etcd's request limit and the aggregating
// gateway's memory moves by a bounded amount. A private API server, so that this file's
// gateway is the one that holds the aggregator's Lease.
import t from 'tap';
import { REPORT_LIMITS, applyNodeReport } from '../../src/kube/node-report.js';
import { getPacketCapture } from '../../src/kube/packetcapture.js';
import { privateCluster } from '../harness/cluster.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { gatewayMetric } from '../harness/kube-pcap.js';
import { ensureNode } from '../harness/node-reports.js';
import { rssBytes } from '../harness/processes.js';
import { waitFor } from '../harness/wait.js';

/** Nodes writing reports at every limit: about 1 MiB each. */
const FULL_NODES = 8;
/** The bound docs/security.md states for the gateway's growth while it aggregates them. */
const RSS_BOUND_MIB = 96;

const c = await privateCluster(t);
const w = await storefrontWorld(t, c, { nodes: ['node-1'] });

t.test(`${FULL_NODES} reports at every limit: status.files fits 1 MiB and the gateway grows by less than ${RSS_BOUND_MIB} MiB`, async (t) => {
  await waitFor(async () => (await gatewayMetric(w.gateway, w.pki, 'kube_pcap_gateway_status_aggregator_leader')) === 1, { what: 'the gateway to lead the aggregation', timeoutMs: 20_000 });
  const pc = (await getPacketCapture(w.kube, w.ns, CAPTURE))!;
  const ref = { namespace: w.ns, name: CAPTURE, uid: pc.metadata.uid! };
  const pid = w.gateway.proc.pid;
  const before = await rssBytes(pid);
  let peak = before;
  const names = (node: number): string[] => Array.from({ length: REPORT_LIMITS.fileNames }, (_, i) => `${'p'.repeat(240)}-${String(node * 10_000 + i).padStart(6, '0')}.pcap`.slice(-REPORT_LIMITS.fileNameLength));
  const full: string[] = [];
  for (let i = 0; i < FULL_NODES; i++) {
    const node = w.nodeName(`full-${i}`);
    full.push(node);
    await ensureNode(w.kube, node);
    await applyNodeReport(w.kube, ref, node, {
      state: 'Capturing',
      fileNames: names(i),
      directory: `/var/lib/kube-pcap/${'d'.repeat(REPORT_LIMITS.directoryLength - 19)}`,
      message: 'm'.repeat(REPORT_LIMITS.messageLength),
      packets: Number.MAX_SAFE_INTEGER,
    }, 'kube-pcap-agent');
    peak = Math.max(peak, await rssBytes(pid));
  }
  const folded = await waitFor(async () => {
    peak = Math.max(peak, await rssBytes(pid));
    const now = await getPacketCapture(w.kube, w.ns, CAPTURE);
    const nodes = new Set((now?.status?.files ?? []).map((f) => f.node));
    return full.every((n) => nodes.has(n)) ? now : undefined;
  }, { what: `the aggregator to fold the ${FULL_NODES} full reports`, timeoutMs: 60_000, intervalMs: 200 });
  const statusBytes = Buffer.byteLength(JSON.stringify(folded!.status));
  t.ok(statusBytes <= 1 << 20, `status is ${(statusBytes / 2 ** 20).toFixed(2)} MiB for ${FULL_NODES + 1} nodes, ${FULL_NODES} of them at every limit (at most 1 MiB)`);
  const kept = folded!.status!.files!.filter((f) => full.includes(f.node)).map((f) => f.fileNames?.length ?? 0);
  t.ok(kept.every((n) => n < REPORT_LIMITS.fileNames), `the file-name lists were cut to fit (kept ${Math.min(...kept)}-${Math.max(...kept)} of ${REPORT_LIMITS.fileNames} per node)`);
  t.ok(folded!.status!.files!.some((f) => f.node === w.nodeName('node-1')), 'the real agent\'s entry is still there');
  const grew = (peak - before) / 2 ** 20;
  t.ok(grew < RSS_BOUND_MIB, `the gateway's RSS grew by ${grew.toFixed(1)} MiB at its peak while ${FULL_NODES} reports of about 1 MiB were watched and folded (from ${(before / 2 ** 20).toFixed(0)} MiB; bound ${RSS_BOUND_MIB} MiB)`);
  t.equal(w.gateway.proc.running, true, 'and it is still serving');
});
