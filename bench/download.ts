// npm run bench:download — the gateway's files.zip against nginx, on loopback, in one run,
// with the same client (curl), over the same files, two ways:
//   - nginx as a TLS reverse proxy in front of the same agents: the gateway's architecture
//     (two TLS streams per byte, the agents serving), one GET per file as nginx cannot build
//     the zip. gateway/nginx-proxy is the ratio that measures our overhead (target >= 0.9);
//   - nginx serving the files itself as static files (one TLS stream per byte, sendfile):
//     the floor of the hardware, which a proxy cannot reach (target >= 0.8 of it).
//
// Prints: throughput of each and the ratios, the gateway's peak
// RSS (target < 150 MB for 2 GiB), the latency of an authorized request with warm caches
// against an unauthenticated one (p50/p99), and how many TokenReviews and
// SubjectAccessReviews the API server received for 1000 requests with one token.
//
// Then the compression part (download-compression.ts): 1 GiB of real-looking DNS and HTTP
// capture downloaded stored and compressed, over a 100 Mbit/s link shaped by tc and on loopback.
//
//   npm run bench:download [-- --nodes 2 --files 4 --file-mib 256 --rounds 3]
//                          [--part all|zip|compression] [--realistic-gib 1] [--link-mbit 100]
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { applyNodeStatus } from '../test/harness/node-reports.js';
import { bridgeAddress } from '../test/harness/addresses.js';
import { apiServerRequests } from '../test/harness/apiserver-metrics.js';
import { run } from '../test/harness/http.js';
import { AGENT_SERVER_NAME, gatewayMetric, publishAgents, scratchDir, startAgent, startGateway, SYSTEM_NAMESPACE, type AgentHandle } from '../test/harness/kube-pcap.js';
import { writeLargePcap } from '../test/harness/pcap-fixtures.js';
import { OwnedProcess, rssBytes } from '../test/harness/processes.js';
import { waitFor } from '../test/harness/wait.js';
import { compressionBench } from './download-compression.js';
import { writeRealisticPcap } from './realistic-traffic.js';
import { benchCluster, runBench, Teardowns, cpuSeconds, peakRssBytes, percentile, portOpen } from './lib.js';

const { values: args } = parseArgs({
  options: {
    nodes: { type: 'string', default: '2' },
    files: { type: 'string', default: '4' },
    'file-mib': { type: 'string', default: '256' },
    rounds: { type: 'string', default: '3' },
    requests: { type: 'string', default: '1000' },
    part: { type: 'string', default: 'all' },
    'realistic-gib': { type: 'string', default: '1' },
    'link-mbit': { type: 'string', default: '100' },
    /** Writes a V8 CPU profile of the gateway into this directory. */
    'cpu-prof': { type: 'string' },
  },
});
const NODES = Number(args.nodes);
const FILES = Number(args.files);
const FILE_BYTES = Number(args['file-mib']) * 1024 * 1024;
const ROUNDS = Number(args.rounds);
const REQUESTS = Number(args.requests);
const CAPTURE = 'bench-capture';
const REALISTIC = 'bench-realistic';
const PART = args.part;
if (!['all', 'zip', 'compression'].includes(PART)) throw new Error(`--part must be all, zip or compression, not ${PART}`);
const ZIP_PART = PART !== 'compression';
const REALISTIC_FILE_BYTES = Math.round((Number(args['realistic-gib']) * 2 ** 30) / (NODES * 2));

