// S3's errors as an export reports them (docs/export.md): the code kept, and whether another
// attempt could do better. Apart from s3-upload.ts, which loads the SDK, so that the exporter
// can read errors without it.
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
  if (err instanceof S3UploadError) return err;
  // An S3ServiceException, known by its shape: the SDK is not loaded by those who only read errors.
  if (err instanceof Error && '$fault' in err && '$metadata' in err) {
    const fault = (err as { $fault?: string }).$fault;
    return new S3UploadError(err.name, `${err.name}: ${err.message}`, !NOT_RETRYABLE.has(err.name) && fault === 'server');
  }
  return err instanceof Error ? err : new Error(String(err));
}

