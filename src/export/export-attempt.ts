// One attempt at an export (docs/export.md, "How an export runs"): credentials read, orphan
// multipart uploads of an interrupted attempt aborted, the capture's files pinned as a
// download pins them, each object streamed into the bucket, the manifest last. An attempt
// either returns everything it wrote or throws an ExportFailure saying why and whether
// another attempt could do better; a half-written object is never reported.
import { setTimeout as delay } from 'node:timers/promises';
import type { S3Client } from '@aws-sdk/client-s3';
import type { Logger } from 'pino';
import type { ByteRate } from '../flow/byte-rate.js';
import { rateLimited } from '../flow/byte-rate.js';
import type { CaptureFiles, FoundCapture, MissingNode, NodeFiles } from '../gateway/capture-files.js';
import { DownloadPins } from '../gateway/download-pins.js';
import { HttpError } from '../http/status.js';
import { KubeApiError, KubeUnavailableError, type KubeClient } from '../kube/client.js';
import type { CaptureState } from '../kube/packetcapture.js';
import { contentTypeOf, fileKey, manifestKey, ownsKey, planObjects, type FileRecord, type PlannedObject } from './export-objects.js';
import { buildManifest } from './manifest.js';
import type { ExportedObject, ExportSettings, PacketCaptureExport } from './packetcapture-export.js';
import type { PartPool } from './part-pool.js';
import { asUploadError, S3UploadError } from './s3-errors.js';
import type { S3Credentials, S3Destination } from './s3-upload.js';
import { pipeline, Readable } from 'node:stream';

/** Why an attempt ended short, in the export's condition's words. */
export class ExportFailure extends Error {
  constructor(readonly reason: string, message: string, readonly retryable: boolean) {
    super(message);
    this.name = 'ExportFailure';
  }
}

export interface AttemptDeps {
  kube: KubeClient;
  files: CaptureFiles;
  log: Logger;
  apiTimeoutMs: number;
  partSizeBytes: number;
  queueSize: number;
  rate?: ByteRate;
  /** The replica's part buffers (s3-upload.ts). */
  pool?: PartPool;
  /** The SDK client for a destination (a test of the fault paths may wrap it). */
  client?: (dest: S3Destination, creds: S3Credentials | undefined) => S3Client;
}

export interface AttemptInput {
  exp: PacketCaptureExport;
  settings: ExportSettings;
  captureUID: string;
  /** Objects already written by earlier attempts (a Continuous export's), not written again. */
  done: ExportedObject[];
  signal: AbortSignal;
  onBytes(n: number): void;
  /** Each object as it completes (a Continuous export records it at once). */
  onObject(o: ExportedObject): Promise<void>;
  /** Whether the capture is over on every node (for Continuous: when to stop). */
  finished(): boolean;
}

export interface AttemptResult {
  objects: ExportedObject[];
  manifestKey: string;
  bytes: number;
  packets: number | undefined;
  missing: Problem[];
}

/** A node, or one of its files, left out of the export, and why (the manifest lists them). */
export interface Problem {
  node: string;
  problem: string;
  why: string;
}

/** A rotated file, closed for good: `<pod>_<iface>-<unixMicros>.pcap`. The file being written has no timestamp. */
const ROTATED = /_[^_]+-\d{10,20}\.pcap$/;
const OVER: ReadonlySet<CaptureState | undefined> = new Set(['Finished', 'Error']);

