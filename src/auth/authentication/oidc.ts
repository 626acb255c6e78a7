// Optional authentication of OIDC ID tokens, verified locally (no API call) with
// @fastify/jwt against the issuer's published keys (JWKS), and mapped to a Kubernetes user
// the way the API server's --oidc-* flags do: username and groups claims, with prefixes.
//
// Keys are fetched from the issuer's discovery document and cached; an unknown key id
// triggers at most one refresh per KEY_REFRESH_MIN_MS (key rotation without a restart,
// without letting garbage tokens hammer the issuer). If the keys cannot be fetched the
// request fails closed with 503.
import { createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import fastifyJwt from '@fastify/jwt';
import type { Algorithm } from 'fast-jwt';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { Logger } from 'pino';
import { Agent, fetch } from 'undici';
import type { OidcConfig } from '../../config/gateway.js';
import { ReloadingAgent } from '../../tls/reloading-agent.js';
import { AuthVerdict, unauthenticated, unavailable } from '../verdict.js';
import type { UserInfo } from '../user.js';
import type { UnverifiedJwt } from './bearer.js';

const KEY_REFRESH_MIN_MS = 10_000;
const KEY_MAX_AGE_MS = 10 * 60_000;
const ALGORITHMS: Algorithm[] = ['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512'];

export interface OidcVerifier {
  /** Whether this token claims to come from the configured issuer. */
  handles(jwt: UnverifiedJwt): boolean;
  /** The user of a verified token; an unauthenticated or unavailable verdict otherwise. */
  verify(request: FastifyRequest): Promise<UserInfo>;
}

declare module 'fastify' {
  interface FastifyInstance {
    oidc?: OidcVerifier;
  }
  interface FastifyRequest {
    oidcJwtVerify<T = Record<string, unknown>>(): Promise<T>;
  }
}

class JwksKeys {
  private keys = new Map<string, KeyObject>();
  private fetchedAt = 0;
  private refreshing: Promise<void> | undefined;
  private readonly https: ReloadingAgent;

  constructor(private readonly cfg: OidcConfig, private readonly timeoutMs: number, log: Logger) {
    // --oidc-ca-file follows its file; a new CA also ends the back-off of a failed fetch,
    // since the failure may have been the old CA's.
    this.https = new ReloadingAgent({ caFile: cfg.caFile }, ({ ca }) => new Agent({ connect: ca ? { ca } : {} }), {
      what: 'OIDC CA bundle', log, onReload: () => {
        this.fetchedAt = 0;
      },
    });
  }

  async key(kid: string | undefined): Promise<KeyObject> {
    const stale = Date.now() - this.fetchedAt > KEY_MAX_AGE_MS;
    const unknown = this.find(kid) === undefined;
    if (stale || (unknown && Date.now() - this.fetchedAt > KEY_REFRESH_MIN_MS)) await this.refresh();
    const key = this.find(kid);
    if (!key) throw unauthenticated('invalid bearer token: signed with a key the OIDC issuer does not publish');
    return key;
  }

  private find(kid: string | undefined): KeyObject | undefined {
    if (kid !== undefined) return this.keys.get(kid);
    // Without a key id, only an issuer with a single key is unambiguous.
    return this.keys.size === 1 ? this.keys.values().next().value : undefined;
  }

  private async refresh(): Promise<void> {
    this.refreshing ??= this.load().finally(() => {
      this.refreshing = undefined;
    });
    await this.refreshing;
  }

  private async load(): Promise<void> {
    try {
      const discovery = await this.getJson(`${this.cfg.issuerUrl.replace(/\/$/, '')}/.well-known/openid-configuration`) as { issuer?: string; jwks_uri?: string };
      if (discovery.issuer !== this.cfg.issuerUrl) throw new Error(`discovery names issuer "${discovery.issuer}", not "${this.cfg.issuerUrl}"`);
      if (!discovery.jwks_uri?.startsWith('https://')) throw new Error('discovery has no https jwks_uri');
      const jwks = await this.getJson(discovery.jwks_uri) as { keys?: (JsonWebKey & { kid?: string; use?: string })[] };
      const keys = new Map<string, KeyObject>();
      for (const jwk of jwks.keys ?? []) {
        if (jwk.use !== undefined && jwk.use !== 'sig') continue;
        try {
          keys.set(jwk.kid ?? '', createPublicKey({ key: jwk, format: 'jwk' }));
        } catch {
          // An unsupported key type in the set is not a reason to reject the others.
        }
      }
      this.keys = keys;
      this.fetchedAt = Date.now();
    } catch (err) {
      // Remember the attempt, so a broken issuer is not asked again on every request.
      this.fetchedAt = Date.now() - KEY_MAX_AGE_MS + KEY_REFRESH_MIN_MS;
      throw unavailable(`cannot verify OIDC tokens: fetching the issuer's keys failed (${(err as Error).message})`);
    }
  }

  private async getJson(url: string): Promise<unknown> {
    const res = await fetch(url, { dispatcher: this.https.current, signal: AbortSignal.timeout(this.timeoutMs) });
    if (!res.ok) throw new Error(`${url} answered ${res.status}`);
    return await res.json();
  }

  async close(): Promise<void> {
    await this.https.close();
  }
}

/** Claims an ID token must carry; fast-jwt checks a claim only when it is present or listed here. */
export const REQUIRED_CLAIMS = ['iss', 'aud', 'exp'] as const;

/**
 * Maps verified claims to a user like the API server's OIDC authenticator, and refuses
 * (401) what the API server would not accept from an ID token: no username claim, an email
 * whose `email_verified` is present but not `true`, and any name in the `system:` space —
 * an OIDC identity must never become system:masters, a node or a ServiceAccount.
 */
export function oidcUser(cfg: OidcConfig, claims: Record<string, unknown>): UserInfo {
  const raw = claims[cfg.usernameClaim];
  if (typeof raw !== 'string' || raw === '') throw unauthenticated(`invalid bearer token: no "${cfg.usernameClaim}" claim`);
  if (cfg.usernameClaim === 'email' && 'email_verified' in claims && claims.email_verified !== true) {
    throw unauthenticated('invalid bearer token: email not verified (email_verified must be true)');
  }
  let groups: string[] = [];
  if (cfg.groupsClaim) {
    const g = claims[cfg.groupsClaim];
    if (typeof g === 'string') groups = [g];
    else if (Array.isArray(g) && g.every((x) => typeof x === 'string')) groups = g as string[];
    else if (g !== undefined) throw unauthenticated(`invalid bearer token: the "${cfg.groupsClaim}" claim is not a string or a list of strings`);
  }
  const username = cfg.usernamePrefix + raw;
  const mapped = groups.map((x) => cfg.groupsPrefix + x);
  if (username.startsWith('system:')) throw unauthenticated(`invalid bearer token: the OIDC user name "${username}" is in the reserved "system:" space`);
  const reserved = mapped.find((g) => g.startsWith('system:'));
  if (reserved !== undefined) throw unauthenticated(`invalid bearer token: the OIDC group "${reserved}" is in the reserved "system:" space`);
  return { username, groups: [...mapped, 'system:authenticated'], via: 'oidc' };
}

export const oidcPlugin = fp(async (app: FastifyInstance, opts: { config: OidcConfig; timeoutMs: number }) => {
  const cfg = opts.config;
  const keys = new JwksKeys(cfg, opts.timeoutMs, app.log as Logger);
  await app.register(fastifyJwt, {
    namespace: 'oidc',
    decoratorName: 'oidcClaims',
    secret: async (_request: FastifyRequest, token: unknown) => {
      const header = (token as { header?: { kid?: string } }).header;
      return (await keys.key(header?.kid)).export({ format: 'pem', type: 'spki' });
    },
    decode: { complete: true },
    verify: { allowedIss: cfg.issuerUrl, allowedAud: cfg.clientId, algorithms: ALGORITHMS, clockTolerance: 30, requiredClaims: [...REQUIRED_CLAIMS] },
  });
  app.addHook('onClose', () => keys.close());
  app.decorate('oidc', {
    handles: (jwt: UnverifiedJwt) => jwt.claims.iss === cfg.issuerUrl,
    async verify(request: FastifyRequest): Promise<UserInfo> {
      let claims: Record<string, unknown>;
      try {
        claims = await request.oidcJwtVerify<Record<string, unknown>>();
      } catch (err) {
        if (err instanceof AuthVerdict) throw err;
        throw unauthenticated(`invalid bearer token: ${(err as Error).message}`);
      }
      return oidcUser(cfg, claims);
    },
  } satisfies OidcVerifier);
}, { name: 'kube-pcap-oidc' });
