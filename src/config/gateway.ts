// `kube-pcap gateway` configuration.
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { LeaderElectionOptions } from '../kube/leader-election.js';
import { addressSet, LOOPBACK } from './address-set.js';
import { serverConfig, serverOptions, type ServerConfig } from './common.js';
import { type OptionTable, type OptionValues, parseListen, UsageError } from './options.js';

const C = 'kube-pcap gateway';

export const gatewayOptions: OptionTable = {
  ...serverOptions(9443, 64),
  'ops-listen': { type: 'string', metavar: 'HOST:PORT', default: '0.0.0.0:9445', help: 'Address and port of the operations listener: /healthz, /readyz and /metrics (HTTPS, same certificate), apart from the API so that a flood of clients does not fail the probes.' },
  'token-audiences': { type: 'list', default: ['kube-pcap'], help: 'Audiences of tokens minted for the gateway (`kubectl create token SA --audience kube-pcap`), which are useless against the API server: a token naming one is reviewed for these.' },
  'audience-bound-tokens-only': { type: 'boolean', default: false, help: 'Refuse every other bearer token (a user\'s full API credential, static and most cloud webhook tokens); OIDC tokens and client certificates are still accepted when configured.' },
  'client-ca-file': { type: 'string', metavar: 'FILE', help: 'Accept client certificates signed by this CA (the cluster\'s client CA, as kube-apiserver takes it): user = CN, groups = O. Without it client certificates are ignored. Reloaded when it changes.' },
  'oidc-issuer-url': { type: 'string', metavar: 'URL', help: 'Also accept OIDC ID tokens from this issuer, verified locally against its JWKS.' },
  'oidc-client-id': { type: 'string', metavar: 'ID', help: 'The audience OIDC tokens must carry (required with --oidc-issuer-url).' },
  'oidc-username-claim': { type: 'string', metavar: 'CLAIM', default: 'sub', help: 'Claim holding the user name.' },
  'oidc-username-prefix': { type: 'string', metavar: 'PREFIX', help: 'Prefix for OIDC user names; default "<issuer>#" unless the claim is email; "-" for none.' },
  'oidc-groups-claim': { type: 'string', metavar: 'CLAIM', help: 'Claim holding the groups (a string or a list).' },
  'oidc-groups-prefix': { type: 'string', metavar: 'PREFIX', help: 'Prefix for OIDC group names.' },
  'oidc-ca-file': { type: 'string', metavar: 'FILE', help: 'CA bundle for the issuer\'s HTTPS endpoints (reloaded when it changes).' },
  'agent-service': { type: 'string', metavar: 'NAMESPACE/NAME', default: 'kube-pcap-agents/kube-pcap-agent', help: 'The agents\' Service, whose EndpointSlices map nodes to agents.' },
  'agent-port-name': { type: 'string', metavar: 'NAME', default: 'https', help: 'Port name of the agents\' Service.' },
  'agent-ca-file': { type: 'string', metavar: 'FILE', help: 'CA that signed the agents\' serving certificates (required; reloaded when it changes).' },
  'agent-server-name': { type: 'string', metavar: 'NAME', default: 'kube-pcap-agent.kube-pcap-agents.svc', help: 'Name the agents\' certificates are checked against.' },
  'agent-token-file': { type: 'string', metavar: 'FILE', help: 'ServiceAccount token with audience kube-pcap-agent, presented to agents for their SubjectAccessReview (re-read when it changes).' },
  'agent-client-cert-file': { type: 'string', metavar: 'FILE', help: 'The gateway\'s client certificate for the agents, issued by the agents\' CA (required; reloaded when it changes).' },
  'agent-client-key-file': { type: 'string', metavar: 'FILE', help: 'Its private key (required; reloaded when it changes).' },
  'agent-timeout-seconds': { type: 'integer', default: 10, min: 1, max: 300, help: 'How long to wait for an agent to start answering (and, for a listing, to finish it).' },
  'agent-list-concurrency': { type: 'integer', default: 64, min: 1, max: 4096, help: 'Agents asked for their listing at once, per request (a capture on 1 000 nodes is listed 64 at a time).' },
  'max-concurrent-downloads': { type: 'integer', default: 16, min: 1, max: 100_000, help: 'Downloads streamed at once by this replica; more wait in a queue. A replica is CPU-bound well below 16 streams: more add memory, not throughput.' },
  'download-queue': { type: 'integer', default: 512, min: 0, max: 1_000_000, help: 'Downloads waiting for a place; beyond, 429 with Retry-After.' },
  'max-downloads-per-user': { type: 'integer', default: 4, min: 0, max: 100_000, help: 'Downloads one identity may have streaming or queued at once on this replica; beyond, 429 with Retry-After (0: no limit).' },
  'max-live-streams-per-user': { type: 'integer', default: 4, min: 0, max: 10_000, help: 'Live streams one identity may have open at once on this replica; beyond, 429 with Retry-After (0: no limit).' },
  'max-live-streams': { type: 'integer', default: 32, min: 1, max: 10_000, help: 'Live streams open at once on this replica (each holds a connection to every node of its capture); beyond, 429 with Retry-After.' },
  'audit-log': { type: 'string', metavar: 'PATH', default: '-', help: 'Where the audit records go, one JSON line per request for packets: a file (appended, mode 0600), or - for standard output beside the log.' },
  'access-recheck-seconds': { type: 'integer', default: 60, min: 0, max: 86400, help: 'Live streams and downloads authenticate and authorize their caller again this often, and end when the answer is no (0: never).' },
  'authn-cache-ttl-seconds': { type: 'integer', default: 10, min: 0, max: 3600, help: 'How long a successful token review is reused (never past the token\'s expiry).' },
  'authn-failure-ttl-seconds': { type: 'integer', default: 5, min: 0, max: 300, help: 'How long a rejected token is remembered.' },
  'authz-allow-ttl-seconds': { type: 'integer', default: 10, min: 0, max: 3600, help: 'How long an allowing SubjectAccessReview is reused.' },
  'authz-deny-ttl-seconds': { type: 'integer', default: 5, min: 0, max: 3600, help: 'How long a denying SubjectAccessReview is reused.' },
  'cache-max-entries': { type: 'integer', default: 10_000, min: 1, max: 10_000_000, help: 'Bound of each review cache.' },
  'api-timeout-seconds': { type: 'integer', default: 5, min: 1, max: 60, help: 'Timeout of each review and read sent to the API server.' },
  'authn-unverified-max-inflight': { type: 'integer', default: 4, min: 1, max: 1000, help: 'TokenReviews in flight at once for tokens never seen valid (known-valid tokens have their own lane).' },
  'authn-unverified-queue': { type: 'integer', default: 64, min: 0, max: 100_000, help: 'Such tokens waiting for a place; beyond, 503 with Retry-After.' },
  'authn-failure-limit': { type: 'integer', default: 30, min: 0, max: 1_000_000, help: 'Failed authentications per client per window before 429 (0: no limit); a token known valid is never limited.' },
  'authn-failure-window-seconds': { type: 'integer', default: 60, min: 1, max: 86400, help: 'The window of --authn-failure-limit.' },
  'leader-election-lease': { type: 'string', metavar: 'NAMESPACE/NAME', default: 'kube-pcap/kube-pcap-status-aggregator', help: 'The Lease whose holder is the status aggregator (the one replica that writes PacketCapture status).' },
  'leader-election-identity': { type: 'string', metavar: 'ID', env: 'POD_NAME', help: 'This replica\'s identity in the Lease (default: the pod name, else the host name, with a random suffix).' },
  'leader-election-lease-duration-seconds': { type: 'integer', default: 15, min: 2, max: 3600, help: 'How long a Lease not renewed keeps others from taking it.' },
  'leader-election-renew-deadline-seconds': { type: 'integer', default: 10, min: 1, max: 3600, help: 'A leader that could not renew for this long stops leading (shorter than the lease duration).' },
  'leader-election-retry-period-seconds': { type: 'integer', default: 2, min: 1, max: 600, help: 'How often the Lease is renewed, or tried by a candidate.' },
  'disable-exports': { type: 'boolean', default: false, help: 'Do not run PacketCaptureExports (the replica holding the Lease runs them otherwise): they stay Pending for another gateway, or none.' },
  'max-concurrent-exports': { type: 'integer', default: 2, min: 1, max: 64, help: 'Exports uploading at once on the leading replica; more wait (Pending, Queued).' },
  'export-part-size-mib': { type: 'integer', default: 8, min: 5, max: 5120, help: 'Multipart part size of exports: three parts of memory per export uploading; S3 allows 10 000 parts per object (8 MiB: objects up to 78 GiB).' },
  'export-max-bytes-per-second': { type: 'integer', default: 0, min: 0, max: 1e12, help: 'All exports of this replica together send at most this many bytes per second (0: no limit), so an upload across the internet leaves the node\'s uplink to the rest.' },
  'status-min-interval-ms': { type: 'integer', default: 1000, min: 100, max: 600_000, help: 'At most one status write per capture per this interval (longer for large statuses).' },
  'trusted-proxies': { type: 'list', default: [], help: 'Addresses or CIDRs of proxies (an Ingress controller) whose X-Forwarded-For names the client, for --authn-failure-limit; others\' is ignored.' },
  'shared-client-addresses': { type: 'list', default: [...LOOPBACK], help: 'Addresses or CIDRs that stand for many clients (loopback: every user of `kubectl port-forward`); failed authentications and connections from them are not limited per address, so one user cannot lock the others out. Empty: every address is a client of its own.' },
  'max-requests-per-user': { type: 'integer', default: 32, min: 0, max: 1_000_000, help: 'Requests one authenticated identity may have in flight at once on this replica; beyond, 429 with Retry-After (0: no limit).' },
};

