// Pinned files (docs/downloads.md, "Pinned files"): a download gets exactly the files it listed,
// whatever rotation does meanwhile.
//
// A pin is a directory <captureDir>/.pins/<id>/ holding a hard link to each file of one
// capture's directory at one moment (rotation is held off while it is made: rotation-gate.ts)
// and pin.json with each file's servable size and identity. A link keeps the listed inode
// when rotation renames or deletes the original, and the writer never truncates an inode it
// let go of, so the first `size` bytes stay what they were when listed. Pins live on disk, so
// an agent restart neither loses nor leaks them: at start the agent takes back those whose
// time is not up and removes the others. A pin lasts `ttl` after its last use (creation, a
// renewal, a read); the gateway renews its pins while a download runs and releases them when
// it ends. ".pins" can be no namespace (DNS labels start with a letter or digit), so it never
// collides with a capture directory.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { copyFile, link, lstat, mkdir, open, readdir, readFile, rename, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { CAPTURE_FILE_NAME } from '../pcap/file-names.js';
import { captureFilesIn, type CaptureStore } from './capture-store.js';
import { readSource, type FileSource } from './file-source.js';
import type { RotationGate } from './rotation-gate.js';

export const PINS_DIR = '.pins';
const PIN_ID = /^[0-9a-f]{32}$/;
const META = 'pin.json';

export interface PinnedFile {
  name: string;
  /** Bytes of the file the pin serves: its servable length when pinned. */
  size: number;
  modified: string;
  identity: string;
  /** The inode, to count bytes held by several pins once. */
  ino: string;
  /** Where its packets come from (file-source.ts), copied here: the original's record goes when it is pruned. */
  source?: FileSource;
}

export interface Pin {
  id: string;
  namespace: string;
  name: string;
  /** Unix milliseconds; renewed on use. */
  expiresAt: number;
  files: PinnedFile[];
}

/** A pin that cannot be made now; `status` is the HTTP answer (507 disk, 503 too many, 409 files going away). */
export class PinRefusedError extends Error {
  constructor(readonly status: 409 | 503 | 507, message: string) {
    super(message);
    this.name = 'PinRefusedError';
  }
}

export interface FilePinsOptions {
  root: string;
  store: CaptureStore;
  gate: RotationGate;
  ttlMs: number;
  maxPins: number;
  log: Logger;
  /**
   * Whether `bytes` more may be pinned for this capture; a refusal reason when not. Pinned
   * bytes count against the node's disk budget (node-budget.ts).
   */
  admit?: (namespace: string, name: string, bytes: number) => Promise<string | undefined> | string | undefined;
  onChange?: (pins: number, bytes: number) => void;
  onExpired?: () => void;
  now?: () => number;
}

interface LivePin extends Pin {
  readers: number;
}

export class FilePins {
  private readonly pins = new Map<string, LivePin>();
  private readonly dir: string;
  private timer: NodeJS.Timeout | undefined;
  private bytes = 0;
  /** Pinned inodes whose capture file is gone (only pins link them): already used disk, nothing to reserve. */
  private readonly orphaned = new Set<string>();

  constructor(private readonly o: FilePinsOptions) {
    this.dir = join(o.root, PINS_DIR);
  }

  private now(): number {
    return (this.o.now ?? Date.now)();
  }

  /** Bytes held by pins, each inode once: what pins may keep on disk after rotation deletes the originals. */
  get pinnedBytes(): number {
    return this.bytes;
  }

  /**
   * Pinned bytes the disk budget must reserve (node-budget.ts): those of files the capture
   * directory still links, which rotation may delete without freeing their space. A file
   * only pins still hold is already counted by the filesystem's free space; reserving it
   * again would count it twice. Kept current by refreshLinks().
   */
  get reservedBytes(): number {
    return this.heldBytes(this.orphaned);
  }

  /** Bytes the pins hold, each inode once at its largest pinned size, but those in `except`. */
  private heldBytes(except?: ReadonlySet<string>): number {
    const byIno = new Map<string, number>();
    for (const p of this.pins.values()) for (const f of p.files) if (!except?.has(f.ino)) byIno.set(f.ino, Math.max(byIno.get(f.ino) ?? 0, f.size));
    let n = 0;
    for (const b of byIno.values()) n += b;
    return n;
  }

  /** Which pinned files the capture directories no longer link: their link count says so. */
  async refreshLinks(): Promise<void> {
    const holders = new Map<string, { path: string; pins: number }>();
    for (const p of this.pins.values()) {
      for (const f of p.files) {
        const h = holders.get(f.ino);
        if (h) h.pins++;
        else holders.set(f.ino, { path: join(this.dir, p.id, f.name), pins: 1 });
      }
    }
    for (const ino of [...this.orphaned]) if (!holders.has(ino)) this.orphaned.delete(ino);
    for (const [ino, h] of holders) {
      const st = await lstat(h.path).catch(() => undefined);
      // A copy (another filesystem) has a link count of its own: it is the pin's alone.
      if (st && st.nlink <= h.pins) this.orphaned.add(ino);
      else this.orphaned.delete(ino);
    }
  }

