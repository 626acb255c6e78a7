// A real S3-compatible server for the export tests: SeaweedFS (`weed server -s3`, built from
// the Go module proxy by test/s3/build-seaweedfs.sh) on loopback, with real access keys in its
// identities file, started and stopped by the test like the API server. Its data and sockets
// live in the test's scratch directory.
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Teardown } from './cluster.js';
import { freePorts } from './control-plane.js';
import { scratchDir } from './kube-pcap.js';
import { OwnedProcess } from './processes.js';
import { waitFor } from './wait.js';

export interface S3Server {
  endpoint: string;
  region: string;
  /** Allowed everything (the exporter's keys). */
  accessKeyId: string;
  secretAccessKey: string;
  /** Allowed to read only (an identity that cannot write). */
  readOnly: { accessKeyId: string; secretAccessKey: string };
  proc: OwnedProcess;
}

export function weedBinary(): string {
  const bin = process.env.KUBE_PCAP_WEED;
  if (!bin) throw new Error('KUBE_PCAP_WEED is not set: run the tests through `npm test` (scripts/run.sh builds SeaweedFS with test/s3/build-seaweedfs.sh)');
  return bin;
}

export interface S3ServerOptions {
  /** Volumes of 64 MiB each: room for 512 MiB unless a caller (a benchmark) asks for more. */
  capacityMiB?: number;
  /** The S3 API's port (a test that points an export at it before it starts). */
  s3Port?: number;
  /** The writer's keys (default: new ones). */
  keys?: { accessKeyId: string; secretAccessKey: string };
  /** Where the objects live (default the scratch directory, which is the sandbox's tmpfs: memory). */
  dataDir?: string;
}

export async function startS3Server(t: Teardown, o: S3ServerOptions = {}): Promise<S3Server> {
  const volumes = Math.max(8, Math.ceil((o.capacityMiB ?? 0) / 64) + 4);
  const dir = await scratchDir(t, 's3');
  const data = o.dataDir ?? join(dir, 'data');
  await mkdir(data, { recursive: true });
  if (o.dataDir) t.teardown(() => rm(o.dataDir!, { recursive: true, force: true }));
  const key = (): { accessKeyId: string; secretAccessKey: string } => ({ accessKeyId: `KP${randomBytes(9).toString('hex').toUpperCase()}`, secretAccessKey: randomBytes(30).toString('base64url') });
  const writer = o.keys ?? key();
  const reader = key();
  await writeFile(join(dir, 's3.json'), JSON.stringify({
    identities: [
      { name: 'exporter', credentials: [{ accessKey: writer.accessKeyId, secretKey: writer.secretAccessKey }], actions: ['Admin', 'Read', 'Write', 'List', 'Tagging'] },
      { name: 'reader', credentials: [{ accessKey: reader.accessKeyId, secretKey: reader.secretAccessKey }], actions: ['Read', 'List'] },
    ],
  }), { mode: 0o600 });
  // Every port explicit: weed's defaults (9333, 8888, gRPC at +10000) would collide between
  // test files running at once.
  // One pick of distinct ports (a port given back may be picked again), none the one asked for.
  const picked = (await freePorts('127.0.0.1', 9)).filter((p) => p !== o.s3Port);
  const [master, masterGrpc, volume, volumeGrpc, filer, filerGrpc, s3Free, s3Grpc] = picked as [number, number, number, number, number, number, number, number];
  const s3 = o.s3Port ?? s3Free;
  const proc = new OwnedProcess(weedBinary(), [
    'server', `-dir=${data}`, '-ip=127.0.0.1', '-ip.bind=127.0.0.1',
    `-master.port=${master}`, `-master.port.grpc=${masterGrpc}`, '-master.telemetry=false', '-master.volumeSizeLimitMB=64',
    `-volume.port=${volume}`, `-volume.port.grpc=${volumeGrpc}`, `-volume.max=${volumes}`,
    '-filer', `-filer.port=${filer}`, `-filer.port.grpc=${filerGrpc}`, `-filer.localSocket=${join(dir, 'filer.sock')}`,
    '-s3', `-s3.port=${s3}`, `-s3.port.grpc=${s3Grpc}`, `-s3.config=${join(dir, 's3.json')}`, `-s3.localSocket=${join(dir, 's3.sock')}`,
    // As AWS: an upload into a bucket that does not exist fails (weed creates it by default).
    '-s3.autoCreateBucket=false',
  ], { name: 'seaweedfs', logFile: join(dir, 'weed.log'), cwd: dir, env: { ...process.env, TMPDIR: dir } });
  t.teardown(() => proc.stop(5000));
  const endpoint = `http://127.0.0.1:${s3}`;
  // Ready once the S3 API answers a signed-less request with its own refusal (403) and the
  // filer behind it is up: a ListBuckets by the SDK would need the same.
  await waitFor(async () => {
    if (!proc.running) throw await proc.failure('exited before serving S3');
    try {
      const res = await fetch(`${endpoint}/`);
      return res.status === 403 ? true : undefined;
    } catch {
      return undefined;
    }
  }, { what: 'SeaweedFS S3 to answer', timeoutMs: 60_000, intervalMs: 100 });
  return { endpoint, region: 'us-east-1', ...writer, readOnly: reader, proc };
}
