// The gateway's HTTP application: plugins as small named units, routes loaded from
// routes/gateway (served both under /packet-capture, as Calico's URLs have it, and without,
// as Calico's proxy strips it), one error handler.
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autoload from '@fastify/autoload';
import type { FastifyInstance, RouteOptions } from 'fastify';
import { destination, type Logger } from 'pino';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { authenticationChain } from '../auth/authentication/chain.js';
import { KnownTokens } from '../auth/authentication/known-tokens.js';
import { ConcurrencyLimit } from '../flow/concurrency-limit.js';
import { TokenReviewAuthenticator } from '../auth/authentication/token-review.js';
import { SubjectAccessReviewer } from '../auth/authorization/subject-access-review.js';
import { countLookups } from '../auth/review-cache.js';
import type { GatewayConfig } from '../config/gateway.js';
import { authFailureLimitPlugin } from '../http/plugins/auth-failure-limit.js';
import { auditPlugin } from '../http/plugins/audit.js';
import { authorizeFilesPlugin } from '../http/plugins/authorize-files.js';
import { errorsPlugin } from '../http/plugins/errors.js';
import { healthPlugin } from '../http/plugins/health.js';
import { metricsEndpointPlugin, requestMetricsPlugin } from '../http/plugins/metrics.js';
import { metricsReader } from '../auth/metrics-reader.js';
import { addressSet } from '../config/address-set.js';
import { createHttpsServer } from '../http/server-options.js';
import type { TlsMaterial } from '../http/tls.js';
import type { KubeClient } from '../kube/client.js';
import { AgentClient } from './agent-client.js';
import { AgentDirectory } from './agent-directory.js';
import { startAggregation, type LeaderWorkFactory } from './aggregation.js';
import { CaptureCache } from './capture-cache.js';
import { CaptureFiles } from './capture-files.js';
import { PerUserSlots } from '../http/per-user-slots.js';
import './decorators.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const OPENAPI_FILE = join(ROOT, 'openapi.yaml');
export const CAPTURE_PREFIX = '/packet-capture';
/** How long a token once accepted keeps its own lane when it carries no expiry of its own. */
const KNOWN_TOKEN_HORIZON_MS = 60 * 60_000;

export interface GatewayDeps {
  config: GatewayConfig;
  kube: KubeClient;
  log: Logger;
  tls: TlsMaterial;
  /** What the Lease holder runs beside the status aggregator (the exporter: src/run-gateway.ts). */
  leaderWork?: LeaderWorkFactory[];
  /** Observers of each application's route table, told of every route as it is added (the fast tier's conformance check). */
  onRoute?: { api?: (route: RouteOptions) => void; ops?: (route: RouteOptions) => void };
}

/** The gateway's two listeners: the API, and operations (probes and /metrics) apart from it. */
export interface GatewayApps {
  api: FastifyInstance;
  ops: FastifyInstance;
}

/** The operations listener's own connection cap: probes and a few scrapers. */
const OPS_MAX_CONNECTIONS = 64;
/** Per address: the kubelet's probes and a scraper need one or two each (the NetworkPolicy admits whom). */
const OPS_MAX_CONNECTIONS_PER_ADDRESS = 8;

