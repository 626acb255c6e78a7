// Finding a capture's files: the capture's node reports say which nodes have something
// (docs/status.md: readers who need precision read the reports, not the aggregated status,
// which lags by up to its write interval); each of those nodes' agents is asked for its
// listing before anything is streamed, so that a missing agent is a clean 502 naming the
// nodes, never a zip that silently lacks files.
import type { Logger } from 'pino';
import { badGateway, notFound, serviceUnavailable } from '../http/status.js';
import { KubeApiError, KubeUnavailableError, type KubeClient } from '../kube/client.js';
import { entryOf, listCaptureReports } from '../kube/node-report.js';
import { getPacketCapture, type CaptureState, type NodeCaptureStatus, type PacketCapture } from '../kube/packetcapture.js';
import { AgentError, type AgentClient, type AgentFile } from './agent-client.js';
import { InvalidListingError, isNodeName } from './agent-listing.js';
import type { AgentDirectory, AgentEndpoint } from './agent-directory.js';

export interface NodeFiles {
  node: string;
  state: CaptureState | undefined;
  endpoint: AgentEndpoint;
  files: AgentFile[];
}

export interface CaptureFilesOptions {
  apiTimeoutMs: number;
  /** Agents asked at once per request: a capture on 1 000 nodes never opens 1 000 requests together. */
  listConcurrency: number;
  log: Logger;
  onAgentError?: (operation: string) => void;
}

/** A node that holds files of the capture but was left out, and why. */
export interface MissingNode {
  node: string;
  problem: 'AgentUnreachable' | 'AgentInvalidResponse';
  why: string;
}

export class CaptureFiles {
  private readonly apiTimeoutMs: number;
  private readonly log: Logger;
  private readonly onAgentError: (operation: string) => void;

  constructor(
    private readonly kube: KubeClient,
    readonly directory: AgentDirectory,
    readonly agents: AgentClient,
    private readonly o: CaptureFilesOptions,
  ) {
    this.apiTimeoutMs = o.apiTimeoutMs;
    this.log = o.log;
    this.onAgentError = o.onAgentError ?? (() => undefined);
  }

  /** The PacketCapture, read with the gateway's own identity; 404 when there is none. */
  async capture(namespace: string, name: string): Promise<PacketCapture> {
    let pc: PacketCapture | undefined;
    try {
      pc = await getPacketCapture(this.kube, namespace, name, this.apiTimeoutMs);
    } catch (err) {
      if (err instanceof KubeUnavailableError) throw serviceUnavailable(`cannot read the PacketCapture: the API server is unavailable (${err.message})`);
      if (err instanceof KubeApiError) throw serviceUnavailable(`cannot read the PacketCapture (${err.status} ${err.reason ?? ''}); check kube-pcap's RBAC`);
      throw err;
    }
    if (!pc) throw notFound(`packetcaptures.projectcalico.org "${name}" not found in namespace "${namespace}"`);
    return pc;
  }

  /**
   * Each node's entry for the capture, from its node report. A capture with no reports at
   * all falls back to status.files (written by agents older than the reports).
   */
  async nodes(pc: PacketCapture): Promise<NodeCaptureStatus[]> {
    const { namespace, name, uid } = pc.metadata;
    let reports;
    try {
      reports = await listCaptureReports(this.kube, { namespace, name, uid: uid ?? '' }, this.apiTimeoutMs);
    } catch (err) {
      if (err instanceof KubeUnavailableError) throw serviceUnavailable(`cannot read the capture's node reports: the API server is unavailable (${err.message})`);
      if (err instanceof KubeApiError) throw serviceUnavailable(`cannot read the capture's node reports (${err.status} ${err.reason ?? ''}); check kube-pcap's RBAC`);
      throw err;
    }
    if (reports.length === 0) return pc.status?.files ?? [];
    return reports.filter((r) => !r.metadata.deletionTimestamp).map(entryOf).sort((a, b) => a.node.localeCompare(b.node));
  }

