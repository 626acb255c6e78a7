// The one contract between the gateway and the agents (docs/architecture.md; the routes'
// behaviour in docs/downloads.md and docs/pcapng.md): the routes, the parameters they take,
// the shapes they answer, and how much of an answer the gateway reads. The agent's routes
// and the gateway's agent client both import this module, and nothing else of each other.
import { CAPTURE_FILE_NAME_PATTERN } from '../pcap/file-names.js';

/** The agent's routes, as fastify templates. Every one is authorized as `get` (or `delete`) packetcaptures/files. */
export const AGENT_ROUTES = {
  /** GET: the node's files of the capture (AgentFile[]); DELETE: remove them (409 while capturing). */
  files: '/v1/captures/:namespace/:name/files',
  /** GET: one file's bytes, Range supported; ETag is its identity, If-Match honoured. */
  file: '/v1/captures/:namespace/:name/files/:file',
  /** POST: pin every file as it is now (201 PinAnswer; 503 too many pins, 507 no disk for it, 409 files going away). */
  pins: '/v1/captures/:namespace/:name/pins',
  /** PUT: renew the pin (PinLease); DELETE: release it. */
  pin: '/v1/captures/:namespace/:name/pins/:pin',
  /** GET: the pin's files as one time-ordered pcapng. */
  pinnedPcapng: '/v1/captures/:namespace/:name/pins/:pin/files.pcapng',
  /** GET: one pinned file's bytes, exactly its listed size (Range, ETag, If-Match). */
  pinnedFile: '/v1/captures/:namespace/:name/pins/:pin/files/:file',
  /** GET [?since=<RFC 3339>]: the node's packets of the capture, live, as pcapng. */
  stream: '/v1/captures/:namespace/:name/stream',
} as const;

export type AgentRoute = keyof typeof AGENT_ROUTES;

/** A route's concrete path, each parameter percent-encoded. */
export function agentPath(route: AgentRoute, params: { namespace: string; name: string; pin?: string; file?: string }): string {
  return AGENT_ROUTES[route].replace(/:(namespace|name|pin|file)/g, (_, key: 'namespace' | 'name' | 'pin' | 'file') => {
    const value = params[key];
    if (value === undefined) throw new Error(`the agent route ${route} needs ${key}`);
    return encodeURIComponent(value);
  });
}

/** A pin's id: 128 random bits in hex, nothing a path could be made of. */
export const PIN_ID_PATTERN = '^[0-9a-f]{32}$';

/**
 * Where a file's packets come from (docs/pcapng.md, "File sources"), recorded by the agent
 * when it starts the file: the merged pcapng names every pod from it.
 */
export interface FileSource {
  node: string;
  namespace: string;
  capture: string;
  pod: string;
  podUID: string;
  /** The pod's IPs when the file was started (IPv4 and IPv6). */
  podIPs: string[];
  iface: string;
  /** From the file's pcap header. */
  linkType: number;
  snapLen: number;
  /** Timestamp resolution: 6 (microseconds) or 9 (nanoseconds). */
  tsresol: 6 | 9;
  /**
   * The writer that numbered the file's records, and the number of its first record: a live
   * stream that falls behind and lets files go counts exactly what it skipped. Not in the
   * agent's listings (the gateway needs neither).
   */
  writer?: string;
  firstRecord?: number;
}

/** One entry of a listing or a pin. */
export interface AgentFile {
  name: string;
  size: number;
  modified: string;
  /** What the agent serves under this name, by inode (src/agent/file-identity.ts). */
  identity: string;
  /** Where its packets come from, when the agent recorded it. */
  source?: FileSource;
}

/** A pin's lease: until when the agent holds it unless renewed. */
export interface PinLease {
  id: string;
  expiresAt: string;
  ttlSeconds: number;
}

/** The answer to a pin: its lease and its files, held as listed until released. */
export interface PinAnswer extends PinLease {
  files: AgentFile[];
}

/**
 * How much of an agent's answer the gateway reads (docs/security.md, "A node"): beyond these,
 * the node fails with a reason and the gateway's memory is not the agent's to spend.
 * A listing entry is about 300 bytes, so a listing at the entry limit is about 3 MiB.
 */
export const AGENT_ANSWER_LIMITS = {
  /** A JSON answer (listing, pin, removed files). */
  jsonBytes: 4 * 1024 * 1024,
  /** Files in one node's listing or pin. */
  listingEntries: 10_000,
  /** An error answer, read for its message. */
  errorBytes: 64 * 1024,
  /** Interface blocks in one node's pcapng stream (one per pod interface, again after a reconnection). */
  interfacesPerStream: 4096,
} as const;

/** Files beyond this are not capture files (the agent's own size limit is far below). */
export const MAX_FILE_SIZE = 2 ** 50;

// The answers' JSON schemas, as the agent's routes declare them (fastify serializes by them).

export const fileSourceSchema = {
  type: 'object',
  required: ['node', 'namespace', 'capture', 'pod', 'podUID', 'podIPs', 'iface', 'linkType', 'snapLen', 'tsresol'],
  properties: {
    node: { type: 'string' }, namespace: { type: 'string' }, capture: { type: 'string' }, pod: { type: 'string' }, podUID: { type: 'string' },
    podIPs: { type: 'array', items: { type: 'string' } }, iface: { type: 'string' }, linkType: { type: 'integer' }, snapLen: { type: 'integer' }, tsresol: { type: 'integer' },
    writer: { type: 'string' }, firstRecord: { type: 'integer' },
  },
} as const;

export const fileListingSchema = {
  type: 'array',
  items: {
    type: 'object',
    required: ['name', 'size', 'modified', 'identity'],
    properties: { name: { type: 'string' }, size: { type: 'integer' }, modified: { type: 'string' }, identity: { type: 'string' }, source: fileSourceSchema },
  },
} as const;

export const pinLeaseSchema = {
  type: 'object',
  required: ['id', 'expiresAt', 'ttlSeconds'],
  properties: { id: { type: 'string' }, expiresAt: { type: 'string' }, ttlSeconds: { type: 'number' } },
} as const;

export const pinAnswerSchema = {
  ...pinLeaseSchema,
  required: [...pinLeaseSchema.required, 'files'],
  properties: { ...pinLeaseSchema.properties, files: fileListingSchema },
} as const;

/** The parameter schema of a file name: what the agents write and the gateway accepts. */
export const fileNameSchema = { type: 'string', maxLength: 255, pattern: CAPTURE_FILE_NAME_PATTERN } as const;
export const pinIdSchema = { type: 'string', pattern: PIN_ID_PATTERN } as const;
