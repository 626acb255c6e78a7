// Rotation and pinning take turns per capture directory (docs/downloads.md, "Pinned files").
//
// A pin must be one moment's listing: if a rotation renamed `<pod>_<iface>.pcap` between
// the pin's readdir and its link, the pin would hold the next file under the listed name and
// the renamed packets under none. Only this agent renames and prunes its files, so holding
// its rotations off for the few milliseconds a pin takes makes every pin a consistent
// snapshot. Rotations of one directory run side by side (one per pod interface); a pin waits
// for those in flight and holds new ones until it is done.
export class RotationGate {
  private readonly dirs = new Map<string, DirGate>();

  /** Runs a rotation (rename, prune) of a file in `dir` once no pin of `dir` is being made. */
  async rotation<T>(dir: string, op: () => Promise<T>): Promise<T> {
    const g = this.gate(dir);
    g.waiters++;
    while (g.pinning) await g.pinning;
    g.waiters--;
    g.rotations++;
    try {
      return await op();
    } finally {
      g.rotations--;
      if (g.rotations === 0) g.idle?.();
      this.drop(dir, g);
    }
  }

  /** Runs `op` (a pin of `dir`) with no rotation of `dir` in flight or starting meanwhile. */
  async exclusive<T>(dir: string, op: () => Promise<T>): Promise<T> {
    const g = this.gate(dir);
    g.waiters++;
    while (g.pinning) await g.pinning;
    g.waiters--;
    let done!: () => void;
    g.pinning = new Promise<void>((resolve) => (done = resolve));
    try {
      if (g.rotations > 0) await new Promise<void>((resolve) => (g.idle = resolve));
      g.idle = undefined;
      return await op();
    } finally {
      g.pinning = undefined;
      done();
      this.drop(dir, g);
    }
  }

  private gate(dir: string): DirGate {
    let g = this.dirs.get(dir);
    if (!g) this.dirs.set(dir, (g = { rotations: 0, waiters: 0, pinning: undefined, idle: undefined }));
    return g;
  }

  private drop(dir: string, g: DirGate): void {
    // Kept while anyone waits on it: a waiter holds this object, and a new one in its place
    // would let a pin and a rotation in at once.
    if (g.rotations === 0 && g.waiters === 0 && !g.pinning && this.dirs.get(dir) === g) this.dirs.delete(dir);
  }
}

interface DirGate {
  rotations: number;
  waiters: number;
  pinning: Promise<void> | undefined;
  idle: (() => void) | undefined;
}
