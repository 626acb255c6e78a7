// One object into S3-compatible storage, streamed (docs/export.md, "Uploading"): a multipart
// upload with a bounded number of parts in flight, so memory is partSize x queueSize whatever
// the capture's size, never the whole object in memory or on disk. Size and SHA-256 are
// counted on the way, for the export's status and manifest. A failure of the source or of
// the server aborts the multipart upload, so no orphan parts are left to pay for.
//
// This module loads the AWS SDK (about 33 MiB of a process's RSS): the exporter imports it
// when an export runs, so a gateway that never exports does not carry it.
import { createHash } from 'node:crypto';
import { pipeline, type Readable } from 'node:stream';
import { chunkTap } from '../flow/chunk-tap.js';
import { PartPool } from './part-pool.js';
import { asUploadError } from './s3-errors.js';

export { S3UploadError, asUploadError } from './s3-errors.js';
export { PartPool } from './part-pool.js';
import { AbortMultipartUploadCommand, CompleteMultipartUploadCommand, CreateMultipartUploadCommand, ListMultipartUploadsCommand, PutObjectCommand, S3Client, S3ServiceException, UploadPartCommand } from '@aws-sdk/client-s3';

export interface S3Destination {
  /** Absent: AWS's endpoint for the region. */
  endpoint?: string;
  region: string;
  bucket: string;
  forcePathStyle?: boolean;
  serverSideEncryption?: { type: 'AES256' | 'aws:kms'; kmsKeyId?: string };
}

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

/**
 * A client for one destination. Without credentials, the SDK's default chain (IRSA's web
 * identity token, workload identity, the instance's role). Checksums only where the API
 * requires them: several S3-compatible servers refuse the SDK's default CRC trailers, and
 * every object's SHA-256 is computed here anyway.
 */
export function s3Client(dest: S3Destination, credentials?: S3Credentials): S3Client {
  return new S3Client({
    region: dest.region,
    ...(dest.endpoint ? { endpoint: dest.endpoint } : {}),
    forcePathStyle: dest.forcePathStyle ?? false,
    ...(credentials ? { credentials } : {}),
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 4,
  });
}

export interface UploadOptions {
  contentType: string;
  /** 5 MiB at least (S3's minimum part); 8 MiB by default. */
  partSizeBytes?: number;
  /** Parts in flight at once; memory is about partSizeBytes x (queueSize + 1). */
  queueSize?: number;
  signal?: AbortSignal;
  onBytes?: (n: number) => void;
  /** The replica's part buffers (its partSize must be this upload's); else the upload's own. */
  pool?: PartPool;
}

export interface Uploaded {
  key: string;
  size: number;
  sha256: string;
}

/**
 * Streams `body` into `key`: one PUT when it fits in a part, else a multipart upload whose
 * parts are filled in pooled buffers and sent `queueSize` at a time. lib-storage's `Upload`
 * did the same with a new buffer per part (and a copy to join its chunks): measured in
 * bench:export, the gateway's RSS peaked at 242 MiB with 16 MiB parts against 99 idle; these
 * pooled parts held it at 147 (153 with the zstd merge), and at 126-147 with 8 MiB parts; the
 * gateway's CPU per GiB fell from 12-16 to 4-9 s.
 */
