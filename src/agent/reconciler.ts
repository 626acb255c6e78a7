// The agent's control loop, level-triggered: from what it observes (PacketCaptures, this
// node's pods, the clock, the disk, the interfaces) it computes the capture workers that
// should run and this node's entry in each capture's status, then converges to them.
// Every pass starts from scratch, so a missed event, a restart or a relist can only delay
// it, never leave it wrong; it writes status only when the entry differs from what the API
// server holds, and acts only on fully synced caches (so it never deletes files because
// its view is incomplete).
import { mkdir, readFile, rm, statfs, writeFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { KubeClient } from '../kube/client.js';
import { applyNodeStatus, summarizeStates, type CaptureState, type NodeCaptureStatus, type PacketCapture } from '../kube/packetcapture.js';
import type { Reflector } from '../kube/reflector.js';
import { parseSelector, SelectorError, type Selector } from '../selector/selector.js';
import { checkBpf, FilterError, filtersToBpf } from './bpf.js';
import type { CaptureStore } from './capture-store.js';
import { CaptureWorker } from './capture-worker.js';
import type { InterfaceResolver } from './pod-interface.js';
import type { RotationPolicy } from './rotating-pcap.js';

export interface Pod {
  metadata?: { name?: string; namespace?: string; uid?: string; labels?: Record<string, string>; deletionTimestamp?: string };
  spec?: { nodeName?: string; hostNetwork?: boolean };
  status?: { phase?: string; podIP?: string; podIPs?: { ip: string }[] };
}

export interface ReconcilerMetrics {
  packets(namespace: string, name: string, n: number, bytes: number): void;
  rotation(namespace: string, name: string): void;
  observe(summary: { captures: number; workers: number; kernelDrops: number; diskFreeBytes: number }): void;
}

export interface ReconcilerOptions {
  nodeName: string;
  captureDir: string;
  policy: RotationPolicy;
  tcpdump: string;
  log: Logger;
  kube: KubeClient;
  store: CaptureStore;
  captures: Reflector<PacketCapture>;
  pods: Reflector<Pod>;
  resolver: InterfaceResolver;
  /** At most one status write per capture per this interval. */
  statusIntervalMs: number;
  resyncMs: number;
  metrics?: ReconcilerMetrics;
  /** Free bytes on the capture directory's filesystem. */
  diskFree?: (path: string) => Promise<number>;
}

/** Counters alone change this seldom in status; state, files and errors go out at once. */
const COUNTER_STATUS_INTERVAL_MS = 10_000;
const UID_MARKER = '.capture-uid';

interface Runtime {
  uid: string;
  workers: Map<string, CaptureWorker>;
  sawTraffic: boolean;
  lastWrite: number;
  lastCounters: string;
  writeTimer: NodeJS.Timeout | undefined;
}

interface Validated {
  selector: Selector;
  bpf: string;
}

export class Reconciler {
  private readonly runtimes = new Map<string, Runtime>();
  /** spec JSON -> validation (tcpdump -d is not free). */
  private readonly validation = new Map<string, Promise<Validated | { error: string }>>();
  /** "<podUid>/<ip>" -> interface. */
  private readonly interfaces = new Map<string, string>();
  private readonly fieldManager: string;
  private pending = false;
  private running: Promise<void> | undefined;
  private timers: NodeJS.Timeout[] = [];
  private stopped = false;

  constructor(private readonly o: ReconcilerOptions) {
    this.fieldManager = `kube-pcap-agent/${o.nodeName}`;
  }

  start(): void {
    const kick = (): void => this.schedule();
    this.o.captures.on('change', kick);
    this.o.pods.on('change', kick);
    // The clock matters too (start and end times, rotation by age, retries): once a second.
    this.timers.push(setInterval(kick, 1000));
    this.timers.push(setInterval(() => {
      this.interfaces.clear();
      this.validation.clear();
      kick();
    }, this.o.resyncMs));
    kick();
  }

  /** Stops every capture on this node; files stay (the agent may be restarting). */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    await this.running;
    await Promise.all([...this.runtimes.values()].flatMap((r) => [...r.workers.values()].map((w) => w.stop())));
    for (const r of this.runtimes.values()) clearTimeout(r.writeTimer);
  }

  isCapturing(namespace: string, name: string): boolean {
    return (this.runtimes.get(`${namespace}/${name}`)?.workers.size ?? 0) > 0;
  }

  /** Committed length of a file being written, for the file server. */
  liveLength(path: string): number | undefined {
    for (const r of this.runtimes.values()) for (const w of r.workers.values()) if (w.file.currentPath === path) return w.file.liveLength;
    return undefined;
  }

  filesDeleted(): void {
    this.schedule();
  }

  /** Coalesces triggers: one pass at a time, and one more if anything arrived meanwhile. */
  schedule(): void {
    if (this.stopped) return;
    this.pending = true;
    if (this.running) return;
    this.running = (async () => {
      while (this.pending && !this.stopped) {
        this.pending = false;
        try {
          await this.reconcile();
        } catch (err) {
          this.o.log.error({ err }, 'reconcile failed; will retry');
        }
      }
      this.running = undefined;
    })();
  }

  private async reconcile(): Promise<void> {
    if (!this.o.captures.synced || !this.o.pods.synced) return;
    const seen = new Set<string>();
    let diskFree = Number.NaN;
    try {
      diskFree = await (this.o.diskFree ?? defaultDiskFree)(this.o.captureDir);
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'cannot read free disk space');
    }
    for (const pc of this.o.captures.items.values()) {
      const key = `${pc.metadata.namespace}/${pc.metadata.name}`;
      seen.add(key);
      try {
        await this.reconcileCapture(pc, diskFree);
      } catch (err) {
        // One capture's trouble (a file system error, say) must not hold up the others.
        this.o.log.error({ capture: key, err }, 'reconciling the capture failed; will retry');
      }
    }
    for (const [key, rt] of this.runtimes) {
      if (!seen.has(key)) await this.forget(key, rt);
    }
    await this.removeOrphanDirectories(seen);
    let workers = 0;
    let drops = 0;
    let captures = 0;
    for (const rt of this.runtimes.values()) {
      if (rt.workers.size > 0) captures++;
      workers += rt.workers.size;
      for (const w of rt.workers.values()) drops += w.stats.kernelDrops;
    }
    this.o.metrics?.observe({ captures, workers, kernelDrops: drops, diskFreeBytes: diskFree });
  }

  private validate(pc: PacketCapture): Promise<Validated | { error: string }> {
    const spec = JSON.stringify([pc.spec?.selector ?? 'all()', pc.spec?.filters ?? []]);
    let v = this.validation.get(spec);
    if (!v) {
      v = (async () => {
        try {
          const selector = parseSelector(pc.spec?.selector ?? 'all()');
          const bpf = filtersToBpf(pc.spec?.filters);
          await checkBpf(this.o.tcpdump, bpf);
          return { selector, bpf };
        } catch (err) {
          if (err instanceof SelectorError || err instanceof FilterError) return { error: err.message.split('\n')[0]! };
          throw err;
        }
      })();
      this.validation.set(spec, v);
    }
    return v;
  }

  private async reconcileCapture(pc: PacketCapture, diskFree: number): Promise<void> {
    const { namespace, name } = pc.metadata;
    const key = `${namespace}/${name}`;
    const uid = pc.metadata.uid ?? '';
    let rt = this.runtimes.get(key);
    if (rt && rt.uid !== uid) {
      // Deleted and created again under the same name: the old one's files go with it.
      await this.forget(key, rt);
      rt = undefined;
    }
    const dir = this.o.store.captureDir(namespace, name);
    if (!rt) {
      rt = { uid, workers: new Map(), sawTraffic: false, lastWrite: 0, lastCounters: '', writeTimer: undefined };
      this.runtimes.set(key, rt);
      await this.claimDirectory(dir, uid);
      rt.sawTraffic = (await this.o.store.fileNames(namespace, name)).length > 0;
    }

    const now = Date.now();
    const start = pc.spec?.startTime ? Date.parse(pc.spec.startTime) : undefined;
    const end = pc.spec?.endTime ? Date.parse(pc.spec.endTime) : undefined;
    const validated = await this.validate(pc);
    const pods = this.matchingPods(pc, 'error' in validated ? undefined : validated.selector);
    const problems: string[] = [];
    let state: CaptureState;
    let fatal: string | undefined;

    if ('error' in validated) {
      fatal = validated.error;
    } else if (start !== undefined && now < start) {
      state = 'Scheduled';
    } else if (end !== undefined && now >= end) {
      state = 'Finished';
    }
    const active = !fatal && !(start !== undefined && now < start) && !(end !== undefined && now >= end);

    // Desired workers: one per matching pod and interface.
    const desired = new Map<string, { pod: string; iface: string }>();
    if (active && !('error' in validated)) {
      for (const pod of pods) {
        const ip = pod.status?.podIP ?? pod.status?.podIPs?.[0]?.ip;
        if (!ip) continue;
        const cacheKey = `${pod.metadata?.uid}/${ip}`;
        let iface = this.interfaces.get(cacheKey);
        if (!iface) {
          const res = await this.o.resolver.resolve(ip);
          if ('iface' in res) {
            iface = res.iface;
            this.interfaces.set(cacheKey, iface);
          } else {
            problems.push(`pod ${pod.metadata?.name}: ${res.error}`);
            continue;
          }
        }
        desired.set(`${pod.metadata?.uid}/${iface}`, { pod: pod.metadata!.name!, iface });
      }
    }
    // Stop what should not run (pods gone, relabelled, moved; capture stopped).
    for (const [wk, worker] of rt.workers) {
      if (!desired.has(wk)) {
        rt.workers.delete(wk);
        await worker.stop();
        this.o.log.info({ capture: key, pod: worker.spec.pod, iface: worker.spec.iface }, 'capture stopped on interface');
      }
    }
    // Start what should run, if the disk can take it.
    const needPerWorker = (this.o.policy.maxFiles + 1) * this.o.policy.maxSizeBytes;
    let freeLeft = diskFree;
    for (const [wk, want] of desired) {
      if (rt.workers.has(wk)) continue;
      if (!Number.isNaN(freeLeft) && freeLeft < needPerWorker) {
        fatal ??= `not enough disk space on node ${this.o.nodeName}: ${formatBytes(freeLeft)} free in ${this.o.captureDir}, a capture of one pod interface needs (captureMaxFiles + 1) x captureMaxSizeBytes = ${formatBytes(needPerWorker)}`;
        continue;
      }
      freeLeft -= needPerWorker;
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await this.claimDirectory(dir, uid);
      const worker = new CaptureWorker({ capture: key, pod: want.pod, iface: want.iface, bpf: (validated as Validated).bpf, dir }, {
        tcpdump: this.o.tcpdump,
        policy: this.o.policy,
        log: this.o.log,
        onPackets: (n, bytes) => this.o.metrics?.packets(namespace, name, n, bytes),
        onRotate: () => {
          this.o.metrics?.rotation(namespace, name);
          this.schedule();
        },
      });
      worker.once('first-packet', () => {
        rt!.sawTraffic = true;
        this.schedule();
      });
      rt.workers.set(wk, worker);
      worker.start();
      this.o.log.info({ capture: key, pod: want.pod, iface: want.iface, filter: worker.spec.bpf || '(all traffic)' }, 'capture started on interface');
    }

    // This node's entry.
    let packets = 0;
    let bytes = 0;
    let kernelDrops = 0;
    const workerErrors: string[] = [];
    for (const w of rt.workers.values()) {
      packets += w.stats.packets;
      bytes += w.stats.bytes;
      kernelDrops += w.stats.kernelDrops;
      if (w.stats.error) workerErrors.push(`${w.spec.pod}/${w.spec.iface}: ${w.stats.error}`);
    }
    const healthy = [...rt.workers.values()].some((w) => !w.stats.error);
    if (!fatal && active && rt.workers.size > 0 && !healthy && workerErrors.length > 0) fatal = workerErrors.join('; ');
    if (fatal) state = 'Error';
    else if (active) state = rt.sawTraffic ? 'Capturing' : 'WaitingForTraffic';
    const fileNames = await this.o.store.fileNames(namespace, name);
    const messages = fatal ? [fatal] : [...workerErrors, ...problems];
    if (!fatal && active && pods.length === 0) messages.push(`no pod on node ${this.o.nodeName} matches the selector`);
    const observed = pc.status?.files?.find((f) => f.node === this.o.nodeName);
    const relevant = fatal !== undefined || pods.length > 0 || fileNames.length > 0 || rt.workers.size > 0 || observed !== undefined;
    const entry: NodeCaptureStatus | undefined = relevant
      ? {
          node: this.o.nodeName,
          directory: dir,
          fileNames,
          state: state!,
          ...(messages.length > 0 ? { message: messages.join('; ').slice(0, 1024) } : {}),
          pods: rt.workers.size,
          packets,
          bytes,
          kernelDrops,
        }
      : undefined;
    await this.writeStatus(pc, rt, entry);
  }

  /** Pods of this node that the capture selects (the pod cache holds this node's only). */
  private matchingPods(pc: PacketCapture, selector: Selector | undefined): Pod[] {
    if (!selector) return [];
    const out: Pod[] = [];
    for (const pod of this.o.pods.items.values()) {
      if (pod.metadata?.namespace !== pc.metadata.namespace) continue;
      if (pod.spec?.nodeName !== this.o.nodeName || pod.spec?.hostNetwork) continue;
      if (pod.metadata?.deletionTimestamp || pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') continue;
      if (!selector.matches(pod.metadata?.labels ?? {})) continue;
      out.push(pod);
    }
    return out.sort((a, b) => (a.metadata?.name ?? '').localeCompare(b.metadata?.name ?? ''));
  }

  /** Writes this node's entry when it differs from what the API server has (debounced). */
  private async writeStatus(pc: PacketCapture, rt: Runtime, entry: NodeCaptureStatus | undefined): Promise<void> {
    const observed = pc.status?.files?.find((f) => f.node === this.o.nodeName);
    const others = (pc.status?.files ?? []).filter((f) => f.node !== this.o.nodeName);
    const summary = summarizeStates(entry ? [...others, entry] : others);
    const essential = (e: NodeCaptureStatus | undefined): string => (e ? JSON.stringify([e.state, e.directory, e.fileNames ?? [], e.message ?? '', e.pods ?? 0]) : 'none');
    const counters = entry ? JSON.stringify([entry.packets, entry.bytes, entry.kernelDrops]) : '';
    const observedCounters = observed ? JSON.stringify([observed.packets, observed.bytes, observed.kernelDrops]) : '';
    const essentialChange = essential(entry) !== essential(observed) || (entry !== undefined && pc.status?.summary !== summary);
    const counterChange = counters !== observedCounters;
    if (!essentialChange && !counterChange) return;
    const now = Date.now();
    const interval = essentialChange ? this.o.statusIntervalMs : COUNTER_STATUS_INTERVAL_MS;
    const wait = rt.lastWrite + interval - now;
    if (wait > 0) {
      // Debounced: come back when the interval is over (the pass then recomputes everything).
      if (!rt.writeTimer) {
        rt.writeTimer = setTimeout(() => {
          rt.writeTimer = undefined;
          this.schedule();
        }, wait);
      }
      return;
    }
    rt.lastWrite = now;
    try {
      await applyNodeStatus(this.o.kube, { namespace: pc.metadata.namespace, name: pc.metadata.name }, this.fieldManager, entry, entry ? summary : undefined);
    } catch (err) {
      this.o.log.warn({ capture: `${pc.metadata.namespace}/${pc.metadata.name}`, err: (err as Error).message }, 'status update failed; will retry');
    }
  }

  /** A capture that no longer exists: stop it and remove its files (Calico's behaviour). */
  private async forget(key: string, rt: Runtime): Promise<void> {
    this.runtimes.delete(key);
    clearTimeout(rt.writeTimer);
    await Promise.all([...rt.workers.values()].map((w) => w.stop()));
    const [namespace, name] = key.split('/') as [string, string];
    const removed = await this.o.store.removeAll(namespace, name);
    this.o.log.info({ capture: key, removed: removed.length }, 'capture deleted: stopped and files removed');
  }

  /** Files of captures that no longer exist (deleted while this agent was not running). */
  private async removeOrphanDirectories(live: Set<string>): Promise<void> {
    for (const ns of await readdir(this.o.captureDir).catch(() => [] as string[])) {
      for (const name of await readdir(join(this.o.captureDir, ns)).catch(() => [] as string[])) {
        const key = `${ns}/${name}`;
        if (live.has(key)) continue;
        try {
          this.o.store.captureDir(ns, name);
        } catch {
          continue; // not a capture directory of ours
        }
        const removed = await this.o.store.removeAll(ns, name);
        this.o.log.info({ capture: key, removed: removed.length }, 'files of a capture that no longer exists removed');
      }
    }
  }

  /** Records which capture (by uid) owns the directory; another uid's files are removed. */
  private async claimDirectory(dir: string, uid: string): Promise<void> {
    const marker = join(dir, UID_MARKER);
    const owner = await readFile(marker, 'utf8').catch(() => undefined);
    if (owner === uid) return;
    if (owner !== undefined) {
      await rm(dir, { recursive: true, force: true });
      this.o.log.info({ dir }, 'files of an earlier capture with the same name removed');
    }
    const exists = await readdir(dir).then(() => true, () => false);
    if (!exists) return; // created with the first worker
    await writeFile(marker, uid, { mode: 0o600 });
  }
}

async function defaultDiskFree(path: string): Promise<number> {
  const s = await statfs(path);
  return s.bavail * s.bsize;
}

function formatBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}
