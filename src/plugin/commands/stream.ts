// kubectl pcap stream: the capture's packets live, as one pcapng, into Wireshark, tshark, a
// file or stdout. It ends when the capture finishes or is deleted (exit 0), when the viewer
// is closed or Ctrl-C is pressed (exit 0, as tcpdump does), or when the stream is cut
// (exit 1).
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { gatewayFailure } from '../answers.js';
import { parseTime } from '../durations.js';
import type { CommandSpec } from '../invocation.js';
import { ACCEPT_ENCODING, compressChoice, compressionFor, decoderFor, linkKey } from '../compression.js';
import { PluginError, PluginUsageError } from '../plugin-error.js';

interface Sink {
  stream: Writable;
  /** The viewer, whose exit ends the stream. */
  viewer?: ChildProcess;
  end: boolean;
}

function viewerSink(command: string, args: string[]): Sink {
  const viewer = spawn(command, args, { stdio: ['pipe', 'inherit', 'inherit'] });
  // A viewer that closes its end is the user leaving: not an error.
  viewer.stdin!.on('error', () => undefined);
  return { stream: viewer.stdin!, viewer, end: true };
}

export const streamCommand: CommandSpec = {
  usage: 'stream NAME [--wireshark | --tshark | -w FILE | -w -] [--since TIME] [--compress auto|always|never]',
  short: 'Stream the capture\'s packets live (pcapng) into Wireshark, tshark, a file or stdout.',
  long: [
    'Stream the capture\'s packets as they are captured, from every node, as one pcapng in time order',
    '(about 1.5 s behind). Pods that start matching appear as new interfaces named <node>/<namespace>/<pod>/<iface>.',
    'Ends when the capture finishes or is deleted, or on Ctrl-C. Needs "get" on packetcaptures/files.',
  ].join('\n'),
  examples: [
    'kubectl pcap stream dns -n storefront --wireshark',
    'kubectl pcap stream dns -n storefront --tshark',
    'kubectl pcap stream dns -n storefront -w - | tshark -r - -Y dns',
    'kubectl pcap stream dns -n storefront --since 2026-11-28T10:00:00Z -w dns-live.pcapng',
  ],
  takes: 'name',
  flags: {
    wireshark: { type: 'boolean', help: 'Open Wireshark on the stream (wireshark -k -i -).' },
    tshark: { type: 'boolean', help: 'Print the packets with tshark (tshark -l -N n -i -).' },
    write: { type: 'string', short: 'w', metavar: 'FILE', help: 'Write the pcapng to FILE, or - for stdout.' },
    since: { type: 'string', metavar: 'TIME', help: 'Start with what is on disk from this RFC 3339 time, then live.' },
    compress: { type: 'string', metavar: 'auto|always|never', help: 'Ask for a zstd stream: auto (unless the last download from this gateway ran faster than 100 MiB/s), always, never.' },
  },
  async run(inv) {
    const chosen = [inv.boolean('wireshark'), inv.boolean('tshark'), inv.string('write') !== undefined].filter(Boolean).length;
    if (chosen > 1) throw new PluginUsageError('give one of --wireshark, --tshark and -w');
    if (chosen === 0 && inv.stdout.isTTY) throw new PluginUsageError('stdout is a terminal: give --wireshark, --tshark, -w FILE, or pipe it (-w -)');
    const since = inv.string('since');
    if (since !== undefined) parseTime('--since', since);
    const choice = compressChoice(inv.string('compress'));
    const { ctx, target } = await inv.captureTarget();
    const gateway = await inv.gateway();
    const compress = await compressionFor(choice, 'stream', linkKey(ctx.contextName, gateway.via));
    const request = new AbortController();
    const abort = (): void => request.abort();
    inv.signal.addEventListener('abort', abort, { once: true });
    const res = await gateway.request('GET', `/stream/${encodeURIComponent(target.namespace)}/${encodeURIComponent(target.name)}${since ? `?since=${encodeURIComponent(since)}` : ''}`, request.signal,
      compress ? { 'accept-encoding': ACCEPT_ENCODING } : undefined);
    if (res.status !== 200) throw await gatewayFailure(ctx, res, 'get', target);
    const decoder = decoderFor(res.headers['content-encoding']);
    const out = inv.string('write');
    const sink: Sink = inv.boolean('wireshark')
      ? viewerSink(process.env.WIRESHARK ?? 'wireshark', ['-k', '-i', '-'])
      : inv.boolean('tshark')
        ? viewerSink(process.env.TSHARK ?? 'tshark', ['-l', '-N', 'n', '-i', '-'])
        : out !== undefined && out !== '-'
          ? { stream: createWriteStream(out, { mode: 0o600 }), end: true }
          : { stream: inv.stdout, end: false };
    let viewerGone = false;
    let viewerError: Error | undefined;
    sink.viewer?.once('error', (err: NodeJS.ErrnoException) => {
      viewerError = err.code === 'ENOENT' ? new PluginError(`${sink.viewer!.spawnfile} was not found on PATH`) : err;
      abort();
    });
    sink.viewer?.once('exit', () => {
      viewerGone = true;
      abort();
    });
    const stdoutGone = (err: NodeJS.ErrnoException): void => {
      if (err.code === 'EPIPE') {
        viewerGone = true;
        abort();
      }
    };
    if (!sink.end) inv.stdout.on('error', stdoutGone);
    try {
      await pipeline([res.body, ...(decoder ? [decoder] : []), sink.stream], { signal: request.signal, end: sink.end });
    } catch (err) {
      if (viewerError) throw viewerError;
      if (!(request.signal.aborted && (viewerGone || inv.signal.aborted))) {
        throw new PluginError(`the stream of ${target.name} was cut: ${(err as Error).message}`);
      }
    } finally {
      inv.signal.removeEventListener('abort', abort);
      inv.stdout.off('error', stdoutGone);
    }
    // The capture ended: let the viewer show what it has; wait for it like any command would.
    if (sink.viewer && sink.viewer.exitCode === null && !inv.signal.aborted) await new Promise((r) => sink.viewer!.once('exit', r));
    return 0;
  },
};
