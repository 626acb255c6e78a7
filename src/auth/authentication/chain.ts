// Who is calling, decided by the authenticators in a fixed order (docs/security.md):
//
//   1. a client certificate verified against --client-ca-file: the user is its CN, the
//      groups its O (like kube-apiserver, a verified certificate wins over a token);
//   2. an OIDC ID token from --oidc-issuer-url, verified locally;
//   3. any other bearer token: a TokenReview (ServiceAccount, static, bootstrap, cloud and
//      webhook tokens: whatever the API server accepts).
//
// The agents use the same chain differently: their caller must hold the gateway's client
// certificate (mutual TLS), and the bearer token beside it is what gets reviewed.
import type { FastifyRequest } from 'fastify';
import { isVerdict, unauthenticated } from '../verdict.js';
import type { UserInfo } from '../user.js';
import { bearerToken, precheckToken, tokenDigest } from './bearer.js';
import { certificateUser, peerCertificate } from './client-certificate.js';
import type { KnownTokens } from './known-tokens.js';
import type { OidcVerifier } from './oidc.js';
import type { TokenReviewAuthenticator } from './token-review.js';

/** A per-client limit of failed authentications (http/plugins/auth-failure-limit.ts). */
export interface FailureLimit {
  /** 429 when this client has used up its failures for the window. Counts nothing. */
  check(request: FastifyRequest): Promise<void>;
  /** Counts one failed authentication for this client. */
  record(request: FastifyRequest): Promise<void>;
}

export interface AuthenticationChainOptions {
  /**
   * "identify": a verified client certificate is the user (the gateway with --client-ca-file).
   * { require }: every caller must present a verified client certificate with one of these
   * common names, and is then authenticated by its bearer token (the agents).
   * Absent: certificates are ignored.
   */
  certificates?: 'identify' | { require: readonly string[] };
  oidc?: OidcVerifier;
  tokenReview: TokenReviewAuthenticator;
  /** Tokens accepted before (by TokenReview or OIDC): never limited. */
  known?: KnownTokens;
  /** Per-client limit of failed token authentications (429). */
  failures?: FailureLimit;
}

export type Authenticate = (request: FastifyRequest) => Promise<UserInfo>;

export function authenticationChain(opts: AuthenticationChainOptions): Authenticate {
  const { certificates, oidc, tokenReview, known, failures } = opts;
  return async (request) => {
    let certificateProblem: string | undefined;
    if (certificates !== undefined) {
      const cert = peerCertificate(request.raw.socket);
      if (certificates === 'identify') {
        if (cert.status === 'verified') return certificateUser(cert);
        if (cert.status === 'unverified') certificateProblem = cert.reason;
      } else if (cert.status !== 'verified' || !certificates.require.includes(cert.commonName)) {
        const why = cert.status === 'none' ? 'none was presented' : cert.status === 'unverified' ? cert.reason : `"${cert.commonName}" is not the gateway`;
        throw unauthenticated(`a client certificate issued to the gateway is required: ${why}`);
      }
    }
    if (certificateProblem !== undefined && !request.headers.authorization) {
      throw unauthenticated(`invalid client certificate: ${certificateProblem}`);
    }
    const proven = isKnown(request.headers.authorization);
    if (!proven) await failures?.check(request);
    try {
      return await authenticateToken(request);
    } catch (err) {
      if (!proven && isVerdict(err, 'unauthenticated')) await failures?.record(request);
      throw err;
    }
  };

  function isKnown(header: string | undefined): boolean {
    if (!known || header === undefined) return false;
    try {
      return known.has(tokenDigest(bearerToken(header)));
    } catch {
      return false; // a malformed header: authenticateToken says why
    }
  }

  async function authenticateToken(request: FastifyRequest): Promise<UserInfo> {
    const token = bearerToken(request.headers.authorization);
    const jwt = precheckToken(token);
    if (!jwt || !oidc?.handles(jwt)) return await tokenReview.authenticate(token, jwt);
    try {
      const user = await oidc.verify(request);
      known?.remember(tokenDigest(token), typeof jwt.claims.exp === 'number' ? jwt.claims.exp * 1000 : undefined);
      return user;
    } catch (oidcError) {
      // Like the API server's union of authenticators: a token the OIDC verifier rejects may
      // still be one the API server accepts (e.g. when both trust the same issuer).
      if (!isVerdict(oidcError, 'unauthenticated')) throw oidcError;
      try {
        return await tokenReview.authenticate(token, jwt);
      } catch (reviewError) {
        throw isVerdict(reviewError, 'unauthenticated') ? oidcError : reviewError;
      }
    }
  }
}
