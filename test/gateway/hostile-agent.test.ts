// The gateway never trusts an agent's listing: a file name that is not a plain *.pcap name,
// a duplicate, an impossible size, or something that is not a listing at all is a 502
// naming the node, never a zip entry like `node/../../x`; and an answer too big to hold (a
// listing of 200 MiB, or of a million files) fails that node, not the gateway's memory.
//
// TEST DOUBLE: the hostile agent is a small HTTPS server with the agents' certificate that
// answers listings it is told to. A real agent cannot be made to list such names (it only
// lists plain names it finds in its directory), which is the point of this check; the
// gateway, the API server, the node report and the real agents beside it are real.
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { waitFor } from '../harness/wait.js';
import { isNodeName, parseListing } from '../../src/gateway/agent-listing.js';
import { applyNodeReport } from '../../src/kube/node-report.js';
import { getPacketCapture } from '../../src/kube/packetcapture.js';
import { ensureNode } from '../harness/node-reports.js';
import { bridgeAddress } from '../harness/addresses.js';
import { cluster } from '../harness/cluster.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { https } from '../harness/http.js';
import { publishAgents } from '../harness/kube-pcap.js';
import { checkResponse } from '../harness/openapi.js';

const c = await cluster(t);
const w = await storefrontWorld(t, c);
await w.grantFiles();
const ca = w.pki.ca.certFile;

