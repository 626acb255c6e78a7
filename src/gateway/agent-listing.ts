// What the gateway accepts from an agent before any of it becomes a zip entry or a JSON
// field: an agent is trusted to serve its node's files, not to name paths. A node's agent
// (or whoever took its endpoint) could list `../../x`, and the agents' ServiceAccount can
// write any node's status entry, so node names and file names are both checked here.
import { isIP } from 'node:net';
import { CAPTURE_FILE_NAME, FILE_IDENTITY } from '../pcap/file-names.js';
import { DNS1123_LABEL, DNS1123_SUBDOMAIN } from '../http/params.js';
import { AGENT_ANSWER_LIMITS, MAX_FILE_SIZE, PIN_ID_PATTERN, type AgentFile, type FileSource, type PinAnswer } from '../contract/agent-api.js';

/** A download's pin on one node as the gateway keeps it: its files, held as listed until released. */
export type AgentPin = Pick<PinAnswer, 'id' | 'ttlSeconds' | 'files'>;

const PIN_ID = new RegExp(PIN_ID_PATTERN);
const NODE_NAME = new RegExp(DNS1123_SUBDOMAIN);
const LABEL = new RegExp(DNS1123_LABEL);
/** A network interface name as Linux allows it (at most 15 bytes, no slash, no space). */
const IFACE = /^[A-Za-z0-9_.:@-]{1,15}$/;
const UID = /^[0-9a-f-]{1,64}$/;

/**
 * Text an agent sent, as it may reach a user (a Status message, MISSING.txt, a pcapng
 * comment Wireshark shows): one line of at most `maxChars`, without C0 and C1 controls, DEL,
 * line separators, or the bidirectional overrides that make text read otherwise than it is.
 */
export function agentText(text: string, maxChars: number): string {
  // eslint-disable-next-line no-control-regex -- controls are exactly what is removed
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]+/g, ' ').slice(0, maxChars);
}

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

/** A network interface name as Linux allows it. */
export function isInterfaceName(name: string): boolean {
  return IFACE.test(name);
}

/** A Kubernetes object uid. */
export function isUid(uid: string): boolean {
  return UID.test(uid);
}

export function isCaptureFileName(name: unknown): name is string {
  return typeof name === 'string' && CAPTURE_FILE_NAME.test(name);
}

/** Checks every entry of an agent's listing; throws InvalidListingError on the first bad one. */
export function parseListing(node: string, body: unknown): AgentFile[] {
  if (!Array.isArray(body)) throw new InvalidListingError(node, 'not a list');
  if (body.length > AGENT_ANSWER_LIMITS.listingEntries) throw new InvalidListingError(node, `${body.length} files, more than the ${AGENT_ANSWER_LIMITS.listingEntries} a node may list`);
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
    const source = (entry as Record<string, unknown>).source;
    if (source === undefined) return { name, size, modified, identity };
    return { name, size, modified, identity, source: parseSource(node, name, source) };
  });
}

/**
 * A file's source, every field checked: these become interface names and descriptions and
 * name-resolution entries in a pcapng that Wireshark displays, so nothing but names, IPs
 * and small numbers gets through.
 */
function parseSource(node: string, file: string, v: unknown): FileSource {
  const bad = (what: string): never => {
    throw new InvalidListingError(node, `"${file}" has an invalid source: ${what}`);
  };
  if (typeof v !== 'object' || v === null) return bad('not an object');
  const s = v as Record<string, unknown>;
  const int = (x: unknown, min: number, max: number): x is number => typeof x === 'number' && Number.isInteger(x) && x >= min && x <= max;
  if (s.node !== node) bad(`it names node ${JSON.stringify(s.node)?.slice(0, 80)}`);
  if (typeof s.namespace !== 'string' || s.namespace.length > 63 || !LABEL.test(s.namespace)) bad('namespace');
  if (!isNodeName(s.capture)) bad('capture');
  if (!isNodeName(s.pod)) bad('pod');
  if (typeof s.podUID !== 'string' || !UID.test(s.podUID)) bad('podUID');
  if (!Array.isArray(s.podIPs) || s.podIPs.length > 8 || !s.podIPs.every((ip) => typeof ip === 'string' && isIP(ip) !== 0)) bad('podIPs');
  if (typeof s.iface !== 'string' || !IFACE.test(s.iface)) bad('iface');
  if (!int(s.linkType, 0, 0xffff)) bad('linkType');
  if (!int(s.snapLen, 1, 0x7fffffff)) bad('snapLen');
  if (s.tsresol !== 6 && s.tsresol !== 9) bad('tsresol');
  return {
    node, namespace: s.namespace as string, capture: s.capture as string, pod: s.pod as string, podUID: s.podUID as string,
    podIPs: s.podIPs as string[], iface: s.iface as string, linkType: s.linkType as number, snapLen: s.snapLen as number, tsresol: s.tsresol as 6 | 9,
  };
}

/** Checks an agent's answer to a pin request: an id the gateway can put in a path, a sane lease, a valid listing. */
export function parsePin(node: string, body: unknown): AgentPin {
  if (typeof body !== 'object' || body === null) throw new InvalidListingError(node, 'the pin is not an object');
  const { id, ttlSeconds, files } = body as Record<string, unknown>;
  if (typeof id !== 'string' || !PIN_ID.test(id)) throw new InvalidListingError(node, `the pin has an invalid id ${JSON.stringify(id)?.slice(0, 60)}`);
  if (typeof ttlSeconds !== 'number' || !(ttlSeconds >= 1)) throw new InvalidListingError(node, `the pin has an invalid lifetime ${JSON.stringify(ttlSeconds)}`);
  return { id, ttlSeconds, files: parseListing(node, files) };
}
