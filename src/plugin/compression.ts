// Whether kubectl pcap asks the gateway for compressed bytes, and the decoding of what comes
// back (docs/plugin.md, "Compression"). Over a slow link (a VPN, a port-forward through a far
// API server) bytes set the time and a capture compresses to a third; over a fast one the
// gateway's CPU would, and a stored zip keeps its exact length. So `auto` remembers how fast
// each gateway's link was on the last download and decides from that:
//   - pcapng and the live stream (no length to lose): compressed unless the link was fast;
//   - files.zip (stored: exact length, today's speed): deflated only when the link was slow.
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Transform } from 'node:stream';
import { createGunzip, createZstdDecompress } from 'node:zlib';
import { PluginError, PluginUsageError } from './plugin-error.js';

export type CompressChoice = 'auto' | 'always' | 'never';

export function compressChoice(flag: string | undefined): CompressChoice {
  const v = flag ?? 'auto';
  if (v !== 'auto' && v !== 'always' && v !== 'never') throw new PluginUsageError(`--compress must be auto, always or never, not "${v}"`);
  return v;
}

/**
 * Where compressing stops paying (bench:download, 2-core machine): a gateway core zstd-encodes
 * about 130 MiB/s of capture to 0.37 of its size, but deflates a zip's entries at only about
 * 35 MiB/s. So a pcapng is compressed on links slower than 100 MiB/s (800 Mbit/s), a zip
 * deflated only on links slower than 25 MiB/s (200 Mbit/s).
 */
export const ZSTD_BELOW_BYTES_PER_SECOND = 100 * 1024 * 1024;
export const DEFLATE_BELOW_BYTES_PER_SECOND = 25 * 1024 * 1024;
/** A download shorter than this says little about the link (TLS and port-forward setup dominate). */
const MIN_MEASURED_BYTES = 4 * 1024 * 1024;
const MIN_MEASURED_MS = 500;
/** A measurement older than this is forgotten: people move between networks. */
const REMEMBERED_MS = 7 * 24 * 3600 * 1000;

interface LinkRecord { bytesPerSecond: number; at: string }

function linksFile(): string {
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'kube-pcap', 'links.json');
}

async function readLinks(): Promise<Record<string, LinkRecord>> {
  try {
    const parsed = JSON.parse(await readFile(linksFile(), 'utf8')) as unknown;
    return parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? parsed as Record<string, LinkRecord> : {};
  } catch {
    return {}; // none yet, or unreadable: nothing is known
  }
}

/** The last measured speed of the link to this gateway, if recent. */
export async function knownLinkSpeed(key: string): Promise<number | undefined> {
  const r = (await readLinks())[key];
  if (!r || typeof r.bytesPerSecond !== 'number' || !(Date.now() - Date.parse(r.at) < REMEMBERED_MS)) return undefined;
  return r.bytesPerSecond;
}

/** Remembers a download's speed on the wire; a failure to write is not the user's problem. */
export async function recordLinkSpeed(key: string, wireBytes: number, ms: number): Promise<void> {
  if (wireBytes < MIN_MEASURED_BYTES || ms < MIN_MEASURED_MS) return;
  try {
    const links = await readLinks();
    links[key] = { bytesPerSecond: Math.round(wireBytes / (ms / 1000)), at: new Date().toISOString() };
    const file = linksFile();
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    const temp = `${file}.${process.pid}`;
    await writeFile(temp, `${JSON.stringify(links, null, 2)}\n`, { mode: 0o600 });
    await rename(temp, file);
  } catch {
    // a read-only home: the next download decides without it
  }
}

/** Whether to ask for compression, for a body of this kind over a link of this known speed. */
export function wantsCompression(choice: CompressChoice, body: 'zip' | 'pcapng' | 'stream', linkBytesPerSecond: number | undefined): boolean {
  if (choice !== 'auto') return choice === 'always';
  if (body === 'zip') return linkBytesPerSecond !== undefined && linkBytesPerSecond < DEFLATE_BELOW_BYTES_PER_SECOND;
  return linkBytesPerSecond === undefined || linkBytesPerSecond < ZSTD_BELOW_BYTES_PER_SECOND;
}

/** The key a gateway link's speed is remembered under: the kube context and how the gateway was reached. */
export function linkKey(contextName: string, via: string): string {
  return `${contextName} ${via}`;
}

/** Whether to ask for compression on this link; `auto` reads the link's remembered speed. */
export async function compressionFor(choice: CompressChoice, body: 'zip' | 'pcapng' | 'stream', link: string): Promise<boolean> {
  return wantsCompression(choice, body, choice === 'auto' ? await knownLinkSpeed(link) : undefined);
}

/** The Accept-Encoding kubectl pcap sends when it wants compression: zstd first, gzip for an older gateway or proxy. */
export const ACCEPT_ENCODING = 'zstd, gzip;q=0.8';

/** The decoder for a response's Content-Encoding; undefined for identity. */
export function decoderFor(contentEncoding: string | string[] | undefined): Transform | undefined {
  const coding = (Array.isArray(contentEncoding) ? contentEncoding.join(',') : contentEncoding ?? '').trim().toLowerCase();
  if (coding === '' || coding === 'identity') return undefined;
  if (coding === 'zstd') return createZstdDecompress();
  if (coding === 'gzip' || coding === 'x-gzip') return createGunzip();
  throw new PluginError(`the gateway answered with Content-Encoding "${coding}", which kubectl pcap cannot decode (is a proxy rewriting it?); retry with --compress never`);
}