export async function buildGatewayApp({ config, kube, log, tls, onRoute, leaderWork }: GatewayDeps): Promise<GatewayApps> {
  const registry = new Registry();
  const perAddressRefused = new Counter({ name: 'kube_pcap_gateway_connections_refused_total', help: 'Connections closed on arrival because their source address held --max-connections-per-address.', registers: [registry] });
  const app = createHttpsServer(tls, log, { ...config.limits, onRefusedPerAddress: () => perAddressRefused.inc() });
  const ops = createHttpsServer(tls, log.child({ listener: 'ops' }), { ...config.limits, maxConnections: OPS_MAX_CONNECTIONS, maxConnectionsPerAddress: OPS_MAX_CONNECTIONS_PER_ADDRESS });
  if (onRoute?.api) app.addHook('onRoute', onRoute.api);
  if (onRoute?.ops) ops.addHook('onRoute', onRoute.ops);
  const cacheLookups = new Counter({ name: 'kube_pcap_review_cache_lookups_total', help: 'Review cache lookups by review and result (hit, miss, coalesced).', labelNames: ['review', 'result'], registers: [registry] });
  const reviewSeconds = new Histogram({ name: 'kube_pcap_review_duration_seconds', help: 'Latency of TokenReviews and SubjectAccessReviews sent to the API server.', labelNames: ['review', 'outcome'], buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5], registers: [registry] });
  const agentErrors = new Counter({ name: 'kube_pcap_gateway_agent_errors_total', help: 'Failed calls to agents, by operation.', labelNames: ['operation'], registers: [registry] });
  const gatewayMetrics = {
    bytesStreamed: new Counter({ name: 'kube_pcap_gateway_bytes_streamed_total', help: 'Bytes of downloads (files.zip, files.pcapng) sent to clients.', registers: [registry] }),
    downloads: new Counter({ name: 'kube_pcap_gateway_downloads_total', help: 'files.zip downloads by result (complete, aborted).', labelNames: ['result'], registers: [registry] }),
    encodedBytes: new Counter({ name: 'kube_pcap_gateway_encoded_bytes_total', help: 'Bytes sent with a Content-Encoding (files.pcapng, the live stream), by coding: set beside kube_pcap_gateway_bytes_streamed_total they show what compression saves.', labelNames: ['coding'], registers: [registry] }),
    pcapngDownloads: new Counter({ name: 'kube_pcap_gateway_pcapng_downloads_total', help: 'files.pcapng downloads by result (complete, aborted).', labelNames: ['result'], registers: [registry] }),
    agentErrors,
  };

  // Bounded cost of unknown credentials (docs/security.md): a lane of few places for tokens
  // never seen valid, and a per-client limit of failures.
  const reviewsInFlight = new Gauge({ name: 'kube_pcap_gateway_unverified_tokenreviews_in_flight', help: 'TokenReviews in flight for tokens never seen valid.', registers: [registry] });
  const reviewsPeak = new Gauge({ name: 'kube_pcap_gateway_unverified_tokenreviews_in_flight_peak', help: 'The most TokenReviews ever in flight at once for tokens never seen valid.', registers: [registry] });
  const authnRefused = new Counter({ name: 'kube_pcap_gateway_authn_refused_total', help: 'Requests refused before any review: queue_full (503), rate_limited (429).', labelNames: ['reason'], registers: [registry] });
  const unknownLane = new ConcurrencyLimit({
    maxInFlight: config.authnLimits.unverifiedMaxInFlight,
    maxQueued: config.authnLimits.unverifiedQueue,
    what: 'unverified credentials to be reviewed',
    onInFlight: (n) => {
      reviewsInFlight.set(n);
      reviewsPeak.set(unknownLane.peak);
    },
  });
  const known = new KnownTokens(config.cache.maxEntries, KNOWN_TOKEN_HORIZON_MS);
  const tokenReview = new TokenReviewAuthenticator(kube, {
    known,
    unknownLane,
    onQueueFull: () => authnRefused.inc({ reason: 'queue_full' }),
    // Tokens minted for the gateway are reviewed for its audiences; others for the API
    // server's own, unless only audience-bound tokens are accepted (docs/security.md).
    audiences: config.audienceBoundOnly ? config.tokenAudiences : [],
    boundAudiences: config.tokenAudiences,
    successTtlMs: config.cache.authnTtlMs,
    failureTtlMs: config.cache.authnFailureTtlMs,
    maxEntries: config.cache.maxEntries,
    timeoutMs: config.apiTimeoutMs,
    onLookup: countLookups(cacheLookups, 'tokenreview'),
    onReview: (s, outcome) => reviewSeconds.observe({ review: 'tokenreview', outcome }, s),
  });
  const reviewer = new SubjectAccessReviewer(kube, {
    allowTtlMs: config.cache.authzAllowTtlMs,
    denyTtlMs: config.cache.authzDenyTtlMs,
    maxEntries: config.cache.maxEntries,
    timeoutMs: config.apiTimeoutMs,
    onLookup: countLookups(cacheLookups, 'subjectaccessreview'),
    onReview: (s, outcome) => reviewSeconds.observe({ review: 'subjectaccessreview', outcome }, s),
  });
  const directory = new AgentDirectory(kube, config.agents.service, config.agents.portName, log.child({ component: 'agent-directory' }));
  const agents = new AgentClient({
    caFile: config.agents.caFile, certFile: config.agents.clientCertFile, keyFile: config.agents.clientKeyFile,
    serverName: config.agents.serverName, tokenFile: config.agents.tokenFile, timeoutMs: config.agents.timeoutMs, idleTimeoutMs: config.limits.idleTimeoutMs,
    log: log.child({ component: 'agent-client' }),
  });
  const captureReads = new Counter({ name: 'kube_pcap_gateway_capture_reads_total', help: 'PacketCaptures (with their node reports) read for requests, by source: cache (the watch) or api (a GET on a cache miss).', labelNames: ['source'], registers: [registry] });
  const cache = new CaptureCache(kube, { log: log.child({ component: 'capture-cache' }), apiTimeoutMs: config.apiTimeoutMs, metrics: { read: (source) => captureReads.inc({ source }) } });
  const captureFiles = new CaptureFiles(cache, directory, agents, {
    apiTimeoutMs: config.apiTimeoutMs,
    listConcurrency: config.agents.listConcurrency,
    log: log.child({ component: 'capture-files' }),
    onAgentError: (op) => agentErrors.inc({ operation: op }),
  });
  // Memory per download is bounded (16 KiB buffers through the pipeline); the number of
  // downloads is what keeps a replica under its memory limit.
  const downloadsInFlight = new Gauge({ name: 'kube_pcap_gateway_downloads_in_flight', help: 'files.zip streams in progress.', registers: [registry] });
  const downloadsQueued = new Gauge({ name: 'kube_pcap_gateway_downloads_queued', help: 'Downloads waiting for a place (--max-concurrent-downloads).', registers: [registry] });
  const downloadSlots: ConcurrencyLimit = new ConcurrencyLimit({
    maxInFlight: config.downloads.maxConcurrent,
    maxQueued: config.downloads.queue,
    what: 'downloads',
    onInFlight: (n) => {
      downloadsInFlight.set(n);
      downloadsQueued.set(downloadSlots.queued);
    },
  });
  app.decorate('downloadSlots', downloadSlots);
  const liveStreams = new Gauge({ name: 'kube_pcap_gateway_live_streams', help: 'Live streams open.', registers: [registry] });
  app.decorate('accessRecheckMs', config.downloads.accessRecheckMs);
  app.decorate('userDownloadSlots', new PerUserSlots(config.downloads.maxPerUser, 'downloads', '--max-downloads-per-user'));
  app.decorate('userLiveSlots', new PerUserSlots(config.downloads.maxLiveStreamsPerUser, 'live streams', '--max-live-streams-per-user'));
  app.decorate('liveSlots', new ConcurrencyLimit({ maxInFlight: config.downloads.maxLiveStreams, maxQueued: 0, what: 'live streams', onInFlight: (n) => liveStreams.set(n) }));
  directory.start();
  cache.start();
  const aggregation = startAggregation({ kube, cache, files: captureFiles, config, log, registry }, leaderWork);
  app.addHook('onClose', async () => {
    await aggregation.stop();
    await cache.stop();
    await directory.stop();
    await agents.close();
  });

  app.decorate('captureFiles', captureFiles);
  app.decorate('gatewayMetrics', gatewayMetrics);
  await app.register(errorsPlugin);
  // The audit trail: its own stream, so it can be shipped and kept apart from the log.
  const auditOut = destination({ dest: config.auditLog === '-' ? 1 : config.auditLog, append: true, mkdir: true, mode: 0o600, sync: false });
  app.addHook('onClose', async () => {
    try {
      auditOut.flushSync();
    } catch {
      // not open yet: nothing was written
    }
    if (config.auditLog !== '-') auditOut.end();
  });
  await app.register(auditPlugin, { sink: { write: (record) => auditOut.write(`${JSON.stringify(record)}\n`) } });
  await app.register(requestMetricsPlugin, { registry, prefix: 'kube_pcap_gateway' });
  // Scrapers' tokens are bound to the API server's own audiences, whatever --token-audiences says.
  const scraperReview = new TokenReviewAuthenticator(kube, {
    audiences: [], successTtlMs: 60_000, failureTtlMs: 10_000, maxEntries: 100, timeoutMs: config.apiTimeoutMs,
    onLookup: countLookups(cacheLookups, 'tokenreview'), onReview: (s, outcome) => reviewSeconds.observe({ review: 'tokenreview', outcome }, s),
  });
  await ops.register(errorsPlugin);
  // Scrapes answer through a short API server outage from these caches (a minute each).
  const scraperAccess = new SubjectAccessReviewer(kube, {
    allowTtlMs: 60_000, denyTtlMs: 10_000, maxEntries: 100, timeoutMs: config.apiTimeoutMs,
    onLookup: countLookups(cacheLookups, 'subjectaccessreview'), onReview: (s, outcome) => reviewSeconds.observe({ review: 'subjectaccessreview', outcome }, s),
  });
  await ops.register(metricsEndpointPlugin, { registry, authorize: metricsReader(scraperReview, scraperAccess) });
  await ops.register(healthPlugin, {
    notReadyReason: async () => {
      if (!directory.synced) return `agent endpoints not synced${directory.lastError ? ` (${directory.lastError})` : ''}`;
      try {
        await kube.request({ path: '/version', timeoutMs: 2000 });
        return undefined;
      } catch (err) {
        return `the API server does not answer (${(err as Error).message})`;
      }
    },
  });
  const openapi = await readFile(OPENAPI_FILE, 'utf8');
  app.get('/openapi.yaml', { logLevel: 'warn' }, async (_request, reply) => reply.type('application/yaml').send(openapi));
  if (config.oidc) {
    // Loaded only when configured: @fastify/jwt and key handling cost memory otherwise unused.
    const { oidcPlugin } = await import('../auth/authentication/oidc.js');
    await app.register(oidcPlugin, { config: config.oidc, timeoutMs: config.apiTimeoutMs });
  }
  await app.register(authFailureLimitPlugin, {
    shared: addressSet(config.limits.sharedAddresses ?? [], '--shared-client-addresses'),
    maxFailures: config.authnLimits.failureLimit,
    windowMs: config.authnLimits.failureWindowMs,
    maxClients: config.cache.maxEntries,
    onLimited: () => authnRefused.inc({ reason: 'rate_limited' }),
  });
  const authenticate = authenticationChain({ certificates: tls.clientCa ? 'identify' : undefined, oidc: app.oidc, tokenReview, known, failures: app.authFailures });
  await app.register(authorizeFilesPlugin, { authenticate, reviewer, inFlightPerUser: new PerUserSlots(config.maxRequestsPerUser, 'requests', '--max-requests-per-user', 1) });

  const routes = join(ROOT, 'dist', 'routes', 'gateway');
  await app.register(autoload, { dir: routes, options: { prefix: CAPTURE_PREFIX } });
  await app.register(autoload, { dir: routes, options: { prefix: '' } });
  return { api: app, ops };
}
