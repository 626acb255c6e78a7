// The names capture files may have: <pod>_<iface>.pcap and <pod>_<iface>-<unixMicros>.pcap.
// One rule for the agent (what it serves) and the gateway (what it accepts from an agent
// and turns into a zip entry): no separators, no dot-dot, no NUL, no tricks.
export const CAPTURE_FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,250}\.pcap$/;
export const CAPTURE_FILE_NAME_PATTERN = CAPTURE_FILE_NAME.source;
