// Content-Encoding for the bodies whose length is not known ahead (files.pcapng and the live
// stream): zstd or gzip when the caller's Accept-Encoding asks for it (RFC 9110 §12.5.3),
// identity otherwise. Packet captures compress to a third or less, and over a VPN or a slow
// Ingress link the bytes, not the gateway's CPU, set the time (docs/downloads.md, "Compression").
import { pipeline, Transform, type Readable } from 'node:stream';
import { chunkTap } from '../flow/chunk-tap.js';
import { constants, createGzip, createZstdCompress, type Gzip, type ZstdCompress } from 'node:zlib';

export type ContentCoding = 'zstd' | 'gzip';

/** What this gateway offers, best first: zstd costs about a third of gzip's CPU for a smaller body. */
export const OFFERED_CODINGS: readonly ContentCoding[] = ['zstd', 'gzip'];

/**
 * The coding to answer with, or undefined for identity. The highest q wins; among equal q the
 * gateway's order; `*` stands for any coding not named; q=0 refuses. A header that cannot be
 * parsed is treated as absent (identity is always acceptable unless refused, and a refused
 * identity with nothing else acceptable still gets identity: a body the caller can report on
 * is better than a 406 it cannot).
 */
export function negotiateCoding(header: string | string[] | undefined): ContentCoding | undefined {
  const text = Array.isArray(header) ? header.join(',') : header;
  if (text === undefined || text.trim() === '') return undefined;
  const q = new Map<string, number>();
  for (const part of text.split(',')) {
    const [rawName, ...params] = part.split(';');
    const name = rawName!.trim().toLowerCase();
    if (name === '') continue;
    let weight = 1;
    let malformed = false;
    for (const p of params) {
      if (!/^\s*q\s*=/i.test(p)) continue;
      const m = /^\s*q\s*=\s*(0(?:\.\d{0,3})?|1(?:\.0{0,3})?)\s*$/i.exec(p);
      if (m) weight = Number(m[1]);
      else malformed = true;
    }
    // A weight that is not a qvalue: the element is left out, neither accepted nor refused.
    if (malformed) continue;
    // A coding named twice: the first mention counts, as most servers do.
    if (!q.has(name)) q.set(name, weight);
  }
  const star = q.get('*');
  let best: ContentCoding | undefined;
  let bestQ = 0;
  for (const coding of OFFERED_CODINGS) {
    const weight = q.get(coding) ?? (coding === 'gzip' ? q.get('x-gzip') : undefined) ?? star ?? 0;
    if (weight > bestQ) {
      best = coding;
      bestQ = weight;
    }
  }
  // identity named (or `*`) with a higher q than every offered coding: honour it. Unnamed, it
  // is only the fallback, never preferred to a coding the caller listed.
  const identity = q.get('identity') ?? star;
  if (best !== undefined && identity !== undefined && identity > bestQ) return undefined;
  return best;
}

export interface EncodeOptions {
  /**
   * Flush after every chunk of the source, for a live stream: a packet must reach the viewer
   * now, not when the compressor's window fills. Costs some ratio; a download does not flush.
   */
  flushEachChunk: boolean;
  /** Bytes after encoding, as they leave (the savings an operator sees beside the raw bytes). */
  onEncodedBytes?: (n: number) => void;
}

/**
 * zstd level 1: on capture files within 2 % of level 3's ratio (0.356 against 0.351 on
 * bench:download's DNS and HTTP) for about 1.5x the speed, where the gateway's core, not the
 * link, would otherwise set the pace. gzip at zlib's default level 6, for clients without zstd.
 */
function compressor(coding: ContentCoding, { flushEachChunk }: EncodeOptions): Gzip | ZstdCompress {
  if (coding === 'gzip') return createGzip({ chunkSize: OUTPUT_CHUNK_BYTES, ...(flushEachChunk ? { flush: constants.Z_SYNC_FLUSH } : {}) });
  return createZstdCompress({
    chunkSize: OUTPUT_CHUNK_BYTES,
    ...(flushEachChunk ? { flush: constants.ZSTD_e_flush } : {}),
    params: {
      [constants.ZSTD_c_compressionLevel]: 1,
      // A checksum lets the caller tell a cut body from a whole one (zstd -t, or any decoder).
      [constants.ZSTD_c_checksumFlag]: 1,
    },
  });
}

const OUTPUT_CHUNK_BYTES = 64 * 1024;
/**
 * A download's chunks are gathered to this size before the encoder: each write into zlib
 * crosses into C++ and back, and the merge's chunks are small (16 KiB or a packet batch);
 * gathered, the encoder costs a quarter less CPU. A live stream is never gathered.
 */
const GATHERED_BYTES = 128 * 1024;

function gather(): Transform {
  let parts: Buffer[] = [];
  let length = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      parts.push(chunk);
      length += chunk.length;
      if (length < GATHERED_BYTES) return cb();
      const whole = parts.length === 1 ? parts[0]! : Buffer.concat(parts, length);
      parts = [];
      length = 0;
      cb(null, whole);
    },
    flush(cb) {
      cb(null, length > 0 ? Buffer.concat(parts, length) : undefined);
    },
  });
}

/**
 * The source, encoded. A failure of the source destroys the encoded stream (the response is
 * cut, as an identity body's would be); the encoded stream closed early (the caller left)
 * destroys the source, so whatever feeds it (the nodes' streams) is closed at once.
 */
export function encodeBody(source: Readable, coding: ContentCoding, opts: EncodeOptions): Readable {
  const stages: (Readable | Transform)[] = [source];
  if (!opts.flushEachChunk) stages.push(gather());
  stages.push(compressor(coding, opts));
  const count = opts.onEncodedBytes;
  if (count !== undefined) stages.push(chunkTap((chunk) => count(chunk.length)));
  pipeline(stages, () => undefined);
  return stages.at(-1) as Readable;
}

/** The headers that say how the body is encoded; Vary on every negotiated response, encoded or not. */
export function encodingHeaders(coding: ContentCoding | undefined): Record<string, string> {
  return coding === undefined ? { vary: 'accept-encoding' } : { vary: 'accept-encoding', 'content-encoding': coding };
}
