// npm run bench:export — PacketCaptureExports into a real S3 server (SeaweedFS), on loopback,
// in one run (docs/export.md):
//   - a capture of real-looking DNS and HTTP traffic on two agents (2 GiB by default) exported
//     as files.zip, as one object per file, and as a zstd pcapng, by the gateway holding the
//     Lease; against the AWS SDK in this process uploading the same bytes from local files
//     (same part size, parts in flight, SHA-256) in the same run. Prints each one's throughput
//     and the ratio (target >= 0.8), the gateway's CPU-seconds per GiB against this process's
//     for the baseline, and the gateway's RSS sampled during each export (target: flat, under
//     150 MiB);
//   - a Continuous export of a capture whose agent rotates a file every second: the lag from
//     a file's closing (written and renamed into place) to its object being visible in the
//     bucket, p50/p99.
//
//   npm run bench:export [-- --gib 2 --continuous-files 30 --delay-seconds 5 --part-mib 8]
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, rename } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { parseArgs } from 'node:util';
import { CreateBucketCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import { s3Client, uploadStream } from '../src/export/s3-upload.js';
import { exportsPath, type PacketCaptureExport } from '../src/export/packetcapture-export.js';
import { bridgeAddress } from '../test/harness/addresses.js';
import { REPO_ROOT } from '../test/harness/control-plane.js';
import { gatewayMetric, publishAgents, scratchDir, startAgent, startGateway, type AgentHandle } from '../test/harness/kube-pcap.js';
import { writeDnsPcap } from '../test/harness/pcap-fixtures.js';
import { startS3Server } from '../test/harness/s3-server.js';
import { waitFor } from '../test/harness/wait.js';
import { benchCluster, cpuSeconds, percentile, rssBytes, runBench, Teardowns } from './lib.js';
import { writeRealisticPcap } from './realistic-traffic.js';

const { values: args } = parseArgs({
  options: {
    gib: { type: 'string', default: '2' },
    'continuous-files': { type: 'string', default: '30' },
    'delay-seconds': { type: 'string', default: '5' },
    'part-mib': { type: 'string', default: '8' },
  },
});
const NODES = 2;
const FILES_PER_NODE = 2;
const FILE_BYTES = Math.round((Number(args.gib) * 2 ** 30) / (NODES * FILES_PER_NODE));
const CAPTURE = 'bench-export';
const LIVE = 'bench-continuous';
const BUCKET = 'captures';
const PART_BYTES = Number(args['part-mib']) * 1024 * 1024;

const mib = (b: number): string => (b / 2 ** 20).toFixed(0);

async function main(): Promise<void> {
  const td = new Teardowns();
  try {
    const { c, kube, pki, logDir, ns } = await benchCluster(td, 'bench-export-logs', [CAPTURE, LIVE]);
    for (const f of ['packetcaptureexports.kube-pcap.io.yaml', 'export-policy.yaml']) await c.applyYaml(join(REPO_ROOT, 'deploy', 'export', f));
    const rename_ = { renameNamespace: { from: 'storefront', to: ns } };
    for (const f of ['export-role.yaml', 'export-credentials.yaml']) await c.applyYaml(join(REPO_ROOT, 'rbac-examples', f), rename_);
    // Room for two baselines and four exports (the zstd pcapng is about a third), and the
    // Continuous files; on disk, not in the sandbox's tmpfs (memory).
    const s3 = await startS3Server(td, { capacityMiB: Math.ceil(Number(args.gib) * 1024 * 6) + 256, dataDir: join(homedir(), '.cache', 'kube-pcap', `bench-s3-${process.pid}`) });
    const b64 = (v: string): string => Buffer.from(v).toString('base64');
    await c.applyManifest(`apiVersion: v1\nkind: Secret\nmetadata: {name: s3-credentials, namespace: ${ns}}\ndata: {AWS_ACCESS_KEY_ID: ${b64(s3.accessKeyId)}, AWS_SECRET_ACCESS_KEY: ${b64(s3.secretAccessKey)}}\n`);
    const dest = { endpoint: s3.endpoint, region: s3.region, bucket: BUCKET, forcePathStyle: true };
    const client = s3Client(dest, s3);
    td.teardown(() => client.destroy());
    await client.send(new CreateBucketCommand({ Bucket: BUCKET }));

    const roots: string[] = [];
    const localFiles: string[] = [];
    let total = 0;
    const agents: AgentHandle[] = [];
    for (let n = 0; n < NODES; n++) {
      const node = `node-${n + 1}-${randomBytes(2).toString('hex')}`;
      const root = await scratchDir(td, `bench-export-${node}`);
      roots.push(root);
      const dir = join(root, ns, CAPTURE);
      await mkdir(dir, { recursive: true });
      await mkdir(join(root, ns, LIVE), { recursive: true });
      for (let f = 0; f < FILES_PER_NODE; f++) {
        const file = join(dir, `web-${n}_cali${n}-${1_733_000_000_000_000 + f}.pcap`);
        total += await writeRealisticPcap(file, FILE_BYTES, n * FILES_PER_NODE + f + 1);
        localFiles.push(file);
      }
      agents.push(await startAgent(td, c, { node, address: await bridgeAddress(td), captureDir: root, pki, logDir, extraArgs: ['--log-level=info', '--status-interval-ms=1000'], sourceMaps: false }));
    }
    process.stdout.write(`kube-pcap export benchmark: ${NODES} agents x ${FILES_PER_NODE} files, ${(total / 2 ** 30).toFixed(2)} GiB of real-looking DNS and HTTP capture, into SeaweedFS on loopback (${args['part-mib']} MiB parts, 2 in flight)\n\n`);
    await publishAgents(c, 'bench-agents', agents);
    const gw = await startGateway(td, c, { pki, logDir, agentService: 'bench-agents', exports: true, extraArgs: ['--log-level=info', '--max-concurrent-exports=1', `--export-part-size-mib=${args['part-mib']}`], sourceMaps: false });
    const token = await c.tokenFor(ns, 'devops-sa');
    // The agents have reported their files: a Now export sees them all.
    await waitFor(async () => {
      const list = await kube.request<{ items: { spec: { captureName: string }; status?: { fileNames?: string[] } }[] }>({ path: `/apis/kube-pcap.io/v1alpha1/namespaces/${ns}/packetcapturenodereports` });
      return list.items.filter((r) => r.spec.captureName === CAPTURE).reduce((n, r) => n + (r.status?.fileNames?.length ?? 0), 0) === NODES * FILES_PER_NODE;
    }, { what: 'both agents to report their files', timeoutMs: 60_000 });

    process.stdout.write(`gateway RSS before any export: ${mib(await rssBytes(gw.proc.pid))} MiB\n`);
    // The baseline: the same bytes from local files through the same SDK client and part
    // logic, in this process; run before and after the exports (the S3 server warms up).
    let baseRuns = 0;
    const baseline = async (): Promise<{ rate: number; cpuPerGib: number }> => {
      const b0 = process.cpuUsage();
      const t0 = Date.now();
      const joined = new PassThrough({ highWaterMark: 1024 * 1024 });
      void (async () => {
        for (const f of localFiles) await new Promise<void>((resolve, reject) => createReadStream(f, { highWaterMark: 1024 * 1024 }).on('error', reject).on('end', resolve).pipe(joined, { end: false }));
        joined.end();
      })();
      const up = await uploadStream(client, dest, `baseline/capture-${baseRuns++}.bin`, joined, { contentType: 'application/octet-stream', partSizeBytes: PART_BYTES, queueSize: 2 });
      const seconds = (Date.now() - t0) / 1000;
      const cpu = process.cpuUsage(b0);
      const result = { rate: up.size / 2 ** 20 / seconds, cpuPerGib: (cpu.user + cpu.system) / 1e6 / (up.size / 2 ** 30) };
      process.stdout.write(`SDK from local files (baseline ${baseRuns}): ${mib(up.size)} MiB in ${seconds.toFixed(1)} s = ${result.rate.toFixed(0)} MiB/s, this process ${result.cpuPerGib.toFixed(2)} CPU-s/GiB\n`);
      return result;
    };
    const before = await baseline();

    const rows: string[] = [];
    const rates: number[] = [];
    for (const [name, spec] of [
      ['zip', { format: 'zip', when: 'Now' }],
      ['files', { format: 'files', when: 'Now' }],
      ['pcapng-zstd', { format: 'pcapng', compression: 'zstd', when: 'Now' }],
      // The first again: memory that a run leaves in the process shows here as growth.
      ['zip-again', { format: 'zip', when: 'Now' }],
    ] as const) {
      const body = { apiVersion: 'kube-pcap.io/v1alpha1', kind: 'PacketCaptureExport', metadata: { name, namespace: ns }, spec: { captureName: CAPTURE, ...spec, destination: { s3: { endpoint: s3.endpoint, insecureEndpoint: true, region: s3.region, bucket: BUCKET, forcePathStyle: true, credentials: { secretRef: { name: 's3-credentials' } } } } } };
      const cpu0 = await cpuSeconds(gw.proc.pid);
      const rss: number[] = [];
      const sampler = setInterval(() => void rssBytes(gw.proc.pid).then((r) => rss.push(r), () => undefined), 250);
      const r = await c.kubectl(['create', '-f', '-'], { input: JSON.stringify(body), token });
      if (r.code !== 0) throw new Error(`create ${name}: ${r.stderr}`);
      const e = await waitFor(async () => {
        const x = await kube.request<PacketCaptureExport>({ path: `${exportsPath(ns)}/${name}` });
        if (x.status?.phase === 'Failed') throw new Error(`${name} failed: ${x.status.message}`);
        return x.status?.phase === 'Succeeded' ? x : undefined;
      }, { what: `export ${name}`, timeoutMs: 1_800_000, intervalMs: 200 });
      clearInterval(sampler);
      const cpu = (await cpuSeconds(gw.proc.pid)) - cpu0;
      const seconds = (Date.parse(e.status!.completionTime!) - Date.parse(e.status!.lastAttemptTime!)) / 1000;
      const rate = total / 2 ** 20 / seconds;
      const quarter = (q: number): string => mib(rss[Math.min(rss.length - 1, Math.floor((rss.length * q) / 4))] ?? 0);
      rows.push(`${name.padEnd(12)} ${mib(e.status!.bytes!).padStart(6)} MiB stored  ${seconds.toFixed(1).padStart(6)} s  ${rate.toFixed(0).padStart(4)} MiB/s of capture  gateway ${(cpu / (total / 2 ** 30)).toFixed(2)} CPU-s/GiB  RSS MiB at 1/4,2/4,3/4,end ${quarter(1)},${quarter(2)},${quarter(3)},${quarter(4)} (peak ${mib(Math.max(...rss))})`);
      rates.push(rate);
      process.stdout.write(`${rows.at(-1)}\n`);
      // Where the memory is, by the gateway's own account (prom-client's process metrics).
      const m = async (name: string): Promise<string> => mib(await gatewayMetric(gw, pki, name));
      process.stdout.write(`${''.padEnd(13)}after: V8 heap used ${await m('nodejs_heap_size_used_bytes')} of ${await m('nodejs_heap_size_total_bytes')} MiB, external ${await m('nodejs_external_memory_bytes')} MiB\n`);
    }
    const after = await baseline();
    const baseRate = (before.rate + after.rate) / 2;
    process.stdout.write(`\nagainst the baseline's mean ${baseRate.toFixed(0)} MiB/s (${((before.cpuPerGib + after.cpuPerGib) / 2).toFixed(2)} CPU-s/GiB): ${rows.map((r, i) => `${r.split(' ')[0]} ${(rates[i]! / baseRate).toFixed(2)}x`).join(', ')}\n`);

    // Continuous: an agent "rotates" a file every second; lag from its closing to its object.
    const liveDelay = Number(args['delay-seconds']);
    const liveBody = { apiVersion: 'kube-pcap.io/v1alpha1', kind: 'PacketCaptureExport', metadata: { name: 'live', namespace: ns }, spec: { captureName: LIVE, format: 'files', when: 'Continuous', continuousDelaySeconds: liveDelay, destination: { s3: { endpoint: s3.endpoint, insecureEndpoint: true, region: s3.region, bucket: BUCKET, forcePathStyle: true, credentials: { secretRef: { name: 's3-credentials' } } } } } };
    const r = await c.kubectl(['create', '-f', '-'], { input: JSON.stringify(liveBody), token });
    if (r.code !== 0) throw new Error(`create live: ${r.stderr}`);
    const node = agents[0]!.node;
    const liveDir = join(roots[0]!, ns, LIVE);
    const lags: number[] = [];
    const pending: Promise<void>[] = [];
    const count = Number(args['continuous-files']);
    for (let i = 0; i < count; i++) {
      const name = `web-0_cali0-${Date.now() * 1000 + i}.pcap`;
      await writeDnsPcap(join(liveDir, `.${name}.tmp`), 200, { src: '192.0.2.10' });
      await rename(join(liveDir, `.${name}.tmp`), join(liveDir, name));
      const closed = Date.now();
      // The agent notices a rotation of its own at once; a file made behind its back at the
      // capture's next event.
      void c.kubectl(['annotate', '--overwrite', '-n', ns, 'packetcaptures.projectcalico.org', LIVE, `bench/rotated=${i}`]);
      pending.push(waitFor(async () => {
        try {
          await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: `${ns}/${LIVE}/live/${node}/${name}` }));
          return true;
        } catch {
          return false;
        }
      }, { what: `${name} in the bucket`, timeoutMs: 120_000, intervalMs: 100 }).then(() => {
        lags.push(Date.now() - closed);
      }));
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    await Promise.all(pending);
    process.stdout.write(`\nContinuous (continuousDelaySeconds ${liveDelay}, one file closed per second, ${count} files): lag from closing to object visible p50 ${(percentile(lags, 50) / 1000).toFixed(2)} s, p99 ${(percentile(lags, 99) / 1000).toFixed(2)} s, max ${(Math.max(...lags) / 1000).toFixed(2)} s\n`);
    process.stdout.write(`\ntargets: each export >= 0.8x the SDK's own upload; gateway RSS flat and < 150 MiB; Continuous within continuousDelaySeconds\n`);
  } finally {
    await td.run();
  }
}

runBench(main);
