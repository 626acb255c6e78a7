// The agent's HTTPS application: the file API for the gateway (routes/agent), health and
// metrics. Callers of the file API present the gateway's client certificate (mutual TLS)
// and a token for the agent's audience, which must be allowed packetcaptures/files in the
// capture's namespace, exactly like users at the gateway. /metrics names namespaces and
// captures, and the agent shares the node's network with every hostNetwork pod: its readers
// present a token the API server accepts and must be allowed `get` on the non-resource URL
// /metrics (Prometheus's usual ClusterRole), as kube-rbac-proxy does it.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autoload from '@fastify/autoload';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { ConnectionLimits } from '../config/common.js';
import { Counter, Histogram, type Registry } from 'prom-client';
import { authenticationChain } from '../auth/authentication/chain.js';
import { TokenReviewAuthenticator } from '../auth/authentication/token-review.js';
import { SubjectAccessReviewer } from '../auth/authorization/subject-access-review.js';
import { metricsReader } from '../auth/metrics-reader.js';
import { countLookups } from '../auth/review-cache.js';
import { authorizeFilesPlugin } from '../http/plugins/authorize-files.js';
import { errorsPlugin } from '../http/plugins/errors.js';
import { healthPlugin } from '../http/plugins/health.js';
import { metricsEndpointPlugin, requestMetricsPlugin } from '../http/plugins/metrics.js';
import { createHttpsServer } from '../http/server-options.js';
import type { TlsMaterial } from '../http/tls.js';
import type { KubeClient } from '../kube/client.js';
import type { CaptureStore } from './capture-store.js';
import type { CaptureActivity } from './decorators.js';
import type { FilePins } from './file-pins.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export interface AgentAppDeps {
  kube: KubeClient;
  limits: ConnectionLimits;
  log: Logger;
  tls: TlsMaterial;
  registry: Registry;
  store: CaptureStore;
  pins: FilePins;
  activity: CaptureActivity;
  authAudience: string;
  /** Common names of the gateway's client certificate (verified against tls.clientCa). */
  gatewayClientNames: string[];
  apiTimeoutMs: number;
  notReadyReason: () => Promise<string | undefined>;
  /** This node's name, as the files' pcapng names it. */
  nodeName: string;
}

export async function buildAgentApp(deps: AgentAppDeps): Promise<FastifyInstance> {
  const app = createHttpsServer(deps.tls, deps.log, deps.limits);
  const lookups = new Counter({ name: 'kube_pcap_review_cache_lookups_total', help: 'Review cache lookups by review and result (hit, miss, coalesced).', labelNames: ['review', 'result'], registers: [deps.registry] });
  const reviewSeconds = new Histogram({ name: 'kube_pcap_review_duration_seconds', help: 'Latency of reviews sent to the API server.', labelNames: ['review', 'outcome'], buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5], registers: [deps.registry] });
  // The only caller is the gateway, with one token: short TTLs cost little.
  const tokenReview = new TokenReviewAuthenticator(deps.kube, {
    audiences: [deps.authAudience], successTtlMs: 10_000, failureTtlMs: 5_000, maxEntries: 1000, timeoutMs: deps.apiTimeoutMs,
    onLookup: countLookups(lookups, 'tokenreview'), onReview: (s, outcome) => reviewSeconds.observe({ review: 'tokenreview', outcome }, s),
  });
  const reviewer = new SubjectAccessReviewer(deps.kube, {
    allowTtlMs: 10_000, denyTtlMs: 5_000, maxEntries: 10_000, timeoutMs: deps.apiTimeoutMs,
    onLookup: countLookups(lookups, 'subjectaccessreview'), onReview: (s, outcome) => reviewSeconds.observe({ review: 'subjectaccessreview', outcome }, s),
  });
  // Scrapers' tokens are bound to the API server's own audiences, not the agent's.
  const scraperReview = new TokenReviewAuthenticator(deps.kube, {
    audiences: [], successTtlMs: 60_000, failureTtlMs: 10_000, maxEntries: 100, timeoutMs: deps.apiTimeoutMs,
    onLookup: countLookups(lookups, 'tokenreview'), onReview: (s, outcome) => reviewSeconds.observe({ review: 'tokenreview', outcome }, s),
  });
  app.decorate('captureStore', deps.store);
  app.decorate('captureActivity', deps.activity);
  app.decorate('filePins', deps.pins);
  app.decorate('nodeName', deps.nodeName);
  await app.register(errorsPlugin);
  await app.register(requestMetricsPlugin, { registry: deps.registry, prefix: 'kube_pcap_agent' });
  await app.register(metricsEndpointPlugin, { registry: deps.registry, authorize: metricsReader(scraperReview, reviewer) });
  await app.register(healthPlugin, { notReadyReason: deps.notReadyReason });
  // Only the gateway's client certificate opens the file API; the token beside it is
  // reviewed as before, so a token taken from the gateway opens no agent by itself.
  const authenticate = authenticationChain({ certificates: { require: deps.gatewayClientNames }, tokenReview });
  await app.register(authorizeFilesPlugin, { authenticate, reviewer });
  await app.register(autoload, { dir: join(ROOT, 'dist', 'routes', 'agent') });
  return app;
}