  get ttlSeconds(): number {
    return this.o.ttlMs / 1000;
  }

  get count(): number {
    return this.pins.size;
  }

  /** Takes back the pins of an earlier run whose time is not up; removes the others. */
  async load(): Promise<void> {
    // Made with the first pin: an agent that never pinned leaves nothing in the capture directory.
    for (const id of await readdir(this.dir).catch(() => [] as string[])) {
      const pin = PIN_ID.test(id) ? await this.readMeta(id) : undefined;
      if (!pin || pin.expiresAt <= this.now()) {
        await rm(join(this.dir, id), { recursive: true, force: true });
        this.o.log.info({ pin: id }, 'pin of an earlier run removed (expired or incomplete)');
        continue;
      }
      this.pins.set(id, { ...pin, expiresAt: Math.min(pin.expiresAt, this.now() + this.o.ttlMs), readers: 0 });
    }
    this.changed();
  }

  start(): void {
    this.timer = setInterval(() => void this.sweep(), Math.max(250, Math.min(15_000, this.o.ttlMs / 4)));
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Pins every file of the capture on this node as it is now. */
  async create(namespace: string, name: string): Promise<Pin> {
    if (this.pins.size >= this.o.maxPins) {
      throw new PinRefusedError(503, `${this.pins.size} downloads already hold files pinned on this node (--max-pins); retry when one has ended`);
    }
    const dir = await this.o.store.directory(namespace, name);
    const id = randomBytes(16).toString('hex');
    const pinDir = join(this.dir, id);
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await mkdir(pinDir, { mode: 0o700 });
    try {
      const files = dir ? await this.o.gate.exclusive(dir, () => this.linkAll(dir, pinDir)) : [];
      const fresh = this.newBytes(files);
      const refusal = await this.o.admit?.(namespace, name, fresh);
      if (refusal) throw new PinRefusedError(507, refusal);
      const pin: LivePin = { id, namespace, name, expiresAt: this.now() + this.o.ttlMs, files, readers: 0 };
      await this.writeMeta(pin);
      this.pins.set(id, pin);
      this.changed();
      return pin;
    } catch (err) {
      await rm(pinDir, { recursive: true, force: true });
      throw err;
    }
  }

  /** The pin, its time renewed; undefined when unknown, expired or of another capture. */
  renew(id: string, namespace: string, name: string): Pin | undefined {
    const pin = this.find(id, namespace, name);
    if (pin) pin.expiresAt = this.now() + this.o.ttlMs;
    return pin;
  }

  async release(id: string, namespace: string, name: string): Promise<boolean> {
    const pin = this.find(id, namespace, name);
    if (!pin) return false;
    await this.remove(pin);
    return true;
  }

  /** Drops every pin of a capture whose files are being removed (deleted capture, DELETE of the files). */
  async dropCapture(namespace: string, name: string): Promise<number> {
    const pins = [...this.pins.values()].filter((p) => p.namespace === namespace && p.name === name);
    for (const p of pins) await this.remove(p);
    return pins.length;
  }

  /**
   * One pinned file, opened, with its pinned size; `done` must be called when the transfer
   * ends. The pin lasts while a read of it runs, and `ttl` after.
   */
  async open(id: string, namespace: string, name: string, file: string): Promise<{ handle: FileHandle; file: PinnedFile; done: () => void } | undefined> {
    const pin = this.find(id, namespace, name);
    if (pin) pin.expiresAt = this.now() + this.o.ttlMs;
    const entry = pin?.files.find((f) => f.name === file);
    if (!pin || !entry) return undefined;
    const handle = await open(join(this.dir, id, entry.name), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(() => undefined);
    if (!handle) return undefined;
    return { handle, file: entry, done: this.read(pin) };
  }

  /**
   * Every file of a pin, by path, for one read of them all (the node's merged pcapng); `done`
   * must be called when it ends. The pin lasts while the read runs, and `ttl` after.
   */
  hold(id: string, namespace: string, name: string): { files: { name: string; path: string; size: number; source?: FileSource }[]; done: () => void } | undefined {
    const pin = this.find(id, namespace, name);
    if (!pin) return undefined;
    return {
      files: pin.files.map((f) => ({ name: f.name, path: join(this.dir, id, f.name), size: f.size, ...(f.source ? { source: f.source } : {}) })),
      done: this.read(pin),
    };
  }

  /** One read of the pin begins: it is kept while any runs; the returned `done` (idempotent) ends it and starts the ttl again. */
  private read(pin: LivePin): () => void {
    pin.readers++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      pin.readers--;
      pin.expiresAt = this.now() + this.o.ttlMs;
    };
  }

  /** Removes the pins whose time is up and that nobody reads. */
  async sweep(): Promise<void> {
    await this.refreshLinks().catch((err: Error) => this.o.log.warn({ err: err.message }, 'cannot read the pinned files\' link counts'));
    const now = this.now();
    for (const pin of [...this.pins.values()]) {
      if (pin.readers > 0 || pin.expiresAt > now) continue;
      this.o.onExpired?.();
      this.o.log.info({ pin: pin.id, capture: `${pin.namespace}/${pin.name}` }, 'pin expired (its download ended without releasing it)');
      await this.remove(pin).catch((err: Error) => this.o.log.warn({ pin: pin.id, err: err.message }, 'cannot remove an expired pin'));
    }
  }

  private find(id: string, namespace: string, name: string): LivePin | undefined {
    if (!PIN_ID.test(id)) return undefined;
    const pin = this.pins.get(id);
    return pin && pin.namespace === namespace && pin.name === name ? pin : undefined;
  }

  private async remove(pin: LivePin): Promise<void> {
    if (this.pins.get(pin.id) !== pin) return;
    this.pins.delete(pin.id);
    this.changed();
    await rm(join(this.dir, pin.id), { recursive: true, force: true });
  }

  /**
   * Links each capture file of `dir` into `pinDir`, with rotation held off. A file that
   * disappears meanwhile is being deleted with its capture: the pin fails rather than
   * holding part of a listing.
   */
  private async linkAll(dir: string, pinDir: string): Promise<PinnedFile[]> {
    const out: PinnedFile[] = [];
    for (const { name: file, path, st: orig } of await captureFilesIn(dir)) {
      const pinned = join(pinDir, file);
      try {
        // A file being written changes in place at its next rotation (tcpdump-files.ts): the
        // pin holds a copy of it as it is now (rotation is held off meanwhile).
        if (this.o.store.writing.isWriting(dir, orig.ino)) await copyFile(path, pinned);
        else await link(path, pinned);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') throw new PinRefusedError(409, `${file} was removed while it was being pinned: the capture's files are being deleted`);
        // A file another user owns (fs.protected_hardlinks) or on another filesystem: a copy
        // pins its bytes as well, at the cost of the copy.
        if (code !== 'EPERM' && code !== 'EXDEV') throw err;
        await copyFile(path, pinned);
      }
      const st = await lstat(pinned, { bigint: true });
      const copied = st.ino !== orig.ino;
      const [size, source] = await Promise.all([
        // A copy is no file a worker writes: its length is its complete records.
        this.o.store.servableLength(dir, pinned, file, st),
        readSource(dir, orig),
      ]);
      // What a listing shows for the original, also when the pin holds a copy.
      const identity = await this.o.store.identityOf(dir, copied ? path : pinned, copied ? orig : st, source);
      out.push({ name: file, size: Math.min(size, Number(st.size)), modified: orig.mtime.toISOString(), identity, ino: st.ino.toString(), ...(source ? { source } : {}) });
    }
    return out;
  }

  /** Bytes of these files not already held by another pin. */
  private newBytes(files: PinnedFile[]): number {
    const held = new Set<string>();
    for (const p of this.pins.values()) for (const f of p.files) held.add(f.ino);
    return files.filter((f) => !held.has(f.ino)).reduce((n, f) => n + f.size, 0);
  }

  private changed(): void {
    this.bytes = this.heldBytes();
    this.o.onChange?.(this.pins.size, this.bytes);
  }

  private async writeMeta(pin: Pin): Promise<void> {
    const tmp = join(this.dir, pin.id, `${META}.tmp`);
    const { id, namespace, name, expiresAt, files } = pin;
    await writeFile(tmp, JSON.stringify({ id, namespace, name, expiresAt, files }), { mode: 0o600 });
    await rename(tmp, join(this.dir, pin.id, META));
  }

  /** pin.json of an earlier run, if whole and consistent with its directory. */
  private async readMeta(id: string): Promise<Pin | undefined> {
    try {
      const pin = JSON.parse(await readFile(join(this.dir, id, META), 'utf8')) as Pin;
      if (pin.id !== id || typeof pin.namespace !== 'string' || typeof pin.name !== 'string' || typeof pin.expiresAt !== 'number' || !Array.isArray(pin.files)) return undefined;
      for (const f of pin.files) {
        if (!CAPTURE_FILE_NAME.test(f.name) || !Number.isSafeInteger(f.size)) return undefined;
        const st = await lstat(join(this.dir, id, f.name));
        if (!st.isFile() || st.size < f.size) return undefined;
      }
      return pin;
    } catch {
      return undefined;
    }
  }
}
