// kubectl pcap download: the capture's files as files.zip, or merged as one pcapng, by the
// extension of -w (as tcpdump and tshark take -w). The file is written under a temporary
// name in the same directory and renamed when every byte has arrived and is on disk, so an
// interrupted download never leaves a file that looks complete.
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { gatewayFailure } from '../answers.js';
import { formatBytes } from '../durations.js';
import type { CommandSpec } from '../invocation.js';
import { chunkTap } from '../../flow/chunk-tap.js';
import { ACCEPT_ENCODING, compressChoice, compressionFor, decoderFor, linkKey, recordLinkSpeed } from '../compression.js';
import { PluginError, PluginUsageError } from '../plugin-error.js';
import { ProgressBar } from '../progress.js';

type Format = 'zip' | 'pcapng';

/** The format -w asks for: its extension, else --format; "-" is pcapng unless told (a pipe into tshark). */
export function downloadFormat(out: string | undefined, format: string | undefined): Format {
  if (format !== undefined && format !== 'zip' && format !== 'pcapng') throw new PluginUsageError(`--format must be zip or pcapng, not "${format}"`);
  if (out === undefined || out === '-') return (format as Format | undefined) ?? (out === '-' ? 'pcapng' : 'zip');
  const ext = /\.(zip|pcapng)$/i.exec(out)?.[1]?.toLowerCase() as Format | undefined;
  if (ext && format && ext !== format) throw new PluginUsageError(`-w ${out} says ${ext} but --format says ${format}`);
  if (!ext && !format) throw new PluginUsageError(`-w ${out}: end the name in .zip (every node's pcap files) or .pcapng (one merged file), or give --format`);
  return ext ?? (format as Format);
}

export const downloadCommand: CommandSpec = {
  usage: 'download NAME [-w FILE.zip | -w FILE.pcapng | -w -] [--partial] [--compress auto|always|never] [-q]',
  short: 'Download the capture\'s packets: every node\'s files as a zip, or one merged pcapng.',
  long: [
    'Download the capture\'s packets through the gateway, as they are when the download starts (files are pinned on their nodes).',
    '  -w FILE.zip     every node\'s pcap files, entries <node>/<file> (default: NAME.zip)',
    '  -w FILE.pcapng  one pcapng in time order; interfaces name node, namespace and pod',
    '  -w -            to stdout (pcapng unless --format zip), e.g. into tshark -r -',
    'Compression (--compress auto): a pcapng comes zstd-compressed unless the last download from this',
    'gateway ran faster than 100 MiB/s; a zip is deflated only when it ran slower than 25 MiB/s (stored',
    'keeps the exact length). The speed is remembered in ~/.cache/kube-pcap/links.json.',
    'Needs "get" on packetcaptures/files in the namespace (rbac-examples/files-role.yaml).',
  ].join('\n'),
  examples: [
    'kubectl pcap download dns -n storefront',
    'kubectl pcap download dns -n storefront -w dns.pcapng && wireshark dns.pcapng',
    'kubectl pcap download dns -n storefront -w - | tshark -r - -N n',
  ],
  takes: 'name',
  flags: {
    write: { type: 'string', short: 'w', metavar: 'FILE', help: 'Where to write: FILE.zip, FILE.pcapng or - (stdout). Default NAME.zip.' },
    format: { type: 'string', metavar: 'zip|pcapng', help: 'The format when -w does not say it.' },
    partial: { type: 'boolean', help: 'Leave out nodes whose agents cannot be reached (named in MISSING.txt or the pcapng comment) instead of failing.' },
    compress: { type: 'string', metavar: 'auto|always|never', help: 'Ask for compressed bytes: auto (by the link\'s last measured speed), always, never.' },
    quiet: { type: 'boolean', short: 'q', help: 'No progress bar.' },
  },
  async run(inv) {
    const out = inv.string('write');
    const format = downloadFormat(out, inv.string('format'));
    const choice = compressChoice(inv.string('compress'));
    const { ctx, target } = await inv.captureTarget();
    const path = out ?? `${target.name}.${format}`;
    const gateway = await inv.gateway();
    const link = linkKey(ctx.contextName, gateway.via);
    const compress = await compressionFor(choice, format, link);
    const query = [...(inv.boolean('partial') ? ['partial=true'] : []), ...(compress && format === 'zip' ? ['compression=deflate'] : [])];
    const started = Date.now();
    const res = await gateway.request('GET', `/download/${encodeURIComponent(target.namespace)}/${encodeURIComponent(target.name)}/files.${format}${query.length > 0 ? `?${query.join('&')}` : ''}`, inv.signal,
      compress && format === 'pcapng' ? { 'accept-encoding': ACCEPT_ENCODING } : undefined);
    if (res.status !== 200) throw await gatewayFailure(ctx, res, 'get', target);
    const lengthHeader = res.headers['content-length'];
    const total = typeof lengthHeader === 'string' ? Number(lengthHeader) : undefined;
    const decoder = decoderFor(res.headers['content-encoding']);
    const tty = inv.stderr.isTTY === true && !inv.boolean('quiet');
    // The bar counts what arrives on the wire: that is what the length (when known) counts too.
    const progress = tty ? new ProgressBar(inv.stderr, path === '-' ? `files.${format}` : basename(path), total) : undefined;
    let received = 0;
    let written = 0;
    const onWire = chunkTap((chunk) => {
      received += chunk.length;
      progress?.add(chunk.length);
    });
    const stages: Transform[] = [onWire, ...(decoder ? [decoder] : []), chunkTap((chunk) => (written += chunk.length))];
    const temp = path === '-' ? undefined : join(dirname(path), `.${basename(path)}.part-${randomBytes(4).toString('hex')}`);
    try {
      if (temp) {
        const file = createWriteStream(temp, { flags: 'wx', mode: 0o600, flush: true });
        await pipeline([res.body, ...stages, file], { signal: inv.signal });
      } else {
        await pipeline([res.body, ...stages, inv.stdout], { signal: inv.signal, end: false });
      }
      if (total !== undefined && received !== total) throw new Error(`the gateway sent ${received} of ${total} bytes`);
      if (temp) await rename(temp, path);
    } catch (err) {
      progress?.clear();
      if (temp) await unlink(temp).catch(() => undefined);
      if (inv.signal.aborted) {
        inv.stderr.write(temp ? `interrupted: nothing written to ${path}\n` : 'interrupted\n');
        return 130;
      }
      throw new PluginError(`the download of ${target.name} was cut after ${formatBytes(received)}${total !== undefined ? ` of ${formatBytes(total)}` : ''} (${(err as Error).message})${temp ? `; nothing was written to ${path}` : ''}`);
    }
    await recordLinkSpeed(link, received, Date.now() - started);
    if (progress) {
      progress.finish();
      if (temp) inv.stderr.write(`Saved ${path} (${formatBytes(written)}${decoder ? `, ${formatBytes(received)} on the wire` : ''})\n`);
    }
    return 0;
  },
};
