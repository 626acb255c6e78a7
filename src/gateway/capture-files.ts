// Finding a capture's files: the capture's node reports say which nodes have something
// (docs/status.md: readers who need precision read the reports, not the aggregated status,
// which lags by up to its write interval); each of those nodes' agents is asked for its
// listing before anything is streamed, so that a missing agent is a clean 502 naming the
// nodes, never a zip that silently lacks files.
import type { Logger } from 'pino';
import { ConcurrencyLimit } from '../flow/concurrency-limit.js';
import { agentsBusy, agentsFailed, badGateway, notFound, serviceUnavailable, type HttpError, type NodeProblem } from '../http/status.js';
import { KubeApiError, KubeUnavailableError } from '../kube/client.js';
import { entryOf } from '../kube/node-report.js';
import type { CaptureState, NodeCaptureStatus, PacketCapture } from '../kube/packetcapture.js';
import { AgentError, type AgentClient, type AgentFile } from './agent-client.js';
import { agentText, InvalidListingError, isNodeName } from './agent-listing.js';
import type { AgentDirectory, AgentEndpoint } from './agent-directory.js';
import type { CaptureCache } from './capture-cache.js';

export interface NodeFiles {
  node: string;
  state: CaptureState | undefined;
  endpoint: AgentEndpoint;
  files: AgentFile[];
  /** With `pin`: the agent holds exactly these files for this download until it is released. */
  pin?: { id: string; ttlSeconds: number };
}

export interface CollectOptions {
  signal?: AbortSignal;
  /** Pin each node's files (a download): what is listed is then what is served. */
  pin?: boolean;
}

/** A capture as a request found it: the object, and each node's entry from its report. */
export interface FoundCapture {
  pc: PacketCapture;
  entries: NodeCaptureStatus[];
}

export interface CaptureFilesOptions {
  apiTimeoutMs: number;
  /** Agents asked at once per request: a capture on 1 000 nodes never opens 1 000 requests together. */
  listConcurrency: number;
  log: Logger;
  onAgentError?: (operation: string) => void;
}

/** A node that holds files of the capture but was left out, and why. */
export type MissingNode = NodeProblem;

/** Agent answers that say "not now" (docs/downloads.md): too many pins, no disk for one yet. */
const PASSING_REFUSALS = new Set([503, 507]);

/** How an agent failed a call: a refusal in its own words when it answered, else unreachable. */
export function agentProblem(err: AgentError): NodeProblem {
  if (err.status !== undefined) return { node: err.node, problem: 'AgentRefused', why: `its agent refused (${agentText(err.answer ?? err.message, 300)})`, status: err.status };
  return { node: err.node, problem: 'AgentUnreachable', why: `its agent could not be asked (${err.message.slice(0, 200)})` };
}

export class CaptureFiles {
  constructor(
    private readonly cache: CaptureCache,
    readonly directory: AgentDirectory,
    readonly agents: AgentClient,
    private readonly o: CaptureFilesOptions,
  ) {}

  /** Agents asked (or read) at once per request (--agent-list-concurrency). */
  get fanOut(): number {
    return this.o.listConcurrency;
  }

  /**
   * The PacketCapture (read with the gateway's own identity; 404 when there is none) and
   * each node's entry for it, from its node report (capture-cache.ts: from memory when the
   * cache holds the capture). A capture with no reports at all falls back to status.files
   * (written by agents older than the reports).
   */
  async find(namespace: string, name: string): Promise<FoundCapture> {
    const { capture: pc, reports } = await readOr503('the PacketCapture and its node reports', () => this.cache.read(namespace, name));
    if (!pc) throw notFound(`packetcaptures.projectcalico.org "${name}" not found in namespace "${namespace}"`);
    if (reports.length === 0) return { pc, entries: pc.status?.files ?? [] };
    return { pc, entries: reports.filter((r) => !r.metadata.deletionTimestamp).map(entryOf).sort((a, b) => a.node.localeCompare(b.node)) };
  }

  /**
   * Every node's current files. A node whose entry lists files but whose agent cannot be
   * reached fails the whole request (502, naming the nodes). A node whose entry lists none
   * is asked too (its status may lag a first file by a second) but may be skipped.
   */
  async collect(found: FoundCapture, o: CollectOptions = {}): Promise<NodeFiles[]> {
    const { nodes, missing } = await this.collectReachable(found, o);
    const { namespace, name } = found.pc.metadata;
    // Nothing is streamed: the pins taken for it are given back at once.
    if (missing.length > 0) await this.release(namespace, name, nodes);
    const invalid = missing.filter((m) => m.problem === 'AgentInvalidResponse').map((m) => m.node);
    if (invalid.length > 0) {
      throw badGateway(`the agents of these nodes sent a listing that is not a list of capture files: ${invalid.join(', ')}`, invalid, 'AgentInvalidResponse');
    }
    if (missing.length > 0) throw nodesFailed(namespace, name, missing);
    return nodes;
  }

