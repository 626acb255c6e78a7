// The load generator of bench:scale: nodes played at the API level, each as a real agent
// would be seen by the API server and the gateway (docs/status.md):
//  - a Node object, a Pod bound to it (nodeName) that the capture selects;
//  - the agent's three watches, opened with the agents' ServiceAccount token, drained and
//    byte-counted: PacketCapture metadata (all namespaces), its node's pods, its node's
//    reports;
//  - on a new capture generation, one GET of the capture (as src/agent/capture-specs.ts
//    does), then its report: WaitingForTraffic, then Capturing with a file, or Finished
//    after a stop; counters at most once a minute, at a random phase;
//  - TEST DOUBLE: its "agent" HTTPS endpoint is a small server with the agents' certificate
//    requiring the gateway's client certificate, listing one 24-byte file and serving it,
//    so the gateway lists and downloads every node (a real agent per node does not fit on
//    two cores). It does not review the gateway's token; the probes' real agents do.
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { Agent, request, type Dispatcher } from 'undici';
import { equalJitterDelay, fullJitterDelay } from '../src/kube/backoff.js';
import { KubeUnavailableError, type KubeClient } from '../src/kube/client.js';
import { applyNodeReport } from '../src/kube/node-report.js';
import type { Pki } from '../test/harness/kube-pcap.js';
import type { TestCluster } from '../test/harness/cluster.js';
import { ensureNode } from '../test/harness/node-reports.js';
import { readFile } from 'node:fs/promises';

const PCAP_HEADER = Buffer.from('d4c3b2a1020004000000000000000000ffff000001000000', 'hex');
const METADATA_WATCH = 'application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, application/json';

export interface SimContext {
  c: TestCluster;
  /** A client authenticated as the agents' ServiceAccount (what reports are written with). */
  agentKube: KubeClient;
  agentToken: string;
  pki: Pki;
  /** The address the fake agent endpoints listen on (a node address, not loopback). */
  address: string;
  namespace: string;
  /** Labels the capture selects. */
  labels: Record<string, string>;
  /** Called with (node, state) when a node's report says a new state. */
  onState?: (node: string, state: string) => void;
}

interface Watch {
  bytes: number;
  events: number;
  abort: AbortController;
}

export class SimNode {
  readonly watches: Watch[] = [];
  getBytes = 0;
  reportWrites = 0;
  /** Writes the API server could not take at once (429 from priority and fairness, 5xx). */
  refused = 0;
  server: Server | undefined;
  port = 0;
  private handled = new Map<string, number>();
  private timers: NodeJS.Timeout[] = [];
  private capture: string | undefined;
  /** Captures this node saw stopped: no counter update may follow their Finished. */
  private readonly finished = new Set<string>();
  private writing: Promise<void> = Promise.resolve();
  private capturingSince = 0;

  constructor(readonly name: string, private readonly x: SimContext, private readonly dispatcher: Dispatcher) {}

  get watchBytes(): number {
    return this.watches.reduce((n, w) => n + w.bytes, 0);
  }

