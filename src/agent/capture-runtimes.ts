// What runs on this node for each capture (docs/agent.md, "Capture workers"): its workers,
// its tally, and the node-wide budgets they share (workers, disk, the disk gate). The controller decides what should run; this module starts and stops it and
// answers what the file server asks about it (is it still writing, how long is the file
// being written, may a download pin more).
import { accessSync, constants } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { formatBytes, type CapturePlan, type WorkerPlan } from './capture-plan.js';
import type { CaptureTally } from './capture-tally.js';
import { CaptureWorker } from './capture-worker.js';
import { withDeadline } from './deadline.js';
import { recordsInFile } from '../pcap/records.js';
import { DiskGate } from './disk-gate.js';
import { SOURCE_RECORD_BYTES } from './file-source.js';
import { ProcessRecords } from './leftover-tcpdumps.js';
import { NodeBudget } from './node-budget.js';
import type { PodRef } from './pod-interface.js';
import { fileBytesAtMost, type RotationPolicy } from './tcpdump-files.js';
import type { RotationGate } from './rotation-gate.js';

/** Under the capture directory, for the records of running tcpdumps; no namespace can be called so. */
export const RUN_DIR = '.run';

/** Disk operations (creating a directory, statfs) that take longer are given up on. */
export const DISK_DEADLINE_MS = 5_000;

/** One capture on this node. */
export interface Runtime {
  uid: string;
  workers: Map<string, CaptureWorker>;
  sawTraffic: boolean;
  lastWrite: number;
  /** The counters last put in the report, and when: they move at most once per counter interval. */
  counters: { packets: number; bytes: number; kernelDrops: number; at: number } | undefined;
  /** Some worker was refused by the node's budget: retried when a worker stops. */
  refused: boolean;
  /** What the capture has written here, persisted: its limits and its counters. */
  tally: CaptureTally;
}

export interface RuntimeOptions {
  nodeName: string;
  captureDir: string;
  policy: RotationPolicy;
  tcpdump: string;
  log: Logger;
  /** Capture workers (pod interfaces) on this node, over all captures. */
  maxWorkers: number;
  /** Free bytes on the capture directory's filesystem. */
  diskFree?: (path: string) => Promise<number>;
  /** Capture writes in libuv's thread pool at once (src/agent/disk-gate.ts). */
  diskSlots?: number;
  /** Shared with the file pins: rotations wait while a pin is made (rotation-gate.ts). */
  rotationGate?: RotationGate;
  /** Bytes held by downloads' pins: reserved on the disk like running captures' (file-pins.ts). */
  pinnedBytes?: () => number;
}

/** What the runtimes tell the controller. */
export interface RuntimeEvents {
  /** Something of this capture changed (a worker's state, a rotation): work on it again. */
  changed(key: string): void;
  /** A worker's interface is gone: the pod's interface must be looked up again. */
  interfaceGone(pod: PodRef, iface: string): void;
  packets(namespace: string, name: string, n: number, bytes: number): void;
  rotation(namespace: string, name: string): void;
}

/**
 * Disk a worker may hold: its rotated files, the file being written, and a rotation's copy
 * made before the oldest rotated file is pruned (tcpdump-files.ts), each with its source.
 */
export function perWorkerBytes(policy: RotationPolicy): number {
  return (policy.maxFiles + 2) * (fileBytesAtMost(policy) + SOURCE_RECORD_BYTES);
}

/** The first executable `name` on PATH. */
function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    const path = join(dir || '.', name);
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** The running worker captures what the plan wants (same filter, same snap length). */
export function sameCapture(worker: CaptureWorker, want: WorkerPlan): boolean {
  return worker.spec.bpf === want.bpf && worker.spec.snapLen === want.snapLen;
}

export class CaptureRuntimes {
  readonly byKey = new Map<string, Runtime>();
  readonly budget: NodeBudget;
  private readonly gate: DiskGate;
  private readonly processes: ProcessRecords;
  /** coreutils' stdbuf, if the image has it (tcpdump-process.ts: tcpdump's writes 64x larger). */
  private readonly stdbuf = onPath('stdbuf');

