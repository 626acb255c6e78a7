// What an agent asks of the API server, read from the API server's own audit log
// (docs/security.md, "A node"): every request for Pods and for node reports carries the
// field selector of its own node (RBAC cannot narrow a list by node, so the agent must),
// and every verb it uses is one its ClusterRole grants, which grants nothing it does not use.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { parse } from 'yaml';
import { captureWorld, dig } from '../harness/capture-fixture.js';
import { privateCluster } from '../harness/cluster.js';
import { REPO_ROOT } from '../harness/control-plane.js';
import { AGENTS_NAMESPACE, scratchDir } from '../harness/kube-pcap.js';
import { waitFor } from '../harness/wait.js';

const AGENT = `system:serviceaccount:${AGENTS_NAMESPACE}:kube-pcap-agent`;
const dir = await scratchDir(t, 'audit-agent');
const policy = join(dir, 'policy.yaml');
const auditLog = join(dir, 'audit.log');
await writeFile(policy, `apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: Metadata\n    users: ["${AGENT}"]\n  - level: None\n`);
const c = await privateCluster(t, { extraApiServerArgs: [`--audit-policy-file=${policy}`, `--audit-log-path=${auditLog}`, '--audit-log-mode=batch', '--audit-log-batch-max-wait=1s'] });
const w = await captureWorld(t, c, { nodes: 1 });
const node = w.nodeName('node-1');

interface AuditEvent { verb: string; requestURI: string; user: { username: string }; objectRef?: { resource?: string; subresource?: string; apiGroup?: string }; stage: string }

async function agentEvents(): Promise<AuditEvent[]> {
  const text = await readFile(auditLog, 'utf8').catch(() => '');
  return text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as AuditEvent).filter((e) => e.user.username === AGENT);
}

t.test('every Pod and report request of the agent is its own node\'s; its verbs are what its ClusterRole grants, and no more', async (t) => {
  const client = await w.addPod(w.nodes[0]!, 'logging-a', { app: 'logging' });
  await w.applyCapture('dns', '  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]');
  await w.waitForState('dns', 'node-1', 'WaitingForTraffic');
  await dig(client, w.dns.ip, 'audited.storefront.example');
  await w.waitForState('dns', 'node-1', 'Capturing');
  await c.kubectl(['delete', 'packetcapture', 'dns', '-n', w.ns]);
  const events = await waitFor(async () => {
    const e = await agentEvents();
    return e.some((x) => x.objectRef?.resource === 'packetcapturenodereports' && x.verb === 'patch') && e.some((x) => x.objectRef?.resource === 'pods' && x.verb === 'watch') ? e : undefined;
  }, { what: 'the agent\'s requests in the audit log', timeoutMs: 30_000, intervalMs: 250 });

  const own = `fieldSelector=spec.nodeName=${node}`;
  for (const resource of ['pods', 'packetcapturenodereports']) {
    const reads = events.filter((e) => e.objectRef?.resource === resource && (e.verb === 'list' || e.verb === 'watch'));
    t.ok(reads.length > 0, `${reads.length} lists and watches of ${resource}`);
    const other = reads.filter((e) => !decodeURIComponent(e.requestURI).includes(own));
    t.same(other.map((e) => e.requestURI), [], `every one with ${own}`);
  }
  t.notOk(events.some((e) => e.objectRef?.resource === 'pods' && e.verb === 'get'), 'no Pod read by name either');

  const used = new Set(events.map((e) => `${e.verb} ${e.objectRef?.resource ?? e.requestURI}${e.objectRef?.subresource ? `/${e.objectRef.subresource}` : ''}`));
  const role = parse((await readFile(join(REPO_ROOT, 'deploy', 'agent', 'rbac.yaml'), 'utf8')).split('\n---\n')[0]!) as { rules: { resources: string[]; verbs: string[] }[] };
  const granted = new Set(role.rules.flatMap((r) => r.resources.flatMap((res) => r.verbs.map((v) => `${v} ${res}`))));
  for (const u of used) t.ok(granted.has(u), `used and granted: ${u}`);
  // Granted but not seen here: creating reports (server-side apply makes them with a patch,
  // which the API server also authorizes as create), deleting reports (a capture's report
  // whose capture went), and the reviews of the gateway's calls (file-server.test.ts).
  const unexercised = new Set(['create packetcapturenodereports', 'delete packetcapturenodereports', 'create tokenreviews', 'create subjectaccessreviews']);
  for (const g of granted) t.ok(used.has(g) || unexercised.has(g), `granted and used: ${g}`);
  t.notOk(granted.has('get packetcapturenodereports'), 'reports are never read by name: not granted');
});