let listing: unknown = [];
/** A listing too big to hold, streamed: this many bytes of entries, or this many entries. */
let flood: { bytes?: number; entries?: number; declare?: boolean } | undefined;
/** What the hostile agent answers to a pin (a download): by default a pin of the same listing. */
let pinAnswer: (() => unknown) | undefined;
/** An error the agent answers instead, to a pin or to a pinned file's GET: its status and message. */
let pinRefusal: { code: number; message: string } | undefined;
let fileRefusal: { code: number; message: string } | undefined;
const refuse = (res: import('node:http').ServerResponse, r: { code: number; message: string }): void => {
  res.statusCode = r.code;
  res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: r.message, reason: 'Refused', code: r.code }));
};
const address = await bridgeAddress(t);
const hostile: Server = createServer({ cert: await readFile(w.pki.agent.certFile), key: await readFile(w.pki.agent.keyFile) }, (req, res) => {
  res.setHeader('content-type', 'application/json');
  if (req.method === 'POST' && req.url?.endsWith('/pins') && pinRefusal) return refuse(res, pinRefusal);
  if (req.method === 'GET' && req.url?.includes('/pins/') && fileRefusal) return refuse(res, fileRefusal);
  if (req.method === 'POST' && req.url?.endsWith('/pins')) {
    res.statusCode = 201;
    res.end(JSON.stringify(pinAnswer ? pinAnswer() : { id: 'f'.repeat(32), expiresAt: new Date().toISOString(), ttlSeconds: 120, files: listing }));
    return;
  }
  if (flood && req.url?.endsWith('/files')) {
    const entry = (i: number): string => JSON.stringify({ name: `web-${i}_eth0.pcap`, size: 24, modified: new Date(0).toISOString(), identity: '1f-b18ebfeae31b47582' });
    const target = flood.bytes ?? Infinity;
    const count = flood.entries ?? Infinity;
    if (flood.declare) res.setHeader('content-length', String(target));
    let sent = 0;
    let i = 0;
    const pump = (): void => {
      while (sent < target && i < count && !res.destroyed) {
        const chunk = Buffer.from((i === 0 ? '[' : ',') + Array.from({ length: 256 }, (_, k) => entry(i + k)).join(','));
        i += 256;
        sent += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
      if (!res.destroyed) res.end(']');
    };
    res.on('error', () => undefined);
    pump();
    return;
  }
  res.end(JSON.stringify(req.url?.endsWith('/files') ? listing : []));
});
await new Promise<void>((resolve) => hostile.listen(0, address, resolve));
t.teardown(() => new Promise<void>((resolve) => hostile.close(() => resolve())));
// Its name sorts before the real nodes': its file is the zip's first.
const node = w.nodeName('node-0-hostile');
await publishAgents(c, w.agentService, [...w.agents, { node, address, port: (hostile.address() as AddressInfo).port }]);
// The node's report, as its agent would write it (the admin stands in: the report policy
// binds an agent's writes to its own node); its Node exists, as a real node's would.
await ensureNode(w.kube, node);
const pc = (await getPacketCapture(w.kube, w.ns, CAPTURE))!;
await applyNodeReport(w.kube, { namespace: w.ns, name: CAPTURE, uid: pc.metadata.uid! }, node, { directory: `/var/lib/kube-pcap/${w.ns}/${CAPTURE}`, fileNames: ['x.pcap'], state: 'Capturing' }, 'test-hostile-agent');

const modified = new Date().toISOString();
const identity = '1f-b18ebfeae31b47582';
const hostileListings: [string, unknown][] = [
  ['a path out of the node\'s directory', [{ name: '../../etc/x.pcap', size: 10, modified, identity }]],
  ['a separator', [{ name: 'a/b.pcap', size: 10, modified, identity }]],
  ['not a pcap name', [{ name: 'notes.txt', size: 10, modified, identity }]],
  ['a NUL', [{ name: 'a\u0000.pcap', size: 10, modified, identity }]],
  ['a duplicate', [{ name: 'a.pcap', size: 10, modified, identity }, { name: 'a.pcap', size: 10, modified, identity }]],
  ['a negative size', [{ name: 'a.pcap', size: -1, modified, identity }]],
  ['an absurd size', [{ name: 'a.pcap', size: 2 ** 60, modified, identity }]],
  ['no time', [{ name: 'a.pcap', size: 10, identity }]],
  ['no identity', [{ name: 'a.pcap', size: 10, modified }]],
  ['an identity that is not one', [{ name: 'a.pcap', size: 10, modified, identity: '"x", W/"y"' }]],
  ['not a list', { files: [] }],
];

for (const [what, body] of hostileListings) {
  t.test(`an agent listing ${what}: 502 naming the node, for the zip and the listing`, async (t) => {
    listing = body;
    for (const [path, template] of [[w.downloadUrl(), '/packet-capture/download/{namespace}/{name}/files.zip'], [`${w.gateway.url}/packet-capture/files/${w.ns}/${CAPTURE}`, '/packet-capture/files/{namespace}/{name}']] as const) {
      const res = await https(path, { caFile: ca, token: w.devopsToken });
      t.equal(res.status, 502, `${template}: ${res.body.subarray(0, 200).toString()}`);
      t.notOk(res.body.subarray(0, 2).toString() === 'PK', 'no zip at all');
      const status = res.json<{ message: string; details: { causes: { reason: string; field: string }[] } }>();
      t.same(status.details.causes, [{ reason: 'AgentInvalidResponse', field: node, message: `the agent of node ${node} answered off-contract` }]);
      await checkResponse('GET', template, res.status, res.headers['content-type'] as string, res.body);
    }
  });
}

t.test('a pin whose id could be a path, or without a lifetime: 502 naming the node, no zip', async (t) => {
  listing = [];
  for (const answer of [{ id: '../../files', ttlSeconds: 120, files: [] }, { id: 'f'.repeat(32), files: [] }, [] as unknown]) {
    pinAnswer = () => answer;
    const res = await https(w.downloadUrl(), { caFile: ca, token: w.devopsToken });
    t.equal(res.status, 502, JSON.stringify(answer));
    t.match(res.json<{ details: { causes: { reason: string; field: string }[] } }>().details.causes, [{ reason: 'AgentInvalidResponse', field: node }]);
  }
  pinAnswer = undefined;
});

t.test('an agent that refuses says why to the user: 503 with Retry-After for a passing refusal, 502 otherwise, never 500', async (t) => {
  pinRefusal = { code: 503, message: '128 downloads already hold files pinned on this node (--max-pins); retry when one has ended' };
  const busy = await https(w.downloadUrl(), { caFile: ca, token: w.devopsToken });
  t.equal(busy.status, 503, 'the node is busy, not down');
  t.ok(Number(busy.headers['retry-after']) >= 1, `Retry-After ${busy.headers['retry-after']}`);
  const busyStatus = busy.json<{ message: string; details: { causes: { reason: string; field: string; message: string }[] } }>();
  t.match(busyStatus.message, new RegExp(`cannot serve files of ${w.ns}/${CAPTURE} now: ${node} \\(its agent refused \\(503: 128 downloads already hold files pinned on this node \\(--max-pins\\)`));
  t.match(busyStatus.details.causes, [{ reason: 'AgentRefused', field: node, message: /refused to serve it: .*--max-pins/ }]);
  await checkResponse('GET', '/packet-capture/download/{namespace}/{name}/files.zip', busy.status, busy.headers['content-type'] as string, busy.body);
  pinRefusal = { code: 507, message: 'not enough disk space on node x to pin 1 MiB' };
  t.equal((await https(w.downloadUrl(), { caFile: ca, token: w.devopsToken })).status, 503, 'no disk for a pin now: 503 too');
  const partial = await https(`${w.downloadUrl()}?partial=true`, { caFile: ca, token: w.devopsToken });
  t.equal(partial.status, 200, '?partial=true leaves the node out');
  pinRefusal = { code: 500, message: 'something broke\nnode-9\tAgentUnreachable\tforged line' };
  const broken = await https(w.downloadUrl(), { caFile: ca, token: w.devopsToken });
  t.equal(broken.status, 502, 'any other refusal: 502');
  t.match(broken.json<{ message: string }>().message, new RegExp(`${node} \\(its agent refused \\(500: something broke node-9 AgentUnreachable forged line\\)\\)`), 'the agent\'s words on one line');
  pinRefusal = undefined;

  // A pin that lists a file, whose GET is then refused: the zip's first file fails before
  // the response's head, so it is still a Status naming the node, not a 500 or a cut.
  listing = [{ name: 'a.pcap', size: 24, modified, identity }];
  fileRefusal = { code: 410, message: 'the pin has expired' };
  const first = await https(w.downloadUrl(), { caFile: ca, token: w.devopsToken });
  t.equal(first.status, 502, `the first file refused: ${first.body.subarray(0, 300).toString()}`);
  t.match(first.json<{ details: { causes: { reason: string; field: string; message: string }[] } }>().details.causes, [{ reason: 'AgentRefused', field: node, message: /410: the pin has expired/ }]);
  await checkResponse('GET', '/packet-capture/download/{namespace}/{name}/files.zip', first.status, first.headers['content-type'] as string, first.body);
  fileRefusal = undefined;
  listing = [];
});

/** The gateway's peak resident memory (VmHWM), MiB. */
async function peakRssMiB(): Promise<number> {
  const status = await readFile(`/proc/${w.gateway.proc.pid}/status`, 'utf8');
  return Number(/^VmHWM:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN) / 1024;
}

t.test('an answer too big to hold fails its node with the reason; the gateway\'s memory barely moves', async (t) => {
  const before = await peakRssMiB();
  const cases: [string, NonNullable<typeof flood>, RegExp][] = [
    ['200 MiB of listing', { bytes: 200 * 1024 * 1024 }, /more than the 4194304 bytes the gateway reads/],
    ['200 MiB declared up front', { bytes: 200 * 1024 * 1024, declare: true }, /is 209715200 bytes, more than the 4194304/],
    ['a million files', { entries: 1_000_000 }, /more than the 4194304 bytes|more than the 10000 a node may list/],
    ['10 001 files in 2 MiB', { entries: 10_240 }, /10240 files, more than the 10000 a node may list/],
  ];
  for (const [what, f, reason] of cases) {
    flood = f;
    const res = await https(`${w.gateway.url}/packet-capture/files/${w.ns}/${CAPTURE}`, { caFile: ca, token: w.devopsToken });
    t.equal(res.status, 502, `${what}: 502`);
    const status = res.json<{ message: string; details: { causes: { reason: string; field: string }[] } }>();
    t.same(status.details.causes.map((c) => [c.reason, c.field]), [['AgentInvalidResponse', node]], `${what}: naming the node`);
    // The gateway's logger writes asynchronously: the line can land just after the answer.
    const logged = await waitFor(async () => (reason.test(await readFile(w.gateway.logFile, 'utf8')) ? true : undefined), { what: `the gateway's log to say why (${what})`, timeoutMs: 5000 }).catch(() => false);
    t.ok(logged, `${what}: the gateway's log says why (${reason})`);
  }
  flood = undefined;
  const grew = (await peakRssMiB()) - before;
  t.ok(grew < 64, `the gateway's peak RSS grew ${grew.toFixed(1)} MiB over the four (bound 64 MiB; unbounded, 200 MiB of listing cost about 800)`);
  listing = [];
  const after = await https(`${w.gateway.url}/packet-capture/files/${w.ns}/${CAPTURE}`, { caFile: ca, token: w.devopsToken });
  t.equal(after.status, 200, 'and it goes on serving');
});

t.test('a well-formed listing from the same agent is served beside the real agents\' files', async (t) => {
  listing = [];
  const res = await https(`${w.gateway.url}/packet-capture/files/${w.ns}/${CAPTURE}`, { caFile: ca, token: w.devopsToken });
  t.equal(res.status, 200);
  t.equal(res.json<{ files: unknown[] }>().files.length, w.files.size, 'the real agents\' files, nothing from the hostile node');
});

t.test('node names that are not Kubernetes node names never become zip directories', async (t) => {
  for (const bad of ['..', '../x', 'a/b', 'Node-1', '', 'x'.repeat(254), 'a..b', '-a']) t.notOk(isNodeName(bad), JSON.stringify(bad));
  for (const good of ['node-1', 'ip-10-0-0-1.eu-west-1.compute.internal', 'a']) t.ok(isNodeName(good), good);
  t.throws(() => parseListing('n', [{ name: '..pcap', size: 1, modified, identity }]), /not a plain/);
  t.same(parseListing('n', [{ name: 'web-0_cali0-1700000000000001.pcap', size: 24, modified, identity, extra: 'ignored' }]), [{ name: 'web-0_cali0-1700000000000001.pcap', size: 24, modified, identity }]);
});
