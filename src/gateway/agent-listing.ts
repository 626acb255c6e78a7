// What the gateway accepts from an agent before any of it becomes a zip entry or a JSON
// field: an agent is trusted to serve its node's files, not to name paths. A node's agent
// (or whoever took its endpoint) could list `../../x`, and the agents' ServiceAccount can
// write any node's status entry, so node names and file names are both checked here.
import { CAPTURE_FILE_NAME } from '../pcap/file-names.js';
import { DNS1123_SUBDOMAIN } from '../http/params.js';

export interface AgentFile {
  name: string;
  size: number;
  modified: string;
}

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
    const { name, size, modified } = entry as Record<string, unknown>;
    if (!isCaptureFileName(name)) throw new InvalidListingError(node, `entry ${i} has a file name that is not a plain *.pcap name: ${JSON.stringify(name)?.slice(0, 100)}`);
    if (seen.has(name)) throw new InvalidListingError(node, `"${name}" is listed twice`);
    seen.add(name);
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0 || size > MAX_FILE_SIZE) throw new InvalidListingError(node, `"${name}" has an impossible size ${JSON.stringify(size)}`);
    if (typeof modified !== 'string' || Number.isNaN(Date.parse(modified))) throw new InvalidListingError(node, `"${name}" has no valid modification time`);
    return { name, size, modified };
  });
}