async function main(): Promise<void> {
  const td = new Teardowns();
  try {
    process.stdout.write(`kube-pcap download benchmark: ${NODES} nodes x ${FILES} files x ${args['file-mib']} MiB = ${((NODES * FILES * FILE_BYTES) / 2 ** 30).toFixed(2)} GiB\n`);
    const { c, kube, pki, logDir, ns } = await benchCluster(td, 'bench-logs', [CAPTURE, 'empty', REALISTIC]);

    // The files: on disk under one root per node, the layout agents and nginx both serve.
    const webRoot = await scratchDir(td, 'bench-files');
    const agents: AgentHandle[] = [];
    const nginxPaths: string[] = [];
    let totalBytes = 0;
    let realisticBytes = 0;
    for (let n = 0; n < NODES; n++) {
      const node = `node-${n + 1}`;
      const root = join(webRoot, node);
      const dir = join(root, ns, CAPTURE);
      await mkdir(dir, { recursive: true });
      const names: string[] = [];
      for (let f = 0; ZIP_PART && f < FILES; f++) {
        const name = `pod-${n}_cali${n}-${1_700_000_000_000_000 + f}.pcap`;
        totalBytes += await writeLargePcap(join(dir, name), FILE_BYTES);
        names.push(name);
        nginxPaths.push(`/${node}/${ns}/${CAPTURE}/${name}`);
      }
      const realisticNames: string[] = [];
      if (PART !== 'zip') {
        const rdir = join(root, ns, REALISTIC);
        await mkdir(rdir, { recursive: true });
        for (let f = 0; f < 2; f++) {
          const name = `web-${n}_cali${n}-${1_733_000_000_000_000 + f}.pcap`;
          realisticBytes += await writeRealisticPcap(join(rdir, name), REALISTIC_FILE_BYTES, n * 2 + f + 1);
          realisticNames.push(name);
        }
      }
      agents.push(await startAgent(td, c, { node, address: await bridgeAddress(td), captureDir: root, pki, logDir, extraArgs: ['--log-level=info'], sourceMaps: false }));
      if (ZIP_PART) await applyNodeStatus(kube, { namespace: ns, name: CAPTURE }, `kube-pcap-agent/${node}`, { node, fileNames: names, state: 'Finished' });
      if (PART !== 'zip') await applyNodeStatus(kube, { namespace: ns, name: REALISTIC }, `kube-pcap-agent/${node}`, { node, fileNames: realisticNames, state: 'Finished' });
    }
    await publishAgents(c, 'bench-agents', agents);
    const nodeOptions = process.env.NODE_OPTIONS;
    if (args['cpu-prof']) process.env.NODE_OPTIONS = `${nodeOptions ?? ''} --cpu-prof --cpu-prof-dir=${args['cpu-prof']}`.trim();
    // On every address: the compression part's client is in a network namespace of its own.
    const gw = await startGateway(td, c, { pki, logDir, agentService: 'bench-agents', listen: '0.0.0.0', extraArgs: ['--log-level=info', '--max-downloads-per-user=0', '--max-live-streams-per-user=0', '--max-requests-per-user=0'], sourceMaps: false });
    if (nodeOptions === undefined) delete process.env.NODE_OPTIONS;
    else process.env.NODE_OPTIONS = nodeOptions;
    const token = await c.tokenFor(ns, 'devops-sa');
    if (!ZIP_PART) {
      await compressionBench({ td, logDir, gateway: gw, caFile: pki.ca.certFile, token, namespace: ns, capture: REALISTIC, captureBytes: realisticBytes, linkMbit: Number(args['link-mbit']) });
      return;
    }

    const nginxPort = 18443;
    const proxyPort = 18444;
    const conf = join(logDir, 'nginx.conf');
    // The proxy calls the agents as the gateway does: its client certificate, its token for
    // the agents' audience, the agents' CA and server name verified.
    const agentToken = await c.tokenFor(SYSTEM_NAMESPACE, 'kube-pcap-gateway', { audience: 'kube-pcap-agent' });
    const upstreams = agents.map((a, i) => `  upstream agent${i + 1} { server ${a.address}:${a.port}; keepalive 8; }`).join('\n');
    const proxyLocations = agents.map((_a, i) => `    location ~ ^/node-${i + 1}/([^/]+)/([^/]+)/([^/]+)$ { proxy_pass https://agent${i + 1}/v1/captures/$1/$2/files/$3; }`).join('\n');
    // Its worker reads the same 0700 scratch directories the agents read: run it as root too.
    await writeFile(conf, `user root root;
worker_processes 1;
# One process, so that its CPU time is that of the process we measure.
master_process off;
pid ${join(logDir, 'nginx.pid')};
error_log ${join(logDir, 'nginx-error.log')} warn;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  ssl_protocols TLSv1.2 TLSv1.3;
  client_body_temp_path ${logDir}/nginx-body;
  proxy_temp_path ${logDir}/nginx-proxy;
  fastcgi_temp_path ${logDir}/nginx-fastcgi;
  uwsgi_temp_path ${logDir}/nginx-uwsgi;
  scgi_temp_path ${logDir}/nginx-scgi;
  server {
    listen 127.0.0.1:${nginxPort} ssl;
    ssl_certificate ${pki.gateway.certFile};
    ssl_certificate_key ${pki.gateway.keyFile};
    root ${webRoot};
  }
${upstreams}
  server {
    listen 127.0.0.1:${proxyPort} ssl;
    ssl_certificate ${pki.gateway.certFile};
    ssl_certificate_key ${pki.gateway.keyFile};
    # Streamed, as the gateway streams: nothing buffered to disk or whole in memory, in the
    # 64 KiB writes the gateway sends its client (with 16 KiB buffers nginx was ~6% slower).
    proxy_buffering off;
    proxy_buffer_size 64k;
    proxy_buffers 8 64k;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Authorization "Bearer ${agentToken}";
    proxy_ssl_certificate ${pki.gatewayClient.certFile};
    proxy_ssl_certificate_key ${pki.gatewayClient.keyFile};
    proxy_ssl_trusted_certificate ${pki.ca.certFile};
    proxy_ssl_verify on;
    proxy_ssl_name ${AGENT_SERVER_NAME};
    proxy_ssl_server_name on;
    proxy_ssl_session_reuse on;
    proxy_read_timeout 600s;
${proxyLocations}
  }
}
`);
    const nginx = new OwnedProcess('nginx', ['-c', conf, '-p', logDir, '-g', 'daemon off;'], { name: 'nginx', logFile: join(logDir, 'nginx.out') });
    td.teardown(() => nginx.stop());
    const curlArgs = ['-sS', '--fail', '--cacert', pki.ca.certFile, '-w', '%{size_download} %{time_total}\\n'];

    async function viaNginx(): Promise<{ bytes: number; seconds: number }> {
      const n0 = await cpuOf([nginx.pid]);
      try {
        return await downloadStatic();
      } finally {
        nginxCpu.push(((await cpuOf([nginx.pid])) - n0) / ((NODES * FILES * FILE_BYTES) / 2 ** 30));
      }
    }
    async function viaProxy(): Promise<{ bytes: number; seconds: number }> {
      const [n0, a0] = [await cpuOf([nginx.pid]), await cpuOf(agents.map((a) => a.proc.pid))];
      try {
        return await downloadEach(proxyPort, nginxPaths); // /<node>/<ns>/<capture>/<file>, as for static files
      } finally {
        const gib = (NODES * FILES * FILE_BYTES) / 2 ** 30;
        proxyCpu.push(((await cpuOf([nginx.pid])) - n0) / gib);
        proxyAgentCpu.push(((await cpuOf(agents.map((a) => a.proc.pid))) - a0) / gib);
      }
    }
    const downloadStatic = () => downloadEach(nginxPort, nginxPaths);
    /** Every file in turn, on one connection (curl reuses it), as the sum of their times. */
    async function downloadEach(port: number, paths: string[]): Promise<{ bytes: number; seconds: number }> {
      const urls = paths.flatMap((p) => [`https://127.0.0.1:${port}${p}`, '-o', '/dev/null']);
      const r = await run('curl', [...curlArgs, ...urls], { timeoutMs: 600_000 });
      if (r.code !== 0) throw new Error(`curl via nginx (port ${port}) failed: ${r.stderr}`);
      const total = r.stdout.trim().split('\n').map((l) => l.split(' ').map(Number)).reduce((a, [b, s]) => ({ bytes: a.bytes + b!, seconds: a.seconds + s! }), { bytes: 0, seconds: 0 });
      if (total.bytes !== totalBytes) throw new Error(`nginx (port ${port}) sent ${total.bytes} bytes, not ${totalBytes}`);
      return total;
    }
    const cpuOf = async (pids: number[]) => (await Promise.all(pids.map(cpuSeconds))).reduce((a, b) => a + b, 0);
    const gwCpu: number[] = [];
    const agentCpu: number[] = [];
    const nginxCpu: number[] = [];
    const proxyCpu: number[] = [];
    const proxyAgentCpu: number[] = [];
    async function viaGateway(): Promise<{ bytes: number; seconds: number }> {
      const [g0, a0] = [await cpuOf([gw.proc.pid]), await cpuOf(agents.map((a) => a.proc.pid))];
      try {
        return await downloadZip();
      } finally {
        const gib = (NODES * FILES * FILE_BYTES) / 2 ** 30;
        gwCpu.push(((await cpuOf([gw.proc.pid])) - g0) / gib);
        agentCpu.push(((await cpuOf(agents.map((a) => a.proc.pid))) - a0) / gib);
      }
    }
    async function downloadZip(): Promise<{ bytes: number; seconds: number }> {
      const r = await run('curl', [...curlArgs, '-H', `Authorization: Bearer ${token}`, `${gw.url}/packet-capture/download/${ns}/${CAPTURE}/files.zip`, '-o', '/dev/null'], { timeoutMs: 600_000 });
      if (r.code !== 0) throw new Error(`curl via the gateway failed: ${r.stderr}`);
      const [bytes, seconds] = r.stdout.trim().split(' ').map(Number);
      return { bytes: bytes!, seconds: seconds! };
    }
    await waitFor(async () => (await portOpen('127.0.0.1', nginxPort)) && (await portOpen('127.0.0.1', proxyPort)), { what: 'nginx to listen', timeoutMs: 10_000, intervalMs: 50 });
    const mibs = (x: { bytes: number; seconds: number }) => x.bytes / 2 ** 20 / x.seconds;
    process.stdout.write(`  idle RSS before downloading: gateway ${((await rssBytes(gw.proc.pid)) / 2 ** 20).toFixed(0)} MiB, agents ${(await Promise.all(agents.map(async (a) => ((await rssBytes(a.proc.pid)) / 2 ** 20).toFixed(0)))).join(', ')} MiB\n`);
    const samples: number[] = [];
    const sampler = setInterval(() => void rssBytes(gw.proc.pid).then((r) => samples.push(r), () => undefined), 100);
    td.teardown(() => clearInterval(sampler));
    const gwRuns: number[] = [];
    const ngRuns: number[] = [];
    const pxRuns: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      // Interleaved, so that none of them always runs on a warmer machine.
      const g = await viaGateway();
      const p = await viaProxy();
      const n = await viaNginx();
      gwRuns.push(mibs(g));
      pxRuns.push(mibs(p));
      ngRuns.push(mibs(n));
      process.stdout.write(`  round ${i + 1}: gateway ${mibs(g).toFixed(0)} MiB/s (${(g.bytes / 2 ** 30).toFixed(2)} GiB zip), nginx proxy ${mibs(p).toFixed(0)} MiB/s, nginx static ${mibs(n).toFixed(0)} MiB/s\n`);
    }
    const best = (xs: number[]) => Math.max(...xs);
    const median = (xs: number[]) => percentile(xs, 50);
    clearInterval(sampler);
    process.stdout.write(`  gateway RSS while downloading (sampled every 100 ms): p50 ${(percentile(samples, 50) / 2 ** 20).toFixed(0)} MiB, max ${(Math.max(...samples) / 2 ** 20).toFixed(0)} MiB\n`);
    const gwPeak = await peakRssBytes(gw.proc.pid);
    const agentPeak = Math.max(...(await Promise.all(agents.map((a) => peakRssBytes(a.proc.pid)))));

    // Latency with warm caches: an authorized request vs. an unauthenticated one, keep-alive.
    const dispatcher = new Agent({ connect: { ca: await readFile(pki.ca.certFile) }, connections: 1 });
    td.teardown(() => dispatcher.close());
    async function timed(url: string, auth: boolean): Promise<number> {
      const t0 = process.hrtime.bigint();
      const res = await request(url, { dispatcher, headers: auth ? { authorization: `Bearer ${token}` } : {} });
      await res.body.dump();
      return Number(process.hrtime.bigint() - t0) / 1e6;
    }
    const authorizedUrl = `${gw.url}/packet-capture/files/${ns}/empty`;
    // The baseline: the same listener and connection, no authentication (an unrouted 404).
    const publicUrl = `${gw.url}/not-a-route`;
    for (let i = 0; i < 50; i++) {
      await timed(authorizedUrl, true);
      await timed(publicUrl, false);
    }
    const cache0 = await gatewayMetric(gw, pki, 'kube_pcap_gateway_capture_reads_total', 'source="cache"');
    const api0 = await gatewayMetric(gw, pki, 'kube_pcap_gateway_capture_reads_total', 'source="api"');
    const tr0 = await apiServerRequests(c, 'tokenreviews');
    const sar0 = await apiServerRequests(c, 'subjectaccessreviews');
    const authorized: number[] = [];
    const open: number[] = [];
    const fresh = await c.tokenFor(ns, 'devops-sa');
    for (let i = 0; i < REQUESTS; i++) {
      const t0 = process.hrtime.bigint();
      const res = await request(authorizedUrl, { dispatcher, headers: { authorization: `Bearer ${fresh}` } });
      await res.body.dump();
      authorized.push(Number(process.hrtime.bigint() - t0) / 1e6);
      open.push(await timed(publicUrl, false));
    }
    const capReads = { cache: (await gatewayMetric(gw, pki, 'kube_pcap_gateway_capture_reads_total', 'source="cache"')) - cache0, api: (await gatewayMetric(gw, pki, 'kube_pcap_gateway_capture_reads_total', 'source="api"')) - api0 };
    const trs = (await apiServerRequests(c, 'tokenreviews')) - tr0;
    const sars = (await apiServerRequests(c, 'subjectaccessreviews')) - sar0;

    const ratio = median(gwRuns) / median(ngRuns);
    const proxyRatio = median(gwRuns) / median(pxRuns);
    process.stdout.write([
      '',
      `throughput (median of ${ROUNDS}): gateway files.zip ${median(gwRuns).toFixed(0)} MiB/s (best ${best(gwRuns).toFixed(0)}), nginx reverse proxy to the agents ${median(pxRuns).toFixed(0)} MiB/s (best ${best(pxRuns).toFixed(0)}), nginx static ${median(ngRuns).toFixed(0)} MiB/s (best ${best(ngRuns).toFixed(0)})`,
      `ratio gateway/nginx-proxy: ${proxyRatio.toFixed(2)}  (target >= 0.90: our overhead over the same architecture)`,
      `ratio gateway/nginx-static: ${ratio.toFixed(2)}  (target >= 0.80: against one TLS stream per byte)`,
      `CPU seconds per GiB served (median): gateway ${median(gwCpu).toFixed(2)} + agents ${median(agentCpu).toFixed(2)}; nginx proxy ${median(proxyCpu).toFixed(2)} + agents ${median(proxyAgentCpu).toFixed(2)}; nginx static ${median(nginxCpu).toFixed(2)} (curl, the client, runs on the same ${(await import('node:os')).availableParallelism()} cores)`,
      `gateway peak RSS: ${(gwPeak / 2 ** 20).toFixed(0)} MiB for ${((NODES * FILES * FILE_BYTES) / 2 ** 30).toFixed(2)} GiB streamed ${ROUNDS} times  (target < 150 MB); agents' peak RSS: ${(agentPeak / 2 ** 20).toFixed(0)} MiB`,
      `latency, warm caches, keep-alive, ${REQUESTS} requests: authorized listing p50 ${percentile(authorized, 50).toFixed(2)} ms p99 ${percentile(authorized, 99).toFixed(2)} ms; unauthenticated 404 p50 ${percentile(open, 50).toFixed(2)} ms p99 ${percentile(open, 99).toFixed(2)} ms; added p50 ${(percentile(authorized, 50) - percentile(open, 50)).toFixed(2)} ms p99 ${(percentile(authorized, 99) - percentile(open, 99)).toFixed(2)} ms (target p99 < 1 ms; the capture and its reports come from the gateway's watch cache: ${capReads.cache} cache, ${capReads.api} API reads)`,
      `API server received for ${REQUESTS} requests with one token: ${trs} TokenReview(s), ${sars} SubjectAccessReview(s)`,
      '',
    ].join('\n'));
    if (PART === 'all') await compressionBench({ td, logDir, gateway: gw, caFile: pki.ca.certFile, token, namespace: ns, capture: REALISTIC, captureBytes: realisticBytes, linkMbit: Number(args['link-mbit']) });
  } finally {
    await td.run();
  }
}

runBench(main);