  constructor(private readonly o: RuntimeOptions, private readonly events: RuntimeEvents) {
    this.budget = new NodeBudget({ maxWorkers: o.maxWorkers, perWorkerBytes: perWorkerBytes(o.policy), captureDir: o.captureDir, diskFree: o.diskFree, pinnedBytes: o.pinnedBytes });
    this.gate = new DiskGate(o.diskSlots ?? 4);
    this.processes = new ProcessRecords(join(o.captureDir, RUN_DIR));
  }

  /**
   * Stops the workers the plan no longer wants, starts the `admitted` ones (their budget
   * already taken; `claim` marks the directory as the capture's before any file is written).
   */
  async converge(key: string, rt: Runtime, plan: CapturePlan, dir: string, admitted: WorkerPlan[], claim: () => Promise<void>): Promise<void> {
    let unused = admitted.length;
    try {
      const restarted = new Set(admitted.map((w) => w.key));
      const desired = new Set(plan.workers.map((w) => w.key).filter((k) => !restarted.has(k)));
      const stopping: Promise<void>[] = [];
      for (const [wk, worker] of rt.workers) {
        if (desired.has(wk)) continue;
        rt.workers.delete(wk);
        stopping.push(this.stopWorker(key, worker));
      }
      await Promise.all(stopping);
      if (admitted.length === 0) return;
      await withDeadline(mkdir(dir, { recursive: true, mode: 0o700 }), DISK_DEADLINE_MS, `creating ${dir}`);
      await claim();
      for (const want of admitted) {
        this.startWorker(key, rt, want, dir);
        unused--;
      }
    } finally {
      for (; unused > 0; unused--) this.budget.workerStopped();
    }
  }

  async stopWorker(key: string, worker: CaptureWorker): Promise<void> {
    await worker.stop();
    this.budget.workerStopped();
    this.o.log.info({ capture: key, pod: worker.spec.pod, iface: worker.spec.iface }, 'capture stopped on interface');
    // Room for a worker the budget refused elsewhere.
    this.retryRefused();
  }

  /** Captures the node's budget refused a worker: worked on again (room may have been made). */
  retryRefused(): void {
    for (const [k, r] of this.byKey) if (r.refused) this.events.changed(k);
  }

  /** Every worker of every capture stopped, within their deadlines; files stay. */
  async stopAll(): Promise<void> {
    await Promise.all([...this.byKey.values()].flatMap((r) => [...r.workers.values()].map((w) => w.stop())));
  }

  /**
   * Why `bytes` more may not be pinned for a download of this capture, if so. Only a capture
   * still writing here can rotate the originals away and leave the pin holding the only copy:
   * then the disk must have room for it beside what running captures may still write.
   */
  async pinRefusal(namespace: string, name: string, bytes: number): Promise<string | undefined> {
    if (this.pinRefusalNow(namespace, name, bytes) === undefined) return undefined;
    // The free-space figure is measured when captures reconcile: space freed since (a user
    // cleaning the disk) is not in it. Measure again before saying no.
    await this.refreshDisk();
    return this.pinRefusalNow(namespace, name, bytes);
  }

  private pinRefusalNow(namespace: string, name: string, bytes: number): string | undefined {
    if (bytes === 0 || !this.isCapturing(namespace, name)) return undefined;
    const v = this.budget.view();
    if (Number.isNaN(v.diskFree) || v.diskFree - v.diskReserved >= bytes) return undefined;
    return `not enough disk space on node ${this.o.nodeName} to pin ${formatBytes(bytes)} of ${namespace}/${name} for a download while it still rotates: ${formatBytes(v.diskFree)} free in ${v.captureDir}, ${formatBytes(v.diskReserved)} of it reserved by running captures and other downloads' pins`;
  }

  /** Measures free disk space again (a failure keeps the last figure). */
  async refreshDisk(): Promise<void> {
    await this.budget.refreshDisk(DISK_DEADLINE_MS).catch((err: Error) => this.o.log.warn({ err: err.message }, 'cannot read free disk space; the last measurement stays in use'));
  }

  isCapturing(namespace: string, name: string): boolean {
    const rt = this.byKey.get(`${namespace}/${name}`);
    return rt !== undefined && [...rt.workers.values()].some((w) => w.capturing);
  }

