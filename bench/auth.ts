// npm run bench:auth — what a flood of bad credentials costs: distinct garbage JWT-shaped
// tokens (unexpired, so each one would need a TokenReview) at a fixed rate over reused
// connections, while a legitimate user downloads files.zip one request after the other.
//
// Prints, for the user alone and under each flood: the user's p50/p99 latency, the
// TokenReviews the API server received (its own metrics), the peak of reviews in flight for
// unknown tokens (the gateway's gauge), how the flood was answered, and the CPU the gateway
// used (all of it on this machine's cores, shared with the API server, etcd, an agent and
// this script). Two floods: with the default per-client failure limit, and without it (so
// that the lane of unknown tokens is what bounds the reviews).
//
// The flood without the failure limit runs at each of --rates, to find the rate up to which
// the user's p99 stays within 2x (the API server shares this machine's cores, so every
// review it makes slows the user's requests, which read the PacketCapture from it too).
//
//   npm run bench:auth [-- --rate 400 --rates 100,200,400 --seconds 15 --connections 16]
import { mkdir, readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { applyNodeStatus } from '../test/harness/node-reports.js';
import { bridgeAddress } from '../test/harness/addresses.js';
import { apiServerRequests } from '../test/harness/apiserver-metrics.js';
import { gatewayMetricsText, publishAgents, scratchDir, startAgent, startGateway, type GatewayHandle, type Pki } from '../test/harness/kube-pcap.js';
import { writeDnsPcap } from '../test/harness/pcap-fixtures.js';
import { benchCluster, cpuSeconds, percentile, runBench, Teardowns } from './lib.js';

const { values: args } = parseArgs({
  options: {
    rate: { type: 'string', default: '400' },
    rates: { type: 'string', default: '100,200,400' },
    seconds: { type: 'string', default: '15' },
    connections: { type: 'string', default: '16' },
  },
});
const RATE = Number(args.rate);
const RATES = args.rates.split(',').map(Number);
const SECONDS = Number(args.seconds);
const CONNECTIONS = Number(args.connections);
const CAPTURE = 'bench-capture';
/** Flood requests left unanswered at once, at most: past it the generator skips a tick. */
const MAX_OUTSTANDING = 512;

interface Phase {
  name: string;
  latencies: number[];
  userFailures: number;
  tokenReviews: number;
  peakInFlight: number;
  floodSent: number;
  floodSkipped: number;
  answers: Map<number, number>;
  gatewayCpu: number;
}

let garbageSeq = 0;
function garbageToken(): string {
  const enc = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${enc({ alg: 'RS256', kid: 'bench' })}.${enc({ iss: 'https://nowhere.example', sub: `flood-${garbageSeq++}`, exp: Math.floor(Date.now() / 1000) + 3600 })}.${Buffer.from(`sig-${garbageSeq}`).toString('base64url')}`;
}

async function gaugeValue(gw: GatewayHandle, pki: Pki, name: string): Promise<number> {
  const line = (await gatewayMetricsText(gw, pki)).split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : NaN;
}

async function main(): Promise<void> {
  const td = new Teardowns();
  try {
    process.stdout.write(`kube-pcap authentication benchmark: flood ${RATE} requests/s of distinct garbage JWT-shaped tokens over ${CONNECTIONS} keep-alive connections for ${SECONDS} s, a user downloading meanwhile; ${availableParallelism()} cores shared by everything\n`);
    const { c, kube, pki, logDir, ns } = await benchCluster(td, 'bench-auth-logs', [CAPTURE]);
    const root = await scratchDir(td, 'bench-auth-files');
    const file = 'web-0_cali0-1700000000000001.pcap';
    await mkdir(join(root, ns, CAPTURE), { recursive: true });
    await writeDnsPcap(join(root, ns, CAPTURE, file), 50);
    const agent = await startAgent(td, c, { node: 'node-1', address: await bridgeAddress(td), captureDir: root, pki, logDir, extraArgs: ['--log-level=info'], sourceMaps: false });
    await applyNodeStatus(kube, { namespace: ns, name: CAPTURE }, 'kube-pcap-agent/node-1', { node: 'node-1', fileNames: [file], state: 'Finished' });
    await publishAgents(c, 'bench-agents', [agent]);
    const token = await c.tokenFor(ns, 'devops-sa');
    const ca = { ca: await readFile(pki.ca.certFile) };

    async function phase(gw: GatewayHandle, name: string, floodRate: number): Promise<Phase> {
      const user = new Agent({ connect: ca, connections: 1 });
      const floodAgent = new Agent({ connect: ca, connections: CONNECTIONS });
      try {
        const url = `${gw.url}/packet-capture/download/${ns}/${CAPTURE}/files.zip`;
        // Warm: the user's token reviewed and known valid, connections open.
        for (let i = 0; i < 20; i++) await (await request(url, { dispatcher: user, headers: { authorization: `Bearer ${token}` } })).body.dump();
        const tr0 = await apiServerRequests(c, 'tokenreviews');
        const cpu0 = await cpuSeconds(gw.proc.pid);
        const answers = new Map<number, number>();
        let outstanding = 0;
        let sent = 0;
        let skipped = 0;
        let due = 0;
        const floodTimer = floodRate > 0 ? setInterval(() => {
          // A fixed rate: every 10 ms tick sends what is due, unless too many wait.
          due += floodRate / 100;
          for (; due >= 1; due--) {
            if (outstanding >= MAX_OUTSTANDING) {
              skipped++;
              continue;
            }
            outstanding++;
            sent++;
            request(url, { dispatcher: floodAgent, headers: { authorization: `Bearer ${garbageToken()}` } })
              .then(async (r) => {
                answers.set(r.statusCode, (answers.get(r.statusCode) ?? 0) + 1);
                await r.body.dump();
              }, () => answers.set(0, (answers.get(0) ?? 0) + 1))
              .finally(() => {
                outstanding--;
              });
          }
        }, 10) : undefined;
        const latencies: number[] = [];
        let userFailures = 0;
        const until = Date.now() + SECONDS * 1000;
        while (Date.now() < until) {
          const t0 = process.hrtime.bigint();
          const res = await request(url, { dispatcher: user, headers: { authorization: `Bearer ${token}` } });
          await res.body.dump();
          if (res.statusCode !== 200) userFailures++;
          latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
        }
        if (floodTimer) clearInterval(floodTimer);
        while (outstanding > 0) await new Promise((r) => setTimeout(r, 20));
        return {
          name, latencies, userFailures, floodSent: sent, floodSkipped: skipped, answers,
          tokenReviews: (await apiServerRequests(c, 'tokenreviews')) - tr0,
          peakInFlight: await gaugeValue(gw, pki, 'kube_pcap_gateway_unverified_tokenreviews_in_flight_peak'),
          gatewayCpu: (await cpuSeconds(gw.proc.pid)) - cpu0,
        };
      } finally {
        await Promise.all([user.close(), floodAgent.close()]);
      }
    }

    const common = { pki, logDir, agentService: 'bench-agents', sourceMaps: false };
    // The flood comes from loopback like the user: --shared-client-addresses= makes loopback
    // one client, as an attacker with an address of its own is, so the failure limit applies.
    const defaults = await startGateway(td, c, { ...common, name: 'gateway-defaults', extraArgs: ['--log-level=info', '--max-downloads-per-user=0', '--max-live-streams-per-user=0', '--max-requests-per-user=0', '--shared-client-addresses=', '--max-connections-per-address=0'] });
    const unlimited = await startGateway(td, c, { ...common, name: 'gateway-no-failure-limit', extraArgs: ['--log-level=info', '--max-downloads-per-user=0', '--max-live-streams-per-user=0', '--max-requests-per-user=0', '--authn-failure-limit=0'] });
    const phases = [
      await phase(defaults, 'the user alone', 0),
      await phase(defaults, `flood ${RATE}/s, defaults (failure limit 30/min per client, lane 4 + queue 64)`, RATE),
      await phase(unlimited, 'the user alone (second gateway)', 0),
    ];
    for (const rate of RATES) phases.push(await phase(unlimited, `flood ${rate}/s, no failure limit (lane 4 + queue 64 only)`, rate));
    const lines = phases.map((p) => {
      const floodPart = p.floodSent > 0
        ? `; flood ${p.floodSent} sent (${(p.floodSent / SECONDS).toFixed(0)}/s${p.floodSkipped ? `, ${p.floodSkipped} ticks skipped at ${MAX_OUTSTANDING} outstanding` : ''}), answered ${[...p.answers].sort().map(([code, count]) => `${code === 0 ? 'error' : code} x${count}`).join(', ')}`
        : '';
      return `  ${p.name}: user p50 ${percentile(p.latencies, 50).toFixed(2)} ms, p99 ${percentile(p.latencies, 99).toFixed(2)} ms over ${p.latencies.length} downloads (${p.userFailures} not 200); TokenReviews received ${p.tokenReviews}; unknown-token reviews in flight, peak ${p.peakInFlight}; gateway CPU ${(p.gatewayCpu / SECONDS).toFixed(2)} cores${floodPart}`;
    });
    const ratio = (a: Phase, b: Phase): string => (percentile(a.latencies, 99) / percentile(b.latencies, 99)).toFixed(2);
    const floods = phases.filter((p) => p.floodSent > 0);
    process.stdout.write(['', ...lines, '',
      `user p99 under flood / alone (target <= 2): defaults at ${RATE}/s ${ratio(phases[1]!, phases[0]!)}; no failure limit ${RATES.map((r, i) => `at ${r}/s ${ratio(phases[3 + i]!, phases[2]!)}`).join(', ')}`,
      `unknown-token reviews in flight, peak of each flood: ${floods.map((p) => p.peakInFlight).join(', ')} (bound 4)`,
      ''].join('\n'));
  } finally {
    await td.run();
  }
}

runBench(main);
