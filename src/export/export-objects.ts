// What an export uploads, built from the capture's pinned files exactly as a download reads
// them (docs/export.md, "Reading the nodes"): `zip` is files.zip's archive (stored, or deflated
// when compression is asked), `pcapng` is files.pcapng's merge (zstd or gzip around it when
// asked), `files` is one object per node file. Each object's packets are counted on the way
// for the manifest; nothing is held but the stream stages' buffers.
import { Readable, Transform } from 'node:stream';
import type { AgentFile } from '../contract/agent-api.js';
import type { CaptureFiles, MissingNode, NodeFiles } from '../gateway/capture-files.js';
import { NodeMerge } from '../gateway/pcapng-merge.js';
import type { PushBody } from '../gateway/push-body.js';
import { streamOf } from '../gateway/push-body.js';
import { storedZipLength } from '../gateway/zip-length.js';
import { deflatedZipStream, StoredZipSender, type ZipSource } from '../gateway/zip-stream.js';
import { encodeBody, type ContentCoding } from '../http/content-encoding.js';
import { earlier, later, PcapTally, type PacketTime } from '../pcap/pcap-tally.js';
import { KUBE_PCAP_VERSION } from '../version.js';
import type { ExportSettings } from './packetcapture-export.js';

/** One node file as the manifest lists it, with what its bytes held (once read). */
export interface FileRecord {
  node: string;
  name: string;
  size: number;
  modified: string;
  /** The object that holds it (a zip, a merged pcapng, or its own). */
  key: string;
  packets?: number;
  first?: PacketTime;
  last?: PacketTime;
}

export interface PlannedObject {
  key: string;
  contentType: string;
  /** The node files whose packets it holds. */
  files: FileRecord[];
  /** Opens its bytes; the files' counts fill in as they pass. */
  open(signal: AbortSignal): Promise<Readable>;
  /** Packets in the object once read, and the time they span (a merged pcapng counts its own; others sum their files'). */
  tally(): { packets?: number; first?: PacketTime; last?: PacketTime };
}

export interface PinnedNodes {
  namespace: string;
  capture: string;
  nodes: NodeFiles[];
  missing: MissingNode[];
}

const SUFFIX: Record<ContentCoding, string> = { zstd: '.zst', gzip: '.gz' };

/** A files export's key for one node file (also what a Continuous export looks for in its status). */
export function fileKey(s: ExportSettings, node: string, file: string): string {
  const coding = codingOf(s);
  return `${s.keyPrefix}${node}/${file}${coding ? SUFFIX[coding] : ''}`;
}

/** The one object of a zip or pcapng export. */
function dataKey(s: ExportSettings): string {
  const coding = codingOf(s);
  return s.format === 'zip' ? `${s.keyPrefix}files.zip` : `${s.keyPrefix}files.pcapng${coding ? SUFFIX[coding] : ''}`;
}

/** An object's content type, by its key (also for objects an earlier attempt recorded). */
export function contentTypeOf(key: string): string {
  if (key.endsWith('.zst')) return 'application/zstd';
  if (key.endsWith('.gz')) return 'application/gzip';
  if (key.endsWith('.zip')) return 'application/zip';
  if (key.endsWith('.pcapng')) return 'application/x-pcapng';
  return 'application/vnd.tcpdump.pcap';
}

export function manifestKey(s: ExportSettings): string {
  return `${s.keyPrefix}manifest.json`;
}

/**
 * Every key this export can write: an interrupted attempt's multipart uploads are aborted
 * only under these, never another export's that shares the prefix.
 */
export function ownsKey(s: ExportSettings, key: string): boolean {
  if (!key.startsWith(s.keyPrefix)) return false;
  const rest = key.slice(s.keyPrefix.length);
  if (rest === 'manifest.json') return true;
  if (s.format !== 'files') return key === dataKey(s);
  const coding = codingOf(s);
  const suffix = coding ? SUFFIX[coding] : '';
  return new RegExp(`^[a-z0-9][-a-z0-9.]*/[A-Za-z0-9][A-Za-z0-9._@-]*\\.pcap${suffix.replace('.', '\\.')}$`).test(rest);
}

function codingOf(s: ExportSettings): ContentCoding | undefined {
  return s.compression === 'none' || s.format === 'zip' ? undefined : s.compression;
}

