// The capture directories on this node's disk (docs/agent.md, "Garbage collection"): which
// capture owns each (a marker with its uid, written when the agent makes it), and their
// removal. Only directories that carry the marker are ever touched: whatever else is under
// the capture root is someone else's.
import { readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { CaptureStore } from './capture-store.js';
import { TALLY_FILE } from './capture-tally.js';
import { withDeadline } from './deadline.js';

/** The file in a capture directory that names the capture (uid) that made it. */
export const UID_MARKER = '.capture-uid';
/** What a capture directory holds besides files: kept when only the files are deleted. */
export const CAPTURE_STATE_FILES: ReadonlySet<string> = new Set([UID_MARKER, TALLY_FILE]);

export interface CaptureDirectoriesOptions {
  captureDir: string;
  store: CaptureStore;
  log: Logger;
  /** Releases downloads' pins of a capture before its files go. */
  dropPins?: (namespace: string, name: string) => Promise<unknown>;
  /** Removing one capture's files that takes longer is given up on (and retried). */
  deadlineMs: number;
}

export class CaptureDirectories {
  constructor(private readonly o: CaptureDirectoriesOptions) {}

  /** Records which capture (by uid) owns the directory; another uid's files are removed. */
  async claim(key: string, dir: string, uid: string): Promise<void> {
    const marker = join(dir, UID_MARKER);
    const owner = await readFile(marker, 'utf8').catch(() => undefined);
    if (owner === uid) return;
    if (owner !== undefined) {
      const [namespace, name] = key.split('/') as [string, string];
      await this.o.dropPins?.(namespace, name);
      await rm(dir, { recursive: true, force: true });
      this.o.log.info({ dir }, 'files of an earlier capture with the same name removed');
    }
    const exists = await readdir(dir).then(() => true, () => false);
    if (!exists) return; // created with the first worker
    await writeFile(marker, uid, { mode: 0o600 });
  }

  /**
   * Removes each marked capture directory that `why` gives a reason for (logged); returns
   * the keys ("namespace/name") removed.
   */
  async sweep(why: (key: string) => string | undefined): Promise<string[]> {
    const removed: string[] = [];
    let foreign = 0;
    for (const ns of await readdir(this.o.captureDir).catch(() => [] as string[])) {
      for (const name of await readdir(join(this.o.captureDir, ns)).catch(() => [] as string[])) {
        const key = `${ns}/${name}`;
        let dir: string;
        try {
          dir = this.o.store.captureDir(ns, name);
        } catch {
          foreign++;
          continue; // not a capture directory's name
        }
        if (!(await stat(join(dir, UID_MARKER)).then((s) => s.isFile(), () => false))) {
          foreign++;
          continue; // not made by a kube-pcap agent: never ours to delete
        }
        const reason = why(key);
        if (reason === undefined) continue;
        await this.o.dropPins?.(ns, name);
        const files = await withDeadline(this.o.store.removeAll(ns, name), this.o.deadlineMs, `removing ${key}`);
        this.o.log.info({ capture: key, removed: files.length }, reason);
        removed.push(key);
      }
    }
    this.o.log.debug({ foreign }, 'garbage collection done');
    return removed;
  }
}