  /**
   * Every node's current files. A node whose entry lists files but whose agent cannot be
   * reached fails the whole request (502, naming the nodes). A node whose entry lists none
   * is asked too (its status may lag a first file by a second) but may be skipped.
   */
  async collect(pc: PacketCapture, signal?: AbortSignal, entries?: NodeCaptureStatus[]): Promise<NodeFiles[]> {
    const { nodes, missing } = await this.gather(pc, signal, entries);
    const { namespace, name } = pc.metadata;
    const invalid = missing.filter((m) => m.problem === 'AgentInvalidResponse').map((m) => m.node);
    if (invalid.length > 0) {
      throw badGateway(`the agents of these nodes sent a listing that is not a list of capture files: ${invalid.join(', ')}`, invalid, 'AgentInvalidResponse');
    }
    if (missing.length > 0) {
      const unreachable = missing.map((m) => m.node);
      throw badGateway(`the agents of these nodes hold files of ${namespace}/${name} but cannot be reached: ${unreachable.join(', ')}`, unreachable);
    }
    return nodes;
  }

  /**
   * What is reachable now (a download with ?partial=true): the files of every node whose
   * agent answered, and each node that holds files but was left out, with why. The caller
   * says so in the zip (MISSING.txt); nothing is left out silently.
   */
  async collectReachable(pc: PacketCapture, signal?: AbortSignal): Promise<{ nodes: NodeFiles[]; missing: MissingNode[] }> {
    return await this.gather(pc, signal);
  }

  private async gather(pc: PacketCapture, signal?: AbortSignal, entries?: NodeCaptureStatus[]): Promise<{ nodes: NodeFiles[]; missing: MissingNode[] }> {
    const { namespace, name } = pc.metadata;
    entries ??= await this.nodes(pc);
    // A node name becomes a zip directory: anything but a Kubernetes node name is refused
    // before any agent is asked (the agents' ServiceAccount can write any node's report).
    const badNodes = entries.map((e) => e.node).filter((n) => !isNodeName(n)).map((n) => JSON.stringify(n).slice(0, 80));
    if (badNodes.length > 0) {
      throw badGateway(`the status of ${namespace}/${name} names nodes that are not node names: ${badNodes.join(', ')}`, badNodes, 'AgentInvalidResponse');
    }
    const missing: MissingNode[] = [];
    const results = await mapBounded(entries, this.o.listConcurrency, async (entry): Promise<NodeFiles | undefined> => {
      const holdsFiles = (entry.fileNames?.length ?? 0) > 0;
      const endpoint = this.directory.endpointFor(entry.node);
      if (!endpoint) {
        if (holdsFiles) missing.push({ node: entry.node, problem: 'AgentUnreachable', why: 'no agent endpoint for this node (its agent is not running or not ready)' });
        this.log.warn({ node: entry.node, holdsFiles }, 'no agent endpoint for node');
        return undefined;
      }
      try {
        const files = await this.agents.list(endpoint, namespace, name);
        if (signal?.aborted) return undefined;
        return { node: entry.node, state: entry.state, endpoint, files: [...files].sort((a, b) => a.name.localeCompare(b.name)) };
      } catch (err) {
        if (err instanceof InvalidListingError) {
          this.onAgentError('list');
          this.log.warn({ node: entry.node, err: err.message }, 'agent listing refused');
          missing.push({ node: entry.node, problem: 'AgentInvalidResponse', why: `its agent answered off-contract (${err.message.slice(0, 200)})` });
          return undefined;
        }
        if (!(err instanceof AgentError)) throw err;
        this.onAgentError('list');
        this.log.warn({ node: entry.node, holdsFiles, err: err.message }, 'agent listing failed');
        if (holdsFiles) missing.push({ node: entry.node, problem: 'AgentUnreachable', why: `its agent could not be asked (${err.message.slice(0, 200)})` });
        return undefined;
      }
    });
    missing.sort((a, b) => a.node.localeCompare(b.node));
    return { nodes: results.filter((r): r is NodeFiles => r !== undefined).sort((a, b) => a.node.localeCompare(b.node)), missing };
  }
}

/** fn over items, at most `limit` at once, results in input order. */
async function mapBounded<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
