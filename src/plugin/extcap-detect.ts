// Whether a command line is Wireshark's extcap call rather than a user's command: kept apart
// from extcap.ts so that ordinary commands do not load it.
export function isExtcapInvocation(argv: readonly string[]): boolean {
  return argv.some((a) => a.startsWith('--extcap-') || a === '--capture' || a === '--fifo');
}