export interface OidcConfig {
  issuerUrl: string;
  clientId: string;
  usernameClaim: string;
  usernamePrefix: string;
  groupsClaim: string | undefined;
  groupsPrefix: string;
  caFile: string | undefined;
}

export interface GatewayConfig extends ServerConfig {
  /** The operations listener: probes and /metrics. */
  opsListen: { host: string; port: number };
  /** Requests in flight per identity (0: no limit). */
  maxRequestsPerUser: number;
  tokenAudiences: string[];
  /** Only tokens bound to tokenAudiences; else the API server's own audiences too. */
  audienceBoundOnly: boolean;
  clientCaFile: string | undefined;
  oidc: OidcConfig | undefined;
  agents: {
    service: { namespace: string; name: string };
    portName: string;
    caFile: string;
    clientCertFile: string;
    clientKeyFile: string;
    serverName: string;
    tokenFile: string;
    timeoutMs: number;
    listConcurrency: number;
  };
  downloads: {
    maxConcurrent: number;
    queue: number;
    maxLiveStreams: number;
    /** What one identity may hold of each (0: no limit). */
    maxPerUser: number;
    maxLiveStreamsPerUser: number;
    /** How often a long response authorizes its caller again (0: never). */
    accessRecheckMs: number;
  };
  authnLimits: {
    unverifiedMaxInFlight: number;
    unverifiedQueue: number;
    failureLimit: number;
    failureWindowMs: number;
  };
  cache: {
    authnTtlMs: number;
    authnFailureTtlMs: number;
    authzAllowTtlMs: number;
    authzDenyTtlMs: number;
    maxEntries: number;
  };
  leaderElection: Omit<LeaderElectionOptions, 'log' | 'timeoutMs'>;
  statusMinIntervalMs: number;
  exports: { enabled: boolean; maxConcurrent: number; partSizeBytes: number; maxBytesPerSecond: number };
  apiTimeoutMs: number;
  /** Audit records' destination: a path, or '-' for standard output. */
  auditLog: string;
}