  /**
   * What is reachable now (a download with ?partial=true): the files of every node whose
   * agent answered, and each node that holds files but was left out, with why. The caller
   * says so in the zip (MISSING.txt); nothing is left out silently.
   */
  async collectReachable({ pc, entries }: FoundCapture, o: CollectOptions = {}): Promise<{ nodes: NodeFiles[]; missing: MissingNode[] }> {
    const { namespace, name } = pc.metadata;
    const { signal } = o;
    // A node name becomes a zip directory: anything but a Kubernetes node name is refused
    // before any agent is asked (the agents' ServiceAccount can write any node's report).
    const badNodes = entries.map((e) => e.node).filter((n) => !isNodeName(n)).map((n) => JSON.stringify(n).slice(0, 80));
    if (badNodes.length > 0) {
      throw badGateway(`the status of ${namespace}/${name} names nodes that are not node names: ${badNodes.join(', ')}`, badNodes, 'AgentInvalidResponse');
    }
    const missing: MissingNode[] = [];
    const listings = new ConcurrencyLimit({ maxInFlight: this.o.listConcurrency, maxQueued: Infinity, what: 'agent listings' });
    const results = await Promise.all(entries.map((entry) => listings.run(async (): Promise<NodeFiles | undefined> => {
      const holdsFiles = (entry.fileNames?.length ?? 0) > 0;
      const endpoint = this.directory.endpointFor(entry.node);
      if (!endpoint) {
        if (holdsFiles) missing.push({ node: entry.node, problem: 'AgentUnreachable', why: 'no agent endpoint for this node (its agent is not running or not ready)' });
        this.o.log.warn({ node: entry.node, holdsFiles }, 'no agent endpoint for node');
        return undefined;
      }
      try {
        if (o.pin) {
          const pin = await this.agents.pin(endpoint, namespace, name);
          const nf: NodeFiles = { node: entry.node, state: entry.state, endpoint, files: [...pin.files].sort((a, b) => a.name.localeCompare(b.name)), pin: { id: pin.id, ttlSeconds: pin.ttlSeconds } };
          if (signal?.aborted) {
            await this.release(namespace, name, [nf]);
            return undefined;
          }
          return nf;
        }
        const files = await this.agents.list(endpoint, namespace, name);
        if (signal?.aborted) return undefined;
        return { node: entry.node, state: entry.state, endpoint, files: [...files].sort((a, b) => a.name.localeCompare(b.name)) };
      } catch (err) {
        if (err instanceof InvalidListingError) {
          this.o.onAgentError?.('list');
          this.o.log.warn({ node: entry.node, err: err.message }, 'agent listing refused');
          missing.push({ node: entry.node, problem: 'AgentInvalidResponse', why: `its agent answered off-contract (${err.message.slice(0, 200)})` });
          return undefined;
        }
        if (!(err instanceof AgentError)) throw err;
        this.o.onAgentError?.('list');
        this.o.log.warn({ node: entry.node, holdsFiles, err: err.message }, 'agent listing failed');
        if (holdsFiles) missing.push(agentProblem(err));
        return undefined;
      }
    })));
    missing.sort((a, b) => a.node.localeCompare(b.node));
    return { nodes: results.filter((r): r is NodeFiles => r !== undefined).sort((a, b) => a.node.localeCompare(b.node)), missing };
  }

  /**
   * Gives back these nodes' pins, each at most once, never failing: a pin the agent cannot
   * be told about expires there on its own (--pin-ttl-seconds).
   */
  async release(namespace: string, name: string, nodes: NodeFiles[]): Promise<void> {
    const releases = new ConcurrencyLimit({ maxInFlight: this.o.listConcurrency, maxQueued: Infinity, what: 'pin releases' });
    await Promise.all(nodes.map((n) => {
      const pin = n.pin;
      if (!pin) return undefined;
      n.pin = undefined;
      return releases.run(() => this.agents.releasePin(n.endpoint, namespace, name, pin.id)).catch((err: Error) => {
        this.o.log.info({ node: n.node, pin: pin.id, err: err.message }, 'cannot release a pin; it expires on the agent');
      });
    }));
  }
}

/**
 * The answer for nodes that could not serve a capture's files: 503 with Retry-After when
 * each refused for a passing reason (its own words), else 502; each node named with why.
 */
export function nodesFailed(namespace: string, name: string, missing: NodeProblem[]): HttpError {
  const each = missing.map((m) => `${m.node} (${m.why})`).join('; ');
  if (missing.every((m) => m.problem === 'AgentRefused' && PASSING_REFUSALS.has(m.status ?? 0))) {
    return agentsBusy(`the agents of these nodes cannot serve files of ${namespace}/${name} now: ${each}; retry later, or ask for ?partial=true`, missing);
  }
  return agentsFailed(`the agents of these nodes hold files of ${namespace}/${name} but could not serve them: ${each}`, missing);
}

/** A read from the API server that fails closed: unavailable or refused is a 503 saying what could not be read. */
async function readOr503<T>(what: string, read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (err) {
    if (err instanceof KubeUnavailableError) throw serviceUnavailable(`cannot read ${what}: the API server is unavailable (${err.message})`);
    if (err instanceof KubeApiError) throw serviceUnavailable(`cannot read ${what} (${err.status} ${err.reason ?? ''}); check kube-pcap's RBAC`);
    throw err;
  }
}