/** The objects for these pinned files, in upload order (the manifest comes after them all). */
export function planObjects(s: ExportSettings, pinned: PinnedNodes, files: CaptureFiles, only?: (node: string, file: AgentFile) => boolean): PlannedObject[] {
  const { namespace, capture, nodes } = pinned;
  const coding = codingOf(s);
  const opener = (n: NodeFiles, f: AgentFile, record: FileRecord) => async (signal: AbortSignal): Promise<PushBody> => {
    const opened = await files.agents.openPinned(n.endpoint, namespace, capture, n.pin!.id, f, signal);
    return tallied(opened.body, record);
  };
  if (s.format === 'files') {
    const out: PlannedObject[] = [];
    for (const n of nodes) {
      for (const f of n.files) {
        if (only && !only(n.node, f)) continue;
        const record: FileRecord = { node: n.node, name: f.name, size: f.size, modified: f.modified, key: fileKey(s, n.node, f.name) };
        const open = opener(n, f, record);
        out.push({
          key: record.key,
          contentType: contentTypeOf(record.key),
          files: [record],
          open: async (signal) => encoded(streamOf(await open(signal)), coding),
          tally: () => ({ packets: record.packets, first: record.first, last: record.last }),
        });
      }
    }
    return out;
  }
  const records: FileRecord[] = [];
  const key = dataKey(s);
  for (const n of nodes) for (const f of n.files) records.push({ node: n.node, name: f.name, size: f.size, modified: f.modified, key });
  if (s.format === 'zip') {
    const sources: ZipSource[] = [];
    let i = 0;
    for (const n of nodes) {
      for (const f of n.files) {
        const open = opener(n, f, records[i++]!);
        sources.push({ name: `${n.node}/${f.name}`, modified: new Date(f.modified), size: f.size, open: async (signal) => ({ body: await open(signal), length: f.size }) });
      }
    }
    return [{
      key,
      contentType: contentTypeOf(key),
      files: records,
      open: async () => zipBody(sources, s.compression !== 'none'),
      tally: () => sumTally(records),
    }];
  }
  let merge: NodeMerge | undefined;
  return [{
    key,
    contentType: contentTypeOf(key),
    files: records,
    open: async () => {
      const holding = nodes.filter((n) => n.files.some((f) => f.size > 0));
      const opened = await NodeMerge.open(holding.map((n) => ({
        node: n.node,
        open: (signal: AbortSignal) => files.agents.openPinnedPcapng(n.endpoint, namespace, capture, n.pin!.id, signal),
      })), { namespace, capture, application: `kube-pcap ${KUBE_PCAP_VERSION}`, comment: `kube-pcap capture ${namespace}/${capture}: every packet of ${holding.length} node(s), in time order (an export)`, openConcurrency: files.fanOut });
      merge = opened.merge;
      const m = opened.merge;
      async function* body(): AsyncGenerator<Buffer> {
        yield opened.header;
        yield* m.packets();
      }
      const out = Readable.from(body(), { objectMode: false, highWaterMark: 64 * 1024 });
      out.once('close', () => m.close());
      return encoded(out, coding);
    },
    tally: () => (merge ? { packets: merge.packetCount, first: merge.first, last: merge.last } : {}),
  }];
}

/** The files' packets together and the time they span; no count until every file was read. */
export function sumTally(records: FileRecord[]): { packets?: number; first?: PacketTime; last?: PacketTime } {
  let packets = 0;
  let first: PacketTime | undefined;
  let last: PacketTime | undefined;
  for (const r of records) {
    if (r.packets === undefined) return {};
    packets += r.packets;
    first = earlier(first, r.first);
    last = later(last, r.last);
  }
  return { packets, first, last };
}

/** An agent's body whose packets are counted into `record` as they pass (record headers only). */
function tallied(body: PushBody, record: FileRecord): PushBody {
  const tally = new PcapTally();
  return {
    pump: async (onData) => {
      await body.pump((view) => {
        tally.feed(view);
        return onData(view);
      });
      record.packets = tally.packets;
      record.first = tally.first;
      record.last = tally.last;
    },
    resume: () => body.resume(),
    destroy: (err) => body.destroy(err),
  };
}

function encoded(body: Readable, coding: ContentCoding | undefined): Readable {
  return coding ? encodeBody(body, coding, { flushEachChunk: false }) : body;
}

/**
 * files.zip's bytes as a stream: the stored sender writes into it, or the deflated zip is it.
 * The stored sender reuses each chunk once its write is called back (chunk-writer.ts), which
 * a socket does when the bytes are sent but a stream stage does when it has taken them: each
 * chunk is copied as it is taken.
 */
function zipBody(sources: ZipSource[], deflate: boolean): Readable {
  if (deflate) return deflatedZipStream(sources, {});
  const out = new Transform({ highWaterMark: 64 * 1024, transform: (chunk: Buffer, _enc, done) => done(null, Buffer.from(chunk)) });
  const zip = new StoredZipSender(sources, { length: storedZipLength(sources.map((x) => ({ name: x.name, size: x.size ?? 0 }))) });
  zip.send(out).catch((err: Error) => out.destroy(err));
  return out;
}
