// One object into S3-compatible storage, streamed (docs/export.md, "Uploading"): a multipart
// upload with a bounded number of parts in flight, so memory is partSize x queueSize whatever
// the capture's size, never the whole object in memory or on disk. Size and SHA-256 are
// counted on the way, for the export's status and manifest. A failure of the source or of
// the server aborts the multipart upload, so no orphan parts are left to pay for.
import { createHash } from 'node:crypto';
import { pipeline, type Readable } from 'node:stream';
import { chunkTap } from '../flow/chunk-tap.js';
import { S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';

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
  /** 5 MiB at least (S3's minimum part); 16 MiB by default. */
  partSizeBytes?: number;
  /** Parts in flight at once; memory is about partSizeBytes x (queueSize + 1). */
  queueSize?: number;
  signal?: AbortSignal;
  onBytes?: (n: number) => void;
}

export interface Uploaded {
  key: string;
  size: number;
  sha256: string;
}

/** An S3 error as a user reads it: its code (NoSuchBucket, InvalidAccessKeyId, ...) and message. */
export class S3UploadError extends Error {
  constructor(readonly code: string, message: string, readonly retryable: boolean) {
    super(message);
    this.name = 'S3UploadError';
  }
}

const NOT_RETRYABLE = new Set(['NoSuchBucket', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'InvalidBucketName', 'AllAccessDisabled', 'InvalidArgument', 'KMS.NotFoundException']);

/** An SDK error as an S3UploadError (its S3 code kept), anything else as it is. */
export function asUploadError(err: unknown): Error {
  if (err instanceof S3ServiceException) return new S3UploadError(err.name, `${err.name}: ${err.message}`, !NOT_RETRYABLE.has(err.name) && err.$fault === 'server');
  return err instanceof Error ? err : new Error(String(err));
}

export async function uploadStream(client: S3Client, dest: S3Destination, key: string, body: Readable, opts: UploadOptions): Promise<Uploaded> {
  const hash = createHash('sha256');
  let size = 0;
  const counted = chunkTap((chunk) => {
    hash.update(chunk);
    size += chunk.length;
    opts.onBytes?.(chunk.length);
  });
  // Either side failing ends both: the source's error reaches the upload, a failed upload closes the source.
  pipeline(body, counted, () => undefined);
  const upload = new Upload({
    client,
    params: {
      Bucket: dest.bucket,
      Key: key,
      Body: counted,
      ContentType: opts.contentType,
      ...(dest.serverSideEncryption ? { ServerSideEncryption: dest.serverSideEncryption.type, ...(dest.serverSideEncryption.kmsKeyId ? { SSEKMSKeyId: dest.serverSideEncryption.kmsKeyId } : {}) } : {}),
    },
    partSize: Math.max(opts.partSizeBytes ?? 16 * 1024 * 1024, 5 * 1024 * 1024),
    queueSize: opts.queueSize ?? 2,
    // On any failure the multipart upload is aborted: no orphan parts.
    leavePartsOnError: false,
  });
  const onAbort = (): void => void upload.abort().catch(() => undefined);
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    await upload.done();
  } catch (err) {
    counted.destroy();
    throw asUploadError(err);
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
  return { key, size, sha256: hash.digest('hex') };
}