export function gatewayConfig(v: OptionValues): GatewayConfig {
  const base = serverConfig(C, v);
  const service = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([a-z0-9]([-a-z0-9]*[a-z0-9])?)$/.exec(v['agent-service'] as string);
  if (!service) throw new UsageError(`${C}: --agent-service must be NAMESPACE/NAME`);
  const caFile = v['agent-ca-file'] as string | undefined;
  const tokenFile = v['agent-token-file'] as string | undefined;
  if (!caFile) throw new UsageError(`${C}: --agent-ca-file is required (the CA of the agents' certificates)`);
  if (!tokenFile) throw new UsageError(`${C}: --agent-token-file is required (a token with audience kube-pcap-agent)`);
  const clientCertFile = v['agent-client-cert-file'] as string | undefined;
  const clientKeyFile = v['agent-client-key-file'] as string | undefined;
  if (!clientCertFile || !clientKeyFile) throw new UsageError(`${C}: --agent-client-cert-file and --agent-client-key-file are required (the gateway's client certificate for the agents)`);

  const lease = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([a-z0-9]([-.a-z0-9]*[a-z0-9])?)$/.exec(v['leader-election-lease'] as string);
  if (!lease) throw new UsageError(`${C}: --leader-election-lease must be NAMESPACE/NAME`);
  const leaseDurationMs = (v['leader-election-lease-duration-seconds'] as number) * 1000;
  const renewDeadlineMs = (v['leader-election-renew-deadline-seconds'] as number) * 1000;
  const retryPeriodMs = (v['leader-election-retry-period-seconds'] as number) * 1000;
  if (!(renewDeadlineMs < leaseDurationMs)) throw new UsageError(`${C}: --leader-election-renew-deadline-seconds must be less than --leader-election-lease-duration-seconds`);
  if (!(retryPeriodMs * 1.2 < renewDeadlineMs)) throw new UsageError(`${C}: --leader-election-retry-period-seconds (x1.2) must be less than --leader-election-renew-deadline-seconds`);
  // Unique even when two replicas share a host name: a restarted replica is a new candidate.
  const identity = `${(v['leader-election-identity'] as string | undefined) ?? hostname()}_${randomBytes(4).toString('hex')}`;

  let oidc: OidcConfig | undefined;
  const issuer = v['oidc-issuer-url'] as string | undefined;
  if (issuer) {
    let url: URL;
    try {
      url = new URL(issuer);
    } catch {
      throw new UsageError(`${C}: --oidc-issuer-url must be a URL`);
    }
    if (url.protocol !== 'https:') throw new UsageError(`${C}: --oidc-issuer-url must use https`);
    const clientId = v['oidc-client-id'] as string | undefined;
    if (!clientId) throw new UsageError(`${C}: --oidc-client-id is required with --oidc-issuer-url`);
    const usernameClaim = v['oidc-username-claim'] as string;
    const givenPrefix = v['oidc-username-prefix'] as string | undefined;
    // The API server's rule: claims other than email are prefixed with the issuer, so an
    // OIDC user can never impersonate a ServiceAccount or another issuer's users.
    const usernamePrefix = givenPrefix === '-' ? '' : (givenPrefix ?? (usernameClaim === 'email' ? '' : `${issuer}#`));
    oidc = {
      issuerUrl: issuer,
      clientId,
      usernameClaim,
      usernamePrefix,
      groupsClaim: v['oidc-groups-claim'] as string | undefined,
      groupsPrefix: (v['oidc-groups-prefix'] as string | undefined) ?? '',
      caFile: v['oidc-ca-file'] as string | undefined,
    };
  } else if (v['oidc-client-id']) {
    throw new UsageError(`${C}: --oidc-client-id needs --oidc-issuer-url`);
  }

  const trustedProxies = v['trusted-proxies'] as string[];
  const sharedAddresses = v['shared-client-addresses'] as string[];
  for (const [flag, list] of [['--trusted-proxies', trustedProxies], ['--shared-client-addresses', sharedAddresses]] as const) {
    try {
      addressSet(list, flag);
    } catch (err) {
      throw new UsageError(`${C}: ${(err as Error).message}`);
    }
  }
  if (v['audience-bound-tokens-only'] && (v['token-audiences'] as string[]).length === 0) throw new UsageError(`${C}: --audience-bound-tokens-only needs --token-audiences`);
  const opsListen = parseListen(C, v['ops-listen'] as string, '--ops-listen');
  if (opsListen.port !== 0 && opsListen.port === base.listen.port) throw new UsageError(`${C}: --ops-listen must be another port than --listen`);

  return {
    ...base,
    opsListen,
    maxRequestsPerUser: v['max-requests-per-user'] as number,
    limits: { ...base.limits, trustedProxies, sharedAddresses },
    authnLimits: {
      unverifiedMaxInFlight: v['authn-unverified-max-inflight'] as number,
      unverifiedQueue: v['authn-unverified-queue'] as number,
      failureLimit: v['authn-failure-limit'] as number,
      failureWindowMs: (v['authn-failure-window-seconds'] as number) * 1000,
    },
    tokenAudiences: v['token-audiences'] as string[],
    audienceBoundOnly: v['audience-bound-tokens-only'] as boolean,
    clientCaFile: v['client-ca-file'] as string | undefined,
    oidc,
    agents: {
      service: { namespace: service[1]!, name: service[3]! },
      portName: v['agent-port-name'] as string,
      caFile,
      clientCertFile,
      clientKeyFile,
      serverName: v['agent-server-name'] as string,
      tokenFile,
      timeoutMs: (v['agent-timeout-seconds'] as number) * 1000,
      listConcurrency: v['agent-list-concurrency'] as number,
    },
    downloads: {
      maxConcurrent: v['max-concurrent-downloads'] as number,
      queue: v['download-queue'] as number,
      maxLiveStreams: v['max-live-streams'] as number,
      maxPerUser: v['max-downloads-per-user'] as number,
      maxLiveStreamsPerUser: v['max-live-streams-per-user'] as number,
      accessRecheckMs: (v['access-recheck-seconds'] as number) * 1000,
    },
    cache: {
      authnTtlMs: (v['authn-cache-ttl-seconds'] as number) * 1000,
      authnFailureTtlMs: (v['authn-failure-ttl-seconds'] as number) * 1000,
      authzAllowTtlMs: (v['authz-allow-ttl-seconds'] as number) * 1000,
      authzDenyTtlMs: (v['authz-deny-ttl-seconds'] as number) * 1000,
      maxEntries: v['cache-max-entries'] as number,
    },
    leaderElection: { namespace: lease[1]!, name: lease[3]!, identity, leaseDurationMs, renewDeadlineMs, retryPeriodMs },
    statusMinIntervalMs: v['status-min-interval-ms'] as number,
    exports: {
      enabled: !(v['disable-exports'] as boolean),
      maxConcurrent: v['max-concurrent-exports'] as number,
      partSizeBytes: (v['export-part-size-mib'] as number) * 1024 * 1024,
      maxBytesPerSecond: v['export-max-bytes-per-second'] as number,
    },
    auditLog: v['audit-log'] as string,
    apiTimeoutMs: (v['api-timeout-seconds'] as number) * 1000,
  };
}
