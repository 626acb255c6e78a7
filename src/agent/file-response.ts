// One capture file's bytes as an HTTP response, for the file API and pinned files alike:
// `size` bytes (or a Range of them), the file's identity as a strong ETag, and If-Match
// honoured, so that whoever listed a file by identity gets that file or a 412, never
// another file that took its name (docs/downloads.md, "File identities").
import type { FileHandle } from 'node:fs/promises';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { parseRange } from '../http/range.js';
import { HttpError } from '../http/status.js';
import { etagOf } from '../pcap/file-names.js';
import { sendFileRange } from './send-file.js';

export interface ServedFile {
  handle: FileHandle;
  /** Bytes that may be served (a growing file: its last complete record; a pin: what it pinned). */
  size: number;
  modified: Date;
  identity: string;
  /** For log lines. */
  label: string;
}

/** Sends the file and closes its handle, whatever happens. */
export async function sendCaptureFile(request: FastifyRequest, reply: FastifyReply, file: ServedFile): Promise<void> {
  const { handle, size, identity } = file;
  const etag = etagOf(identity);
  try {
    const ifMatch = request.headers['if-match'];
    if (ifMatch !== undefined && !matches(ifMatch, etag)) {
      throw new HttpError(412, 'PreconditionFailed', `${file.label} is now another file (identity ${identity}) than the one asked for (If-Match: ${ifMatch.slice(0, 200)})`, { etag });
    }
    const range = parseRange(request.headers.range, size);
    if (range.kind === 'unsatisfiable') {
      throw new HttpError(416, 'RequestedRangeNotSatisfiable', `range "${request.headers.range}" is outside the file's ${size} bytes`, { 'content-range': `bytes */${size}` });
    }
    const start = range.kind === 'partial' ? range.start : 0;
    const end = range.kind === 'partial' ? range.end : size - 1;
    const headers: Record<string, string> = {
      'content-type': 'application/vnd.tcpdump.pcap',
      'accept-ranges': 'bytes',
      'last-modified': file.modified.toUTCString(),
      'content-length': String(Math.max(0, end - start + 1)),
      etag,
    };
    if (range.kind === 'partial') headers['content-range'] = `bytes ${start}-${end}/${size}`;
    // The bytes go out through reused buffers (see send-file.ts), outside fastify's reply.
    reply.hijack();
    reply.raw.writeHead(range.kind === 'partial' ? 206 : 200, headers);
    try {
      if (end >= start) await sendFileRange(handle, reply.raw, start, end);
      else reply.raw.end();
    } catch (err) {
      request.log.warn({ file: file.label, err: (err as Error).message }, 'file transfer cut short');
      // Headers are out: cutting the connection is the only way to say "incomplete".
      reply.raw.destroy();
    }
  } finally {
    await handle.close();
  }
}

/** RFC 9110 §13.1.1: "*" or a list of entity tags, compared strongly. */
function matches(header: string, etag: string): boolean {
  if (header.trim() === '*') return true;
  return header.split(',').map((t) => t.trim()).some((t) => t === etag);
}