export async function uploadStream(client: S3Client, dest: S3Destination, key: string, body: Readable, opts: UploadOptions): Promise<Uploaded> {
  const partSize = Math.max(opts.partSizeBytes ?? 8 * 1024 * 1024, 5 * 1024 * 1024);
  const queueSize = Math.max(1, opts.queueSize ?? 2);
  const pool = opts.pool && opts.pool.partSize === partSize ? opts.pool : new PartPool(partSize, queueSize + 1);
  const hash = createHash('sha256');
  let size = 0;
  const counted = chunkTap((chunk) => {
    hash.update(chunk);
    size += chunk.length;
    opts.onBytes?.(chunk.length);
  });
  // Either side failing ends both: the source's error reaches the upload, a failed upload closes the source.
  pipeline(body, counted, () => undefined);
  const params = {
    Bucket: dest.bucket,
    Key: key,
    ...(dest.serverSideEncryption ? { ServerSideEncryption: dest.serverSideEncryption.type, ...(dest.serverSideEncryption.kmsKeyId ? { SSEKMSKeyId: dest.serverSideEncryption.kmsKeyId } : {}) } : {}),
  };
  const send = { abortSignal: opts.signal };
  let uploadId: string | undefined;
  const parts: { ETag: string; PartNumber: number }[] = [];
  const inFlight = new Set<Promise<void>>();
  let failed: unknown;
  let held: Buffer | undefined;
  const sendPart = async (buf: Buffer, length: number): Promise<void> => {
    uploadId ??= (await client.send(new CreateMultipartUploadCommand({ ...params, ContentType: opts.contentType }), send)).UploadId;
    const PartNumber = parts.length + inFlight.size + 1;
    const p: Promise<void> = client.send(new UploadPartCommand({ Bucket: dest.bucket, Key: key, UploadId: uploadId, PartNumber, Body: buf.subarray(0, length), ContentLength: length }), send)
      .then((r) => {
        parts.push({ ETag: r.ETag ?? '', PartNumber });
      }, (err: unknown) => {
        failed ??= err;
      })
      .finally(() => {
        inFlight.delete(p);
        pool.give(buf);
      });
    inFlight.add(p);
    while (inFlight.size >= queueSize) await Promise.race(inFlight);
    if (failed) throw failed;
  };
  try {
    held = await pool.take();
    let fill = 0;
    for await (const chunk of counted as AsyncIterable<Buffer>) {
      for (let off = 0; off < chunk.length;) {
        const n = Math.min(partSize - fill, chunk.length - off);
        chunk.copy(held, fill, off, off + n);
        fill += n;
        off += n;
        if (fill === partSize) {
          const full = held;
          held = undefined;
          await sendPart(full, fill);
          held = await pool.take();
          fill = 0;
        }
      }
    }
    if (uploadId === undefined) {
      await client.send(new PutObjectCommand({ ...params, ContentType: opts.contentType, Body: held.subarray(0, fill), ContentLength: fill }), send);
    } else {
      const last = held;
      held = undefined;
      if (fill > 0) await sendPart(last, fill);
      else pool.give(last);
      await Promise.all(inFlight);
      if (failed) throw failed;
      parts.sort((a, b) => a.PartNumber - b.PartNumber);
      await client.send(new CompleteMultipartUploadCommand({ Bucket: dest.bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: parts } }), send);
    }
  } catch (err) {
    counted.destroy();
    await Promise.allSettled(inFlight);
    // No orphan parts: the multipart upload is aborted whatever failed (not with the caller's signal, which may be why).
    if (uploadId !== undefined) await client.send(new AbortMultipartUploadCommand({ Bucket: dest.bucket, Key: key, UploadId: uploadId })).catch(() => undefined);
    throw asUploadError(opts.signal?.aborted && !(err instanceof S3ServiceException) ? (opts.signal.reason ?? err) : err);
  } finally {
    if (held) pool.give(held);
  }
  return { key, size, sha256: hash.digest('hex') };
}

/**
 * Aborts the multipart uploads under `prefix` whose keys `owns` (an interrupted attempt's: a
 * replica killed mid-upload cannot abort its own). Returns how many.
 */
export async function abortOrphanUploads(client: S3Client, bucket: string, prefix: string, owns: (key: string) => boolean): Promise<number> {
  let keyMarker: string | undefined;
  let uploadIdMarker: string | undefined;
  let aborted = 0;
  try {
    for (;;) {
      const page = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }));
      for (const u of page.Uploads ?? []) {
        if (!u.Key || !u.UploadId || !owns(u.Key)) continue;
        await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId }));
        aborted++;
      }
      if (!page.IsTruncated) return aborted;
      keyMarker = page.NextKeyMarker;
      uploadIdMarker = page.NextUploadIdMarker;
    }
  } catch (err) {
    throw asUploadError(err);
  }
}
