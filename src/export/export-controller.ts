// The export controller (docs/export.md, "How an export runs"): while this gateway replica
// holds the Lease, it runs every PacketCaptureExport, the only writer of their status.
// Level-triggered like the status aggregator: an export's key is queued by any change to the
// export, to its capture or to the capture's reports, and working on it compares what is
// observed with what the status says — wait for the capture, start an attempt, or nothing
// (an attempt runs). An attempt runs beside the queue and says how it ended in the status;
// a retryable failure comes back after a back-off counted in the status (so a new leader
// counts on), a failure no retry can mend ends the export. An attempt found in the status
// as Uploading without a job here was interrupted (a replica died, the Lease moved): it is
// started again, its orphan multipart uploads aborted first. Nothing is reported Succeeded
// before the manifest, the last object, is in the bucket.
import type { Logger } from 'pino';
import type { ByteRate } from '../flow/byte-rate.js';
import type { CaptureCache } from '../gateway/capture-cache.js';
import type { CaptureFiles } from '../gateway/capture-files.js';
import { backoffDelay } from '../kube/backoff.js';
import type { KubeClient } from '../kube/client.js';
import { summarizeStates, type CaptureState, type PacketCapture } from '../kube/packetcapture.js';
import { entryOf } from '../kube/node-report.js';
import { Listeners } from '../kube/listeners.js';
import { objectKey, Reflector } from '../kube/reflector.js';
import { WorkQueue, type WorkResult } from '../kube/work-queue.js';
import { asFailure, ExportFailure, runAttempt } from './export-attempt.js';
import { PartPool } from './part-pool.js';
import { exportSettings, exportsPath, patchExportStatus, withCondition, type ExportedObject, type ExportStatus, type PacketCaptureExport } from './packetcapture-export.js';

export interface ExportMetrics {
  bytes(n: number): void;
  ended(result: 'succeeded' | 'failed' | 'retried'): void;
  running(n: number): void;
}

export interface ExportControllerOptions {
  kube: KubeClient;
  cache: CaptureCache;
  files: CaptureFiles;
  log: Logger;
  apiTimeoutMs: number;
  /** Exports uploading at once on this replica; more wait (Pending, reason Queued). */
  maxConcurrent: number;
  partSizeBytes: number;
  rate?: ByteRate;
  resyncMs: number;
  metrics?: ExportMetrics;
}

/** Parts in flight per upload: two keep the link busy while the next one fills. */
const QUEUE_SIZE = 2;
/** Attempts in all before a retryable failure fails the export. */
export const MAX_ATTEMPTS = 6;
const RETRY_BASE_MS = 5_000;
const RETRY_MAX_MS = 5 * 60_000;
/** How long an export may name a capture that does not exist yet (applied together, e.g. by GitOps). */
const CAPTURE_GRACE_MS = 2 * 60_000;
/** Progress (bytes) written to the status at most this often per export. */
const PROGRESS_INTERVAL_MS = 5_000;
const OVER: ReadonlySet<CaptureState | undefined> = new Set(['Finished', 'Error']);
/**
 * Objects listed in the status (the CRD's maxItems: 2 000 entries of about 200 bytes keep the
 * object far below etcd's limit). objectCount counts them all; the manifest lists them all. A
 * Continuous export resumed by a new leader uploads again the (immutable) files past these.
 */
export const MAX_STATUS_OBJECTS = 2000;

interface Job {
  uid: string;
  captureUID: string;
  abort: AbortController;
}

export class ExportController {
  private readonly exports: Reflector<PacketCaptureExport>;
  private readonly queue: WorkQueue;
  private readonly jobs = new Map<string, Job>();
  private readonly running = new Set<Promise<void>>();
  private readonly listeners = new Listeners();
  private timer: NodeJS.Timeout | undefined;
  private stopping = false;
  /** Every export's part buffers: (queue + 1) parts for each export uploading at once. */
  private readonly pool: PartPool;

  constructor(private readonly o: ExportControllerOptions) {
    this.pool = new PartPool(o.partSizeBytes, o.maxConcurrent * (QUEUE_SIZE + 1));
    this.exports = new Reflector<PacketCaptureExport>(o.kube, { path: exportsPath(), log: o.log.child({ watch: 'packetcaptureexports' }), timeoutMs: o.apiTimeoutMs * 6 });
    this.queue = new WorkQueue((key) => this.work(key), {
      concurrency: 4,
      slotTimeoutMs: 30_000,
      baseDelayMs: 1_000,
      maxDelayMs: 60_000,
      onError: (key, err, retryInMs) => o.log.warn({ export: key, err: (err as Error).message, retryInMs }, 'working on an export failed; will retry'),
    });
  }