export async function runAttempt(d: AttemptDeps, a: AttemptInput): Promise<AttemptResult> {
  const { exp, settings: s } = a;
  const { namespace } = exp.metadata;
  const startTime = new Date();
  const creds = await readCredentials(d, namespace, s.s3.credentials?.secretRef?.name);
  const dest: S3Destination = {
    ...(s.s3.endpoint ? { endpoint: s.s3.endpoint } : {}),
    region: s.s3.region ?? 'us-east-1',
    bucket: s.s3.bucket,
    forcePathStyle: s.s3.forcePathStyle ?? false,
    ...(s.s3.serverSideEncryption ? { serverSideEncryption: s.s3.serverSideEncryption } : {}),
  };
  // Loaded with the first export (the SDK is a third of an idle gateway's memory).
  const { abortOrphanUploads, s3Client, uploadStream } = await import('./s3-upload.js');
  const client = (d.client ?? s3Client)(dest, creds);
  try {
    await abortOrphans(d, () => abortOrphanUploads(client, s.s3.bucket, s.keyPrefix, (key) => ownsKey(s, key)), exp);
    const written: (ExportedObject & { contentType: string })[] = [];
    const records: FileRecord[] = [];
    const missing: Problem[] = [];
    const upload = async (o: PlannedObject): Promise<void> => {
      a.signal.throwIfAborted();
      const body = await o.open(a.signal);
      // Joined both ways: a failed upload closes the agents' bodies at once (an unread body
      // would otherwise time out later, an error with no one listening).
      const limited = rateLimited(d.rate);
      pipeline(body, limited, () => undefined);
      const up = await uploadStream(client, dest, o.key, limited, { contentType: o.contentType, partSizeBytes: d.partSizeBytes, queueSize: d.queueSize, signal: a.signal, onBytes: a.onBytes, pool: d.pool });
      const obj: ExportedObject = { key: up.key, size: up.size, sha256: up.sha256, ...(o.tally().packets !== undefined ? { packets: o.tally().packets } : {}) };
      written.push({ ...obj, contentType: o.contentType });
      records.push(...o.files);
      await a.onObject(obj);
    };
    if (s.when === 'Continuous') {
      await continuous(d, a, upload, missing);
    } else {
      const pinned = await pin(d, a, await find(d, a), s.partial);
      missing.push(...pinned.missing);
      try {
        for (const o of planObjects(s, pinned, d.files)) await upload(o);
      } finally {
        await pinned.pins.releaseAll();
      }
    }
    // Objects written by an earlier attempt (Continuous) are in the manifest too, as recorded.
    const all = [...a.done.map((o) => ({ ...o, contentType: contentTypeOf(o.key) })), ...written];
    const manifest = buildManifest({ exp, settings: s, captureUID: a.captureUID, objects: all, files: [...recordsOf(a.done), ...records], missing, startTime, completionTime: new Date() });
    const key = manifestKey(s);
    await uploadStream(client, dest, key, Readable.from([Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`)]), { contentType: 'application/json', signal: a.signal, partSizeBytes: d.partSizeBytes, pool: d.pool });
    return { objects: all.map(({ contentType: _, ...o }) => o), manifestKey: key, bytes: manifest.bytes, packets: manifest.packets ?? undefined, missing };
  } catch (err) {
    throw asFailure(err, a.signal);
  } finally {
    client.destroy();
  }
}

/**
 * Continuous: each closed file uploaded once its node's report lists it (rotated files while
 * the capture runs, the files being written once their node is over), until the capture is
 * over on every node and nothing is left. Only nodes with something new are pinned. A file
 * listed but gone from its node before its turn (the node's file budget pruned it) is named
 * in the manifest, not waited for.
 */
async function continuous(d: AttemptDeps, a: AttemptInput, upload: (o: PlannedObject) => Promise<void>, missing: Problem[]): Promise<void> {
  const s = a.settings;
  const done = new Set(a.done.map((o) => o.key));
  const tickMs = Math.min(Math.max(s.continuousDelayMs / 4, 1000), 15_000);
  const closed = (state: CaptureState | undefined, name: string): boolean => ROTATED.test(name) || OVER.has(state);
  const pending = (node: string, state: CaptureState | undefined, name: string): boolean => closed(state, name) && !done.has(fileKey(s, node, name));
  for (;;) {
    a.signal.throwIfAborted();
    // Read before looking: what a node lists after it is over is its last.
    const over = a.finished();
    const found = await find(d, a);
    const fresh = found.entries.filter((e) => (e.fileNames ?? []).some((f) => pending(e.node, e.state, f)));
    if (fresh.length === 0 && over) return;
    if (fresh.length > 0) {
      const pinned = await pin(d, a, { pc: found.pc, entries: fresh }, true);
      try {
        if (pinned.missing.length > 0 && !s.partial) throw new ExportFailure('AgentsUnavailable', `cannot read the files of ${pinned.missing.map((m) => `${m.node} (${m.why})`).join('; ')}`, true);
        // partial: an unreachable node is tried again while the capture runs, left out once it is over.
        if (over) {
          for (const m of pinned.missing) {
            missing.push(m);
            for (const f of fresh.find((e) => e.node === m.node)?.fileNames ?? []) done.add(fileKey(s, m.node, f));
          }
        }
        const stateOf = new Map(pinned.nodes.map((n) => [n.node, n.state]));
        for (const e of fresh) {
          const node = pinned.nodes.find((n) => n.node === e.node);
          if (!node) continue;
          const held = new Set(node.files.map((f) => f.name));
          for (const f of e.fileNames ?? []) {
            if (!pending(e.node, e.state, f) || held.has(f)) continue;
            done.add(fileKey(s, e.node, f));
            missing.push({ node: e.node, problem: 'FileGone', why: `${f} was removed from the node (its file budget) before it could be uploaded` });
          }
        }
        for (const o of planObjects(s, pinned, d.files, (node, f) => pending(node, stateOf.get(node), f.name))) {
          await upload(o);
          done.add(o.key);
        }
      } finally {
        await pinned.pins.releaseAll();
      }
    }
    if (!over) await delay(tickMs, undefined, { signal: a.signal });
  }
}

async function find(d: AttemptDeps, a: AttemptInput): Promise<FoundCapture> {
  const found = await d.files.find(a.exp.metadata.namespace, a.settings.captureName);
  if (found.pc.metadata.uid !== a.captureUID) throw new ExportFailure('CaptureDeleted', `the PacketCapture ${a.settings.captureName} was deleted (a new one has its name)`, false);
  return found;
}

async function pin(d: AttemptDeps, a: AttemptInput, found: FoundCapture, partial: boolean): Promise<{ namespace: string; capture: string; nodes: NodeFiles[]; missing: MissingNode[]; pins: DownloadPins }> {
  const { namespace } = a.exp.metadata;
  const capture = a.settings.captureName;
  const { nodes, missing } = partial ? await d.files.collectReachable(found, { pin: true, signal: a.signal }) : { nodes: await d.files.collect(found, { pin: true, signal: a.signal }), missing: [] };
  const pins = new DownloadPins(d.files, namespace, capture, nodes, d.log);
  pins.start();
  return { namespace, capture, nodes, missing, pins };
}

/**
 * The credentials Secret, read with the gateway's own identity: the namespace's owner lets it
 * read this one Secret (rbac-examples/export-credentials.yaml). Its values are never logged.
 */
async function readCredentials(d: AttemptDeps, namespace: string, secret: string | undefined): Promise<S3Credentials | undefined> {
  if (!secret) return undefined;
  let data: Record<string, string> | undefined;
  try {
    const s = await d.kube.request<{ data?: Record<string, string> }>({ path: `/api/v1/namespaces/${encodeURIComponent(namespace)}/secrets/${encodeURIComponent(secret)}`, timeoutMs: d.apiTimeoutMs });
    data = s.data;
  } catch (err) {
    if (err instanceof KubeApiError && (err.status === 403 || err.status === 404)) {
      const why = err.status === 404 ? 'does not exist' : 'may not be read by kube-pcap\'s gateway (bind it a Role with resourceNames for this Secret: rbac-examples/export-credentials.yaml)';
      throw new ExportFailure('CredentialsUnavailable', `the Secret ${namespace}/${secret} ${why}`, true);
    }
    throw err;
  }
  const value = (k: string): string | undefined => (data?.[k] ? Buffer.from(data[k], 'base64').toString('utf8').trim() : undefined);
  const accessKeyId = value('AWS_ACCESS_KEY_ID');
  const secretAccessKey = value('AWS_SECRET_ACCESS_KEY');
  if (!accessKeyId || !secretAccessKey) throw new ExportFailure('CredentialsInvalid', `the Secret ${namespace}/${secret} must hold AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY`, false);
  const sessionToken = value('AWS_SESSION_TOKEN');
  return { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) };
}

/**
 * The multipart uploads an interrupted attempt left (a replica killed mid-upload cannot abort
 * its own): aborted before anything is written again, so no orphan parts stay to be paid
 * for. Only this export's keys; a listing refused by the bucket's policy is logged, not fatal.
 */
async function abortOrphans(d: AttemptDeps, abort: () => Promise<number>, exp: PacketCaptureExport): Promise<void> {
  let aborted: number;
  try {
    aborted = await abort();
  } catch (err) {
    const failure = asFailure(err);
    if (!failure.retryable && failure.reason !== 'AccessDenied') throw failure;
    d.log.warn({ export: `${exp.metadata.namespace}/${exp.metadata.name}`, err: failure.message }, 'cannot list the bucket\'s multipart uploads; an interrupted attempt\'s parts may be left for the bucket\'s lifecycle rule');
    return;
  }
  if (aborted > 0) d.log.info({ export: `${exp.metadata.namespace}/${exp.metadata.name}`, aborted }, 'aborted the multipart uploads of an interrupted attempt');
}

/** An error as the export's condition tells it. */
export function asFailure(err: unknown, signal?: AbortSignal): ExportFailure {
  if (err instanceof ExportFailure) return err;
  if (signal?.aborted && signal.reason instanceof ExportFailure) return signal.reason;
  const s3 = asUploadError(err);
  if (s3 instanceof S3UploadError) return new ExportFailure(s3.code, s3.message, s3.retryable);
  if (err instanceof HttpError) {
    if (err.code === 404) return new ExportFailure('CaptureNotFound', err.message, false);
    return new ExportFailure(err.code === 503 ? 'AgentsBusy' : 'AgentsUnavailable', err.message, true);
  }
  if (err instanceof KubeUnavailableError) return new ExportFailure('APIServerUnavailable', err.message, true);
  const e = err instanceof Error ? err : new Error(String(err));
  const code = (e as { code?: string }).code;
  return new ExportFailure(code && /^E[A-Z]+$/.test(code) ? 'EndpointUnreachable' : 'UploadFailed', `${code ? `${code}: ` : ''}${e.message}`.slice(0, 1000), true);
}

/** Node files as their keys name them (objects an earlier attempt of a files export wrote). */
function recordsOf(objects: ExportedObject[]): FileRecord[] {
  return objects.flatMap((o) => {
    const m = /([^/]+)\/([^/]+\.pcap)(?:\.zst|\.gz)?$/.exec(o.key);
    return m ? [{ node: m[1]!, name: m[2]!, size: o.size, modified: '', key: o.key, ...(o.packets !== undefined ? { packets: o.packets } : {}) }] : [];
  });
}