  kernelDrops(namespace: string, name: string): Map<string, number> {
    const out = new Map<string, number>();
    for (const w of this.byKey.get(`${namespace}/${name}`)?.workers.values() ?? []) out.set(w.files.base, w.stats.kernelDrops);
    return out;
  }

  /** The worker writing the file with inode `ino` in `dir`, if any. By inode, not by name: the name passes to a new file at every rotation. */
  private writerOf(dir: string, ino: bigint): CaptureWorker | undefined {
    for (const r of this.byKey.values()) {
      for (const w of r.workers.values()) if (w.files.dir === dir && w.isWriting(ino)) return w;
    }
    return undefined;
  }

  /** The generation of the file with inode `ino` in `dir`, if a worker is writing it (tcpdump-files.ts). */
  generationOf(dir: string, ino: bigint): number | undefined {
    return this.writerOf(dir, ino)?.generationOf(ino);
  }

  /** Whether a worker is writing the file with inode `ino` in `dir` (the live stream waits for more of it). */
  isWriting(dir: string, ino: bigint): boolean {
    return this.writerOf(dir, ino) !== undefined;
  }

  /** The complete-record prefix of the file with inode `ino` in `dir`, if a worker is writing it (the file server's length). */
  async committedLength(dir: string, ino: bigint): Promise<number | undefined> {
    return await this.writerOf(dir, ino)?.committedLength(ino);
  }

  /** Every packet of the capture that reached the kernel before this time (ms) is in its files; undefined: not proven by every worker. */
  flushedThrough(namespace: string, name: string): number | undefined {
    // No tcpdump of the capture here: whatever comes later is captured later.
    let through = Date.now();
    for (const w of this.byKey.get(`${namespace}/${name}`)?.workers.values() ?? []) {
      if (!w.capturing) continue;
      if (w.flushedThrough === 0) return undefined;
      through = Math.min(through, w.flushedThrough);
    }
    return through;
  }

  /** The node's figures for the metrics. */
  summary(): { captures: number; workers: number; kernelDrops: number; diskFreeBytes: number } {
    let workers = 0;
    let drops = 0;
    let captures = 0;
    for (const rt of this.byKey.values()) {
      const capturing = [...rt.workers.values()].filter((w) => w.capturing);
      if (capturing.length > 0) captures++;
      workers += capturing.length;
      for (const w of rt.workers.values()) drops += w.stats.kernelDrops;
    }
    return { captures, workers, kernelDrops: drops, diskFreeBytes: this.budget.diskFreeBytes };
  }

  private startWorker(key: string, rt: Runtime, want: WorkerPlan, dir: string): void {
    const [namespace, name] = key.split('/') as [string, string];
    const origin = { node: this.o.nodeName, namespace, capture: name, pod: want.pod.name, podUID: want.pod.uid, podIPs: want.pod.ips ?? [want.pod.ip] };
    const worker = new CaptureWorker({ capture: key, pod: want.pod.name, iface: want.iface, bpf: want.bpf, snapLen: want.snapLen, dir, origin }, {
      tcpdump: this.o.tcpdump,
      stdbuf: this.stdbuf,
      policy: this.o.policy,
      log: this.o.log,
      gate: this.gate,
      rotationGate: this.o.rotationGate,
      processes: this.processes,
      onPackets: (n, bytes) => {
        this.events.packets(namespace, name, n, bytes);
        // A limit reached: the plan stops the capture here, and its files are cut to it.
        if (rt.tally.add(n, bytes)) this.events.changed(key);
      },
      onPrune: async (path) => {
        if (!rt.tally.limited) return;
        const { packets, bytes } = await recordsInFile(path);
        await rt.tally.forget(packets, bytes);
      },
      onRotate: () => {
        this.events.rotation(namespace, name);
        this.events.changed(key);
      },
    });
    worker.on('changed', () => this.events.changed(key));
    worker.on('interface-gone', () => this.events.interfaceGone(want.pod, want.iface));
    rt.workers.set(want.key, worker);
    worker.start();
    this.o.log.info({ capture: key, pod: want.pod.name, iface: want.iface, via: want.via, filter: want.bpf || '(all traffic)' }, 'capture started on interface');
  }
}