  start(): void {
    this.exports.on('change', (_t, e) => (e ? this.queue.add(objectKey(e)) : this.enqueueAll()));
    this.exports.on('synced', () => this.enqueueAll());
    this.listeners.on(this.o.cache.captures, 'change', (_t: unknown, pc?: PacketCapture) => (pc ? this.enqueueCapture(objectKey(pc)) : this.enqueueAll()));
    this.listeners.on(this.o.cache.captures, 'synced', () => this.enqueueAll());
    this.listeners.on(this.o.cache, 'reports-changed', (key: string) => this.enqueueCapture(key));
    this.listeners.on(this.o.cache, 'reports-relisted', () => this.enqueueAll());
    this.exports.start();
    this.timer = setInterval(() => this.enqueueAll(), this.o.resyncMs);
  }

  /** Stops leading: attempts are cut without a word in the status (the next leader starts them again). */
  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.timer);
    this.listeners.offAll();
    for (const job of this.jobs.values()) job.abort.abort(new ExportFailure('LeaderChanged', 'this gateway replica stopped leading', true));
    await Promise.allSettled([...this.running]);
    await this.queue.shutDown();
    await this.exports.stop();
  }

  private enqueueAll(): void {
    for (const e of this.exports.items.values()) this.queue.add(objectKey(e));
  }

  private enqueueCapture(captureKey: string): void {
    for (const e of this.exports.items.values()) if (`${e.metadata.namespace}/${e.spec?.captureName}` === captureKey) this.queue.add(objectKey(e));
  }

  /** The capture is over on every node that reported it (Finished, or Error). */
  private finished(captureKey: string, uid: string): boolean {
    const entries = this.o.cache.reportsOf(captureKey).filter((r) => r.spec?.captureUID === uid && !r.metadata.deletionTimestamp).map(entryOf);
    return entries.length > 0 && entries.every((e) => OVER.has(e.state));
  }

  private async work(key: string): Promise<WorkResult | void> {
    if (!this.exports.synced || !this.o.cache.captures.synced || !this.o.cache.reports.synced) return; // "synced" queues everything
    const e = this.exports.items.get(key);
    const job = this.jobs.get(key);
    if (!e || e.metadata.deletionTimestamp) {
      job?.abort.abort(new ExportFailure('ExportDeleted', 'the export was deleted', false));
      return;
    }
    const s = exportSettings(e);
    const captureKey = `${e.metadata.namespace}/${s.captureName}`;
    const pc = this.o.cache.captures.items.get(captureKey);
    const recorded = job?.captureUID ?? e.status?.captureUID;
    if (job && job.uid !== e.metadata.uid) job.abort.abort(new ExportFailure('ExportDeleted', 'the export was deleted and created again', false));
    else if (job) {
      if (!pc || pc.metadata.uid !== job.captureUID) job.abort.abort(new ExportFailure('CaptureDeleted', `the PacketCapture ${s.captureName} was deleted during the export`, false));
      return;
    }
    const phase = e.status?.phase;
    if (phase === 'Succeeded' || phase === 'Failed') return;
    if (recorded && (!pc || pc.metadata.uid !== recorded)) {
      await this.fail(e, new ExportFailure('CaptureDeleted', `the PacketCapture ${s.captureName} was deleted during the export`, false));
      return;
    }
    if (!pc) {
      const age = Date.now() - Date.parse(e.metadata.creationTimestamp ?? new Date().toISOString());
      if (age < CAPTURE_GRACE_MS) {
        await this.pending(e, 'CaptureNotFound', `waiting for the PacketCapture ${s.captureName} to exist`);
        return { requeueAfterMs: Math.min(CAPTURE_GRACE_MS - age + 100, 10_000) };
      }
      await this.fail(e, new ExportFailure('CaptureNotFound', `no PacketCapture ${s.captureName} in namespace ${e.metadata.namespace}`, false));
      return;
    }
    const uid = pc.metadata.uid ?? '';
    if (s.when === 'OnFinish' && !this.finished(captureKey, uid)) {
      const states = this.o.cache.reportsOf(captureKey).filter((r) => r.spec?.captureUID === uid).map(entryOf);
      // The capture is recorded while waiting: deleted before it finishes, the export fails.
      await this.pending(e, 'WaitingForCapture', `waiting for the capture to finish on every node${states.length > 0 ? ` (${summarizeStates(states)})` : ''}`, { captureUID: uid });
      return;
    }
    const attempts = e.status?.attempts ?? 0;
    const last = Date.parse(e.status?.lastAttemptTime ?? '');
    if (phase === 'Pending' && attempts > 0 && Number.isFinite(last)) {
      const wait = last + backoffDelay(attempts - 1, RETRY_BASE_MS, RETRY_MAX_MS) - Date.now();
      if (wait > 0) return { requeueAfterMs: wait };
    }
    if (this.jobs.size >= this.o.maxConcurrent) {
      await this.pending(e, 'Queued', `waiting for a place: ${this.jobs.size} exports are uploading on this gateway replica`);
      return { requeueAfterMs: 5_000 };
    }
    await this.begin(e, uid, attempts, phase === 'Uploading');
  }

  private async begin(e: PacketCaptureExport, captureUID: string, attempts: number, interrupted: boolean): Promise<void> {
    const key = objectKey(e);
    const s = exportSettings(e);
    const now = new Date();
    const continuous = s.when === 'Continuous';
    const reason = interrupted ? 'Resumed' : attempts > 0 ? 'Retrying' : 'Started';
    const started = await this.decide(e, {
      phase: 'Uploading',
      message: interrupted ? 'an interrupted attempt is started again' : `uploading to s3://${s.s3.bucket}/${s.keyPrefix}`,
      destination: `s3://${s.s3.bucket}/${s.keyPrefix}`,
      captureUID,
      attempts: attempts + 1,
      lastAttemptTime: now.toISOString(),
      startTime: e.status?.startTime ?? now.toISOString(),
      // A Continuous export keeps what earlier attempts wrote; any other starts over.
      ...(continuous ? {} : { objects: null, objectCount: 0, bytes: 0, packets: null, manifestKey: null }),
      conditions: withCondition(e.status?.conditions, { type: 'Uploading', status: 'True', reason, message: `attempt ${attempts + 1}` }, now),
    });
    if (!started) return;
    if (interrupted) this.o.log.info({ export: key, attempt: attempts + 1 }, 'an export attempt was interrupted (a replica stopped); starting it again');
    const job: Job = { uid: e.metadata.uid ?? '', captureUID, abort: new AbortController() };
    this.jobs.set(key, job);
    this.o.metrics?.running(this.jobs.size);
    const run = this.run(e, job, attempts + 1).finally(() => {
      this.jobs.delete(key);
      this.running.delete(run);
      this.o.metrics?.running(this.jobs.size);
      this.queue.add(key);
    });
    this.running.add(run);
  }

  private async run(e: PacketCaptureExport, job: Job, attempt: number): Promise<void> {
    const key = objectKey(e);
    const s = exportSettings(e);
    const done: ExportedObject[] = s.when === 'Continuous' ? [...(e.status?.objects ?? [])] : [];
    let bytes = s.when === 'Continuous' ? done.reduce((sum, o) => sum + o.size, 0) : 0;
    let lastProgress = Date.now();
    let progress: Promise<unknown> = Promise.resolve();
    const recorded = [...done];
    this.o.log.info({ export: key, capture: s.captureName, format: s.format, when: s.when, attempt, destination: `s3://${s.s3.bucket}/${s.keyPrefix}` }, 'export attempt started');
    try {
      const result = await runAttempt({ kube: this.o.kube, files: this.o.files, log: this.o.log, apiTimeoutMs: this.o.apiTimeoutMs, partSizeBytes: this.o.partSizeBytes, queueSize: QUEUE_SIZE, rate: this.o.rate, pool: this.pool }, {
        exp: e,
        settings: s,
        captureUID: job.captureUID,
        done,
        signal: job.abort.signal,
        finished: () => this.finished(`${e.metadata.namespace}/${s.captureName}`, job.captureUID),
        onBytes: (n) => {
          bytes += n;
          this.o.metrics?.bytes(n);
          if (Date.now() - lastProgress < PROGRESS_INTERVAL_MS || this.stopping) return;
          lastProgress = Date.now();
          progress = progress.then(() => this.write(e, { bytes }).catch(() => undefined));
        },
        onObject: async (o) => {
          if (s.when !== 'Continuous' || this.stopping) return;
          recorded.push(o);
          // Recorded as each completes: a new leader does not upload it again.
          await this.write(e, { objects: recorded.slice(0, MAX_STATUS_OBJECTS), objectCount: recorded.length, bytes: recorded.reduce((sum, x) => sum + x.size, 0) });
        },
      });
      await progress;
      if (this.stopping) return;
      const now = new Date();
      let conditions = withCondition(e.status?.conditions, { type: 'Uploading', status: 'False', reason: 'Complete', message: `attempt ${attempt}` }, now);
      conditions = withCondition(conditions, { type: 'Succeeded', status: 'True', reason: 'Complete', message: `${result.objects.length} object(s) and the manifest` }, now);
      await this.write(e, {
        phase: 'Succeeded',
        message: `${result.objects.length} object(s), ${result.bytes} bytes${result.packets !== undefined ? `, ${result.packets} packets` : ''}${result.missing.length > 0 ? `; left out: ${result.missing.map((m) => m.node).join(', ')}` : ''}; manifest ${result.manifestKey}`,
        completionTime: now.toISOString(),
        objects: result.objects.slice(0, MAX_STATUS_OBJECTS),
        objectCount: result.objects.length,
        bytes: result.bytes,
        packets: result.packets ?? null,
        manifestKey: result.manifestKey,
        conditions,
      });
      this.o.metrics?.ended('succeeded');
      this.o.log.info({ export: key, objects: result.objects.length, bytes: result.bytes, packets: result.packets }, 'export succeeded');
    } catch (err) {
      await progress;
      const f = asFailure(err, job.abort.signal);
      if (this.stopping || f.reason === 'ExportDeleted') {
        this.o.log.info({ export: key, reason: f.reason }, 'export attempt stopped');
        return;
      }
      if (f.retryable && attempt < MAX_ATTEMPTS) {
        const retryIn = backoffDelay(attempt - 1, RETRY_BASE_MS, RETRY_MAX_MS);
        this.o.log.warn({ export: key, attempt, reason: f.reason, err: f.message, retryInMs: retryIn }, 'export attempt failed; will retry');
        await this.write(e, {
          phase: 'Pending',
          message: `attempt ${attempt} of ${MAX_ATTEMPTS} failed (${f.reason}: ${f.message}); retrying in ${Math.round(retryIn / 1000)} s`,
          conditions: withCondition(e.status?.conditions, { type: 'Uploading', status: 'False', reason: f.reason, message: f.message.slice(0, 4000) }, new Date()),
        }).catch(() => undefined);
        this.o.metrics?.ended('retried');
        this.queue.addAfter(key, retryIn);
        return;
      }
      await this.fail(e, f, false);
    }
  }

  private async pending(e: PacketCaptureExport, reason: string, message: string, extra: Partial<ExportStatus> = {}): Promise<void> {
    const st = e.status;
    const cond = st?.conditions?.find((c) => c.type === 'Uploading');
    if (st?.phase === 'Pending' && st.message === message && cond?.reason === reason && (extra.captureUID === undefined || st.captureUID === extra.captureUID)) return;
    await this.decide(e, { ...extra, phase: 'Pending', message, destination: `s3://${e.spec.destination.s3.bucket}/${exportSettings(e).keyPrefix}`, conditions: withCondition(st?.conditions, { type: 'Uploading', status: 'False', reason, message }, new Date()) });
  }

  /** Fails the export: from work() on what the watch showed (`decided`), or from an attempt's end. */
  private async fail(e: PacketCaptureExport, f: ExportFailure, decided = true): Promise<void> {
    const now = new Date();
    let conditions = withCondition(e.status?.conditions, { type: 'Uploading', status: 'False', reason: f.reason, message: f.message.slice(0, 4000) }, now);
    conditions = withCondition(conditions, { type: 'Failed', status: 'True', reason: f.reason, message: f.message.slice(0, 4000) }, now);
    const status = { phase: 'Failed', message: `${f.reason}: ${f.message}`.slice(0, 4000), completionTime: now.toISOString(), conditions };
    if (!(await (decided ? this.decide(e, status) : this.write(e, status)))) return;
    this.o.metrics?.ended('failed');
    this.o.log.warn({ export: objectKey(e), reason: f.reason, err: f.message }, 'export failed');
  }

  /** An attempt's own writes: its export may have changed since (by this attempt's writes). */
  private async write(e: PacketCaptureExport, status: Partial<Record<keyof ExportStatus, unknown>>): Promise<boolean> {
    return patchExportStatus(this.o.kube, e, { ...status, observedGeneration: e.metadata.generation ?? null }, this.o.apiTimeoutMs);
  }

  /** A decision made on what the watch showed: written only if the export is still as seen (else the newer version is queued). */
  private async decide(e: PacketCaptureExport, status: Partial<Record<keyof ExportStatus, unknown>>): Promise<boolean> {
    return patchExportStatus(this.o.kube, e, { ...status, observedGeneration: e.metadata.generation ?? null }, this.o.apiTimeoutMs, e.metadata.resourceVersion);
  }
}
