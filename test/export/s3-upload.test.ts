// src/export/s3-upload.ts against a real S3-compatible server (SeaweedFS, test/harness/
// s3-server.ts) with the real AWS SDK: a capture streamed into a multipart upload is read back
// byte for byte (size and SHA-256 as counted on the way, and tshark reads it); a source that
// fails mid-way leaves no multipart upload behind; wrong credentials, a missing bucket and an
// identity that may not write fail with the server's S3 error code, not retried.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import t from 'tap';
import { CreateBucketCommand, GetObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { s3Client, S3UploadError, uploadStream, type S3Destination } from '../../src/export/s3-upload.js';
import { writeRealisticPcap } from '../../bench/realistic-traffic.js';
import { run } from '../harness/http.js';
import { scratchDir } from '../harness/kube-pcap.js';
import { startS3Server } from '../harness/s3-server.js';

const s3 = await startS3Server(t);
const dest: S3Destination = { endpoint: s3.endpoint, region: s3.region, bucket: 'captures', forcePathStyle: true };
const client = s3Client(dest, s3);
t.teardown(() => client.destroy());
await client.send(new CreateBucketCommand({ Bucket: 'captures' }));
const dir = await scratchDir(t, 's3-upload');
const pcap = join(dir, 'web.pcap');
const pcapBytes = await writeRealisticPcap(pcap, 23 * 1024 * 1024, 5);

async function readBack(key: string): Promise<Buffer> {
  const res = await client.send(new GetObjectCommand({ Bucket: 'captures', Key: key }));
  return Buffer.from(await res.Body!.transformToByteArray());
}

t.test('a capture streamed in 5 MiB parts, two in flight, reads back byte for byte', async (t) => {
  let counted = 0;
  const up = await uploadStream(client, dest, 'ns/web/files/web.pcap', createReadStream(pcap, { highWaterMark: 64 * 1024 }), { contentType: 'application/vnd.tcpdump.pcap', partSizeBytes: 5 * 1024 * 1024, queueSize: 2, onBytes: (n) => (counted += n) });
  t.equal(up.size, pcapBytes);
  t.equal(counted, pcapBytes, 'progress counted every byte');
  const back = await readBack('ns/web/files/web.pcap');
  t.equal(back.length, pcapBytes);
  t.equal(createHash('sha256').update(back).digest('hex'), up.sha256, 'the SHA-256 counted on the way is the stored object\'s');
  await writeFile(join(dir, 'back.pcap'), back);
  const info = await run('capinfos', ['-c', '-M', join(dir, 'back.pcap')]);
  t.equal(info.code, 0, info.stderr);
  t.match(info.stdout, /Number of packets:\s+\d{4,}/, 'tshark\'s capinfos reads the object');
  const small = await uploadStream(client, dest, 'ns/web/manifest.json', Readable.from([Buffer.from('{"ok":true}')]), { contentType: 'application/json' });
  t.equal((await readBack('ns/web/manifest.json')).toString(), '{"ok":true}', 'an object smaller than a part is one PUT');
  t.equal(small.size, 11);
});

t.test('a source that fails mid-way: the upload fails and leaves no multipart upload behind', async (t) => {
  const source = new PassThrough();
  const failing = uploadStream(client, dest, 'ns/web/cut.pcap', source, { contentType: 'application/vnd.tcpdump.pcap', partSizeBytes: 5 * 1024 * 1024, queueSize: 2 });
  // Two whole parts and more go out before the agent "dies".
  const chunk = Buffer.alloc(1024 * 1024, 7);
  for (let i = 0; i < 12; i++) if (!source.write(chunk)) await new Promise((r) => source.once('drain', r));
  source.destroy(new Error('the agent of node-1 went away'));
  await t.rejects(failing, /the agent of node-1 went away/);
  const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket: 'captures' }));
  t.same((uploads.Uploads ?? []).map((u) => u.Key), [], 'aborted: no orphan parts');
  const objects = await client.send(new ListObjectsV2Command({ Bucket: 'captures', Prefix: 'ns/web/cut' }));
  t.equal(objects.KeyCount ?? 0, 0, 'and no object');
});

t.test('wrong credentials, a missing bucket, an identity that may not write: the S3 error code, not retried', async (t) => {
  const cases: [string, ReturnType<typeof s3Client>, S3Destination, RegExp][] = [
    ['wrong secret', s3Client(dest, { accessKeyId: s3.accessKeyId, secretAccessKey: 'not-the-secret' }), dest, /^(SignatureDoesNotMatch|InvalidAccessKeyId|AccessDenied)$/],
    ['unknown key', s3Client(dest, { accessKeyId: 'KPNOSUCHKEY000000000', secretAccessKey: 'x' }), dest, /^(InvalidAccessKeyId|AccessDenied)$/],
    ['missing bucket', client, { ...dest, bucket: 'no-such-bucket' }, /^NoSuchBucket$/],
    ['read-only identity', s3Client(dest, s3.readOnly), dest, /^AccessDenied$/],
  ];
  for (const [what, c, d, code] of cases) {
    const err = await uploadStream(c, d, 'ns/web/x.pcap', Readable.from([Buffer.alloc(1000)]), { contentType: 'application/octet-stream' }).catch((e: unknown) => e);
    t.ok(err instanceof S3UploadError, `${what}: an S3UploadError (${String(err)})`);
    if (err instanceof S3UploadError) {
      t.match(err.code, code, `${what}: ${err.code}`);
      t.equal(err.retryable, false, `${what}: not worth retrying`);
      t.notMatch(err.message, /not-the-secret/, `${what}: the secret is not in the message`);
    }
    if (c !== client) c.destroy();
  }
});