  async start(): Promise<void> {
    await ensureNode(await this.x.c.rest(), this.name);
    // Bound to its node, without an address: nothing routes to it, no agent looks at it.
    await this.x.c.core.createNamespacedPod({ namespace: this.x.namespace, body: { metadata: { name: `sim-${this.name}`, labels: this.x.labels }, spec: { nodeName: this.name, containers: [{ name: 'app', image: 'registry.invalid/app:1' }], automountServiceAccountToken: false } } });
    await this.serveFiles();
    const server = this.x.c.info.server;
    await this.watch(`${server}/apis/projectcalico.org/v3/packetcaptures`, {}, METADATA_WATCH, (line) => this.onCapture(line));
    await this.watch(`${server}/api/v1/pods`, { fieldSelector: `spec.nodeName=${this.name}` });
    await this.watch(`${server}/apis/kube-pcap.io/v1alpha1/packetcapturenodereports`, { fieldSelector: `spec.nodeName=${this.name}` });
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    for (const w of this.watches) w.abort.abort();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private async watch(url: string, query: Record<string, string>, accept = 'application/json', onLine?: (line: string) => void): Promise<void> {
    const headers = { authorization: `Bearer ${this.x.agentToken}`, accept };
    // The collection's current version, as an agent's first list gives it.
    const list = await request(`${url}?${new URLSearchParams({ ...query, limit: '1', resourceVersion: '0' })}`, { headers, dispatcher: this.dispatcher });
    const text = await list.body.text();
    const rv = (JSON.parse(text) as { metadata?: { resourceVersion?: string } }).metadata?.resourceVersion ?? '';
    const w: Watch = { bytes: 0, events: 0, abort: new AbortController() };
    this.watches.push(w);
    const res = await request(`${url}?${new URLSearchParams({ ...query, watch: 'true', allowWatchBookmarks: 'true', resourceVersion: rv, timeoutSeconds: '3600' })}`, { headers, dispatcher: this.dispatcher, signal: w.abort.signal, bodyTimeout: 0 });
    let rest = '';
    res.body.on('data', (chunk: Buffer) => {
      w.bytes += chunk.length;
      if (!onLine) return;
      rest += chunk.toString();
      let nl: number;
      while ((nl = rest.indexOf('\n')) >= 0) {
        const line = rest.slice(0, nl);
        rest = rest.slice(nl + 1);
        w.events++;
        onLine(line);
      }
    });
    res.body.on('error', () => undefined);
  }

  /** Follows the capture of this name in the context's namespace (only that one): a new generation is fetched and acted on. */
  follow(capture: string | undefined): void {
    this.capture = capture;
  }

  private onCapture(line: string): void {
    const cap = this.capture;
    if (!cap || !line.includes(`"name":"${cap}"`) || !line.includes(`"namespace":"${this.x.namespace}"`)) return;
    if (line.startsWith('{"type":"DELETED"')) return;
    const generation = Number(/"generation":(\d+)/.exec(line)?.[1] ?? 0);
    const uid = /"uid":"([^"]+)"/.exec(line)?.[1] ?? '';
    const rv = /"resourceVersion":"(\d+)"/.exec(line)?.[1] ?? '';
    const key = `${uid}/${generation}`;
    if (this.handled.has(key)) return;
    this.handled.set(key, generation);
    void this.reconcile(cap, rv).catch((err: Error) => process.stderr.write(`sim ${this.name}: ${err.message}\n`));
  }

  private async reconcile(name: string, resourceVersion: string): Promise<void> {
    // As src/agent/capture-specs.ts fetches: retried when the API server cannot answer now.
    let body = '';
    for (let failures = 0; ; failures++) {
      const res = await request(`${this.x.c.info.server}/apis/projectcalico.org/v3/namespaces/${this.x.namespace}/packetcaptures/${name}?resourceVersion=${resourceVersion}`, { headers: { authorization: `Bearer ${this.x.agentToken}` }, dispatcher: this.dispatcher });
      body = await res.body.text();
      if (res.statusCode === 200) break;
      if (res.statusCode !== 429 && res.statusCode < 500) throw new Error(`GET ${name}: ${res.statusCode}`);
      this.refused++;
      await new Promise((r) => setTimeout(r, fullJitterDelay(failures, 500, 5000)));
    }
    this.getBytes += body.length;
    const pc = JSON.parse(body) as { metadata: { uid: string }; spec?: { endTime?: string } };
    const cap = { name, uid: pc.metadata.uid };
    const ref = { namespace: this.x.namespace, name: cap.name, uid: cap.uid };
    const file = `sim-${this.name}_cali0.pcap`;
    const base = { directory: `/var/lib/kube-pcap/${this.x.namespace}/${cap.name}`, pods: 1 };
    if (pc.spec?.endTime && Date.parse(pc.spec.endTime) <= Date.now()) {
      this.finished.add(cap.uid);
      for (const t of this.timers) clearTimeout(t);
      await this.write(ref, { ...base, pods: 0, state: 'Finished', fileNames: [file], packets: 100, bytes: 10_000, kernelDrops: 0 });
      return;
    }
    await this.write(ref, { ...base, state: 'WaitingForTraffic', fileNames: [], packets: 0, bytes: 0, kernelDrops: 0 });
    // The first packet, a moment later.
    await new Promise((r) => setTimeout(r, 100));
    this.capturingSince = Date.now();
    await this.write(ref, { ...base, state: 'Capturing', fileNames: [file], packets: 1, bytes: 100, kernelDrops: 0 });
    // Counters once a minute from then on; the first at a random moment of the minute, as
    // agents that started at different times would be spread over it.
    const tick = (n: number, inMs: number): void => {
      if (this.finished.has(cap.uid)) return;
      this.timers.push(setTimeout(() => {
        if (this.finished.has(cap.uid)) return;
        void this.write(ref, { ...base, state: 'Capturing', fileNames: [file], packets: 1 + n * 1000, bytes: 100 + n * 100_000, kernelDrops: 0 }).then(() => tick(n + 1, 60_000), () => undefined);
      }, inMs));
    };
    tick(1, Math.random() * 60_000);
  }

  /**
   * Writes the report, one write at a time (as the agent's work queue works on a key) and
   * retrying as it does (equal jitter from 0.5 s) when the API server cannot take it now
   * (429, 5xx). A counter update still waiting when the capture stopped is dropped, never
   * written over the Finished report.
   */
  private async write(ref: { namespace: string; name: string; uid: string }, status: Parameters<typeof applyNodeReport>[3]): Promise<void> {
    const turn = this.writing.then(() => this.writeNow(ref, status));
    this.writing = turn.catch(() => undefined);
    await turn;
  }

  private async writeNow(ref: { namespace: string; name: string; uid: string }, status: Parameters<typeof applyNodeReport>[3]): Promise<void> {
    for (let failures = 0; ; failures++) {
      if (status.state !== 'Finished' && this.finished.has(ref.uid)) return;
      try {
        await applyNodeReport(this.x.agentKube, ref, this.name, { ...status, countersTime: new Date().toISOString() }, `kube-pcap-agent/${this.name}`);
        break;
      } catch (err) {
        if (!(err instanceof KubeUnavailableError)) throw err;
        this.refused++;
        await new Promise((r) => setTimeout(r, equalJitterDelay(failures, 500, 60_000)));
      }
    }
    this.reportWrites++;
    if (status.state) this.x.onState?.(this.name, status.state);
  }

  private async serveFiles(): Promise<void> {
    const pki = this.x.pki;
    this.server = createServer({
      cert: await readFile(pki.agent.certFile),
      key: await readFile(pki.agent.keyFile),
      ca: await readFile(pki.ca.certFile),
      requestCert: true,
      rejectUnauthorized: true,
    }, (req, res) => {
      const file = `sim-${this.name}_cali0.pcap`;
      if (req.url?.endsWith('/files')) {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify([{ name: file, size: PCAP_HEADER.length, modified: new Date(this.capturingSince || Date.now()).toISOString() }]));
      } else if (req.url?.endsWith(`/files/${file}`)) {
        res.setHeader('content-type', 'application/vnd.tcpdump.pcap');
        res.setHeader('content-length', String(PCAP_HEADER.length));
        res.end(PCAP_HEADER);
      } else {
        res.statusCode = 404;
        res.end('{}');
      }
    });
    await new Promise<void>((resolve) => this.server!.listen(0, this.x.address, resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }
}

/** An HTTP/1.1 pool without a connection limit: every sim watch holds its own connection, as each agent's does. */
export function simDispatcher(ca: Buffer): Agent {
  return new Agent({ connect: { ca }, connections: null, keepAliveTimeout: 60_000, bodyTimeout: 0 });
}
