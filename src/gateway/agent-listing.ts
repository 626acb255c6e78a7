// What the gateway accepts from an agent before any of it becomes a zip entry or a JSON
// field: an agent is trusted to serve its node's files, not to name paths. A node's agent
// (or whoever took its endpoint) could list `../../x`, and the agents' ServiceAccount can
// write any node's status entry, so node names and file names are both checked here.
import { CAPTURE_FILE_NAME, FILE_IDENTITY } from '../pcap/file-names.js';
import { DNS1123_SUBDOMAIN } from '../http/params.js';

export interface AgentFile {
  name: string;
  size: number;
  modified: string;
  /** What the agent serves under this name, by inode (src/agent/file-identity.ts). */
  identity: string;
}

/** A download's pin on one node: its files, held as listed until released (src/agent/file-pins.ts). */
export interface AgentPin {
  id: string;
  ttlSeconds: number;
  files: AgentFile[];
}

const PIN_ID = /^[0-9a-f]{32}$/;

/** Files beyond this are not capture files (the agent's own size limit is far below). */
export const MAX_FILE_SIZE = 2 ** 50;
const NODE_NAME = new RegExp(DNS1123_SUBDOMAIN);

/** The agent answered, but not as the contract says: never streamed, always a 502. */
export class InvalidListingError extends Error {
  constructor(readonly node: string, reason: string) {
    super(`agent of node ${node}: invalid listing: ${reason}`);
    this.name = 'InvalidListingError';
  }
}

/** A Kubernetes node name (a DNS-1123 subdomain), safe as a zip directory. */
export function isNodeName(name: unknown): name is string {
  return typeof name === 'string' && name.length > 0 && name.length <= 253 && NODE_NAME.test(name);
}

export function isCaptureFileName(name: unknown): name is string {
  return typeof name === 'string' && CAPTURE_FILE_NAME.test(name);
}

/** Checks every entry of an agent's listing; throws InvalidListingError on the first bad one. */
export function parseListing(node: string, body: unknown): AgentFile[] {
  if (!Array.isArray(body)) throw new InvalidListingError(node, 'not a list');
  const seen = new Set<string>();
  return body.map((entry: unknown, i): AgentFile => {
    if (typeof entry !== 'object' || entry === null) throw new InvalidListingError(node, `entry ${i} is not an object`);
    const { name, size, modified, identity } = entry as Record<string, unknown>;
    if (!isCaptureFileName(name)) throw new InvalidListingError(node, `entry ${i} has a file name that is not a plain *.pcap name: ${JSON.stringify(name)?.slice(0, 100)}`);
    if (seen.has(name)) throw new InvalidListingError(node, `"${name}" is listed twice`);
    seen.add(name);
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0 || size > MAX_FILE_SIZE) throw new InvalidListingError(node, `"${name}" has an impossible size ${JSON.stringify(size)}`);
    if (typeof modified !== 'string' || Number.isNaN(Date.parse(modified))) throw new InvalidListingError(node, `"${name}" has no valid modification time`);
    if (typeof identity !== 'string' || !FILE_IDENTITY.test(identity)) throw new InvalidListingError(node, `"${name}" has no valid identity: ${JSON.stringify(identity)?.slice(0, 60)}`);
    return { name, size, modified, identity };
  });
}

/** Checks an agent's answer to a pin request: an id the gateway can put in a path, a sane lease, a valid listing. */
export function parsePin(node: string, body: unknown): AgentPin {
  if (typeof body !== 'object' || body === null) throw new InvalidListingError(node, 'the pin is not an object');
  const { id, ttlSeconds, files } = body as Record<string, unknown>;
  if (typeof id !== 'string' || !PIN_ID.test(id)) throw new InvalidListingError(node, `the pin has an invalid id ${JSON.stringify(id)?.slice(0, 60)}`);
  if (typeof ttlSeconds !== 'number' || !(ttlSeconds >= 1)) throw new InvalidListingError(node, `the pin has an invalid lifetime ${JSON.stringify(ttlSeconds)}`);
  return { id, ttlSeconds, files: parseListing(node, files) };
}
