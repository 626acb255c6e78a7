// A node's live stream (src/agent/live-follow.ts) following files as the agent keeps them
// (src/agent/tcpdump-files.ts, with the sources its workers record): from "now" or
// from ?since, across rotation and pruning, a pod interface that starts later announced
// before its first packet, and a paused reader that the writer never waits for, told exactly
// how many packets it skipped once it fell behind what is on disk.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import t from 'tap';
import { liveNodePcapng } from '../../src/agent/live-follow.js';
import { removeSource, writeSource } from '../../src/agent/file-source.js';
import { writeSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { TcpdumpFiles, type Numbering } from '../../src/agent/tcpdump-files.js';
import { encodeGlobalHeader } from '../../src/pcap/format.js';
import { PacketEncoder, WATERMARK } from '../../src/pcap/pcapng.js';
import { BlockType, parseInterfaceBlock, parseNameBlock, PcapngBlockReader } from '../../src/pcap/pcapng-reader.js';
import type { TapTest } from '../harness/tap.js';
import { dnsQueryFrame, pcapRecord } from '../harness/pcap-fixtures.js';
import { waitFor } from '../harness/wait.js';

const BASE_MICROS = 1_700_000_000_000_000;
const HEADER = encodeGlobalHeader(65535);

interface Pod { name: string; ip: string; uid: string }
const web: Pod = { name: 'web-0', ip: '192.0.2.10', uid: '00000000-0000-4000-8000-000000000001' };
const db: Pod = { name: 'db-0', ip: '192.0.2.11', uid: '00000000-0000-4000-8000-000000000002' };

/**
 * One pod interface's files as a worker keeps them: the agent's own TcpdumpFiles, with the
 * sources its workers record. The test writes the records into the file's descriptor as
 * tcpdump writes its standard output (a test double for tcpdump, named so: the real one
 * rotates in the agent and capture tests with real traffic), and looks at the file as the
 * worker does after each batch, which rotates it by copy once it is past the size.
 */
function writer(dir: string, pod: Pod, policy: { maxSizeBytes: number; maxFiles: number }): { file: TcpdumpFiles; write(ids: number[]): Promise<void> } {
  let fd: number | undefined;
  const record = (ino: bigint, birthNs: bigint, n: Numbering): Promise<void> =>
    writeSource(dir, ino, birthNs, { node: 'node-a', namespace: 'shop', capture: 'cap', pod: pod.name, podUID: pod.uid, podIPs: [pod.ip], iface: 'eth0', linkType: 1, snapLen: 65535, tsresol: 6, ...n });
  const file = new TcpdumpFiles(dir, `${pod.name}_eth0`, { ...policy, rotationSeconds: 3600 }, {
    started: (ino, birthNs, _h, n) => record(ino, birthNs, n),
    copied: record,
    generation: record,
    removed: (ino) => removeSource(dir, ino),
  });
  return {
    file,
    // Record i of a pod: its DNS id is i, its timestamp BASE + i ms.
    write: async (ids) => {
      if (fd === undefined) {
        await file.recover();
        fd = await file.create();
        writeSync(fd, HEADER);
      }
      for (const i of ids) writeSync(fd, pcapRecord(dnsQueryFrame(pod.ip, '192.0.2.53', 40000, i, `q${i}.example`), BASE_MICROS + i * 1000));
      // Nothing writes meanwhile: "while tcpdump is stopped" is now.
      await file.tick(async (op) => {
        await op();
        return true;
      });
      t.ok((await stat(file.currentPath)).size >= HEADER.length);
    },
  };
}

interface Seen {
  /** Packets by interface name: DNS ids in the order they came. */
  packets: Map<string, number[]>;
  /** Block kinds in order ("IDB <name>", "EPB <name>", "NRB <names>", "ISB <comment>|drops=<n>", "WM"). */
  order: string[];
  watermarks: number[];
  skipNotes: number[];
  /** "<interface name>=<isb_ifdrop>" of each statistics block. */
  drops: string[];
}

/** Reads a node's live stream as it comes; `pause()` stops pulling (the generator waits at its yield). */
function follow(t: TapTest, dir: string, writers: TcpdumpFiles[], o: { sinceMicros?: number; maxHeldPruned?: number } = {}): { seen: Seen; pause(): void; resume(): void; stop(): Promise<void> } {
  const abort = new AbortController();
  t.teardown(() => abort.abort());
  const gen = liveNodePcapng({
    node: 'node-a', namespace: 'shop', capture: 'cap', application: 'kube-pcap test',
    directory: async () => dir,
    isWriting: (_d, ino) => writers.some((w) => w.isCurrent(ino)),
    committedLength: async (_d, ino) => await writers.find((w) => w.isCurrent(ino))?.committedLength(ino),
    generationOf: (_d, ino) => writers.find((w) => w.isCurrent(ino))?.generationOf(ino),
    kernelDrops: () => new Map([['web-0_eth0', 7]]),
    signal: abort.signal, encoder: new PacketEncoder(4096), tickMs: 10, statsIntervalMs: 30, watermarkLagMs: 0, ...o,
  });
  let paused = false;
  let wake: (() => void) | undefined;
  const chunks = (async function* (): AsyncGenerator<Buffer> {
    for await (const c of gen) {
      while (paused) await new Promise<void>((r) => (wake = r));
      yield c;
    }
  })();
  const seen: Seen = { packets: new Map(), order: [], watermarks: [], skipNotes: [], drops: [] };
  const names: string[] = [];
  const reading = (async () => {
    const r = new PcapngBlockReader(Readable.from(chunks), 'live stream');
    while (await r.next()) {
      const b = r.block();
      if (r.type === BlockType.IDB) {
        names.push(parseInterfaceBlock(b, 'x').name);
        seen.order.push(`IDB ${names.at(-1)}`);
      } else if (r.type === BlockType.EPB) {
        const name = names[b.readUInt32LE(8)]!;
        seen.order.push(`EPB ${name}`);
        seen.packets.set(name, [...(seen.packets.get(name) ?? []), b.readUInt16BE(28 + 14 + 20 + 8)]);
      } else if (r.type === BlockType.NRB) {
        seen.order.push(`NRB ${parseNameBlock(b, 'x').flatMap((e) => e.names).join(',')}`);
      } else if (r.type === BlockType.ISB) {
        const text = b.toString('latin1');
        const m = /(\d+) packets skipped \(viewer too slow\)/.exec(text);
        if (m) seen.skipNotes.push(Number(m[1]));
        // isb_ifdrop (option 5): 8 bytes.
        for (let off = 20; off + 4 <= b.length - 4;) {
          const code = b.readUInt16LE(off);
          const len = b.readUInt16LE(off + 2);
          if (code === 0) break;
          if (code === 5) seen.drops.push(`${names[b.readUInt32LE(8)]}=${b.readBigUInt64LE(off + 4)}`);
          off += 4 + ((len + 3) & ~3);
        }
      } else if (r.type === WATERMARK) {
        seen.watermarks.push(b.readUInt32LE(8) * 4294967296 + b.readUInt32LE(12));
      }
    }
  })().catch((err: Error) => {
    if (!abort.signal.aborted) throw err;
  });
  return {
    seen,
    pause: () => void (paused = true),
    resume: () => {
      paused = false;
      wake?.();
    },
    stop: async () => {
      abort.abort();
      paused = false;
      wake?.();
      await reading;
    },
  };
}

async function scratch(t: TapTest): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'live-follow-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);
const WEB = 'node-a/shop/web-0/eth0';
const DB = 'node-a/shop/db-0/eth0';

t.test('from now: what came before is left out, everything after arrives across rotations and prunes, and a pod that starts later is announced first', async (t) => {
  const dir = await scratch(t);
  // About ten records a file, three rotated files kept.
  const a = writer(dir, web, { maxSizeBytes: 1024, maxFiles: 3 });
  const b = writer(dir, db, { maxSizeBytes: 1024, maxFiles: 3 });
  await a.write(range(0, 5));
  const f = follow(t, dir, [a.file, b.file]);
  await waitFor(async () => (f.seen.watermarks.length > 0 ? true : undefined), { what: 'the stream to start', timeoutMs: 5000 });
  for (let i = 5; i < 65; i += 4) {
    await a.write(range(i, i + 4));
    await waitFor(async () => ((f.seen.packets.get(WEB)?.length ?? 0) >= i - 1 ? true : undefined), { what: `web-0's packets up to ${i + 3}`, timeoutMs: 5000 });
  }
  await b.write(range(0, 6));
  await waitFor(async () => {
    if ((f.seen.packets.get(DB)?.length ?? 0) === 6 && (f.seen.packets.get(WEB)?.length ?? 0) === 60) return true;
    throw new Error(`db-0 ${JSON.stringify(f.seen.packets.get(DB))}, web-0 ${f.seen.packets.get(WEB)?.length}, ${f.seen.order.filter((x) => !x.startsWith('EPB')).slice(-5).join('; ')}`);
  }, { what: 'every packet', timeoutMs: 5000 });
  await f.stop();
  t.same(f.seen.packets.get(WEB), range(5, 65), 'web-0: exactly what was written after the stream began, in order, across six rotations');
  t.same(f.seen.packets.get(DB), range(0, 6), 'db-0: everything, from its first file');
  const firstDbPacket = f.seen.order.indexOf(`EPB ${DB}`);
  t.ok(f.seen.order.indexOf(`IDB ${DB}`) >= 0 && f.seen.order.indexOf(`IDB ${DB}`) < firstDbPacket, 'db-0\'s interface block comes before its first packet');
  t.ok(f.seen.order.indexOf('NRB db-0.shop') >= 0 && f.seen.order.indexOf('NRB db-0.shop') < firstDbPacket, 'and its name');
  t.same(f.seen.skipNotes, [], 'nothing skipped by a reader that keeps up');
  t.ok(f.seen.drops.includes(`${WEB}=7`) && f.seen.drops.every((d) => d === `${WEB}=7` || d === `${DB}=0`), `interface statistics carry each interface's kernel drops (${[...new Set(f.seen.drops)].join(', ')})`);
  t.ok(f.seen.watermarks.every((w, i) => i === 0 || w >= f.seen.watermarks[i - 1]!), 'watermarks never go back');
});

t.test('?since: what is on disk from then on, rotated files included', async (t) => {
  const dir = await scratch(t);
  const a = writer(dir, web, { maxSizeBytes: 1024, maxFiles: 10 });
  await a.write(range(0, 30)); // three files: two rotated, one being written
  // Record i is at BASE + i ms: from record 12 on.
  const f = follow(t, dir, [a.file], { sinceMicros: BASE_MICROS + 11_500 });
  await waitFor(async () => ((f.seen.packets.get(WEB)?.length ?? 0) >= 18 ? true : undefined), { what: 'what is on disk since', timeoutMs: 5000 });
  await a.write(range(30, 33));
  await waitFor(async () => ((f.seen.packets.get(WEB)?.length ?? 0) >= 21 ? true : undefined), { what: 'and what comes next', timeoutMs: 5000 });
  await f.stop();
  t.same(f.seen.packets.get(WEB), range(12, 33));
});

t.test('a paused reader never holds the writer back; behind the files on disk, it is told exactly how many packets it skipped', async (t) => {
  const dir = await scratch(t);
  // Two rotated files kept; one pruned file held for the reader.
  const a = writer(dir, web, { maxSizeBytes: 1024, maxFiles: 2 });
  const f = follow(t, dir, [a.file], { maxHeldPruned: 1 });
  await waitFor(async () => (f.seen.watermarks.length > 0 ? true : undefined), { what: 'the stream to start', timeoutMs: 5000 });
  await a.write(range(0, 5));
  await waitFor(async () => ((f.seen.packets.get(WEB)?.length ?? 0) === 5 ? true : undefined), { what: 'the first packets', timeoutMs: 5000 });
  f.pause();
  // Twenty files' worth while nobody reads: the writer rotates and prunes as if alone.
  for (let i = 5; i < 205; i += 10) await a.write(range(i, i + 10));
  f.resume();
  await waitFor(async () => (f.seen.packets.get(WEB)?.at(-1) === 204 ? true : undefined), { what: 'the reader to catch up with the last packet', timeoutMs: 5000 });
  await f.stop();
  const got = f.seen.packets.get(WEB)!;
  t.ok(got.every((id, i) => i === 0 || id > got[i - 1]!), 'in order, none twice');
  const skipped = f.seen.skipNotes.reduce((x, y) => x + y, 0);
  t.ok(skipped > 0, `the reader fell behind the files on disk (${skipped} skipped)`);
  t.equal(got.length + skipped, 205, 'every packet written was either delivered or counted as skipped');
});
