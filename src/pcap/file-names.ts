// The names capture files may have: <pod>_<iface>.pcap and <pod>_<iface>-<unixMicros>.pcap.
// One rule for the agent (what it serves) and the gateway (what it accepts from an agent
// and turns into a zip entry): no separators, no dot-dot, no NUL, no tricks.
export const CAPTURE_FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,250}\.pcap$/;
export const CAPTURE_FILE_NAME_PATTERN = CAPTURE_FILE_NAME.source;

/**
 * A file's identity as the agent gives it (src/agent/file-identity.ts): inode, then its birth
 * time, its first record's timestamp, or "e" (no record yet); then, for a file that is or was
 * being written, its generation (the first record's number, src/agent/tcpdump-files.ts). One
 * rule for both sides.
 */
export const FILE_IDENTITY = /^[0-9a-f]{1,16}-(?:b[0-9a-f]{1,20}|r[0-9a-f]{16}|e)(?:-n[0-9a-f]{1,14})?$/;

/** An identity as an HTTP entity tag (strong: the bytes served are exactly the file's). */
export function etagOf(identity: string): string {
  return `"${identity}"`;
}
