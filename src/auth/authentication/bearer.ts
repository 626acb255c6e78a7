// Reading a bearer token off a request, and the cheap checks that need no API call.
import { createHash } from 'node:crypto';
import { unauthenticated } from '../verdict.js';

/** Longest token accepted; real ServiceAccount, OIDC and cloud tokens are a few KiB. */
export const MAX_TOKEN_LENGTH = 16 * 1024;

export interface JwtClaims {
  iss?: string;
  sub?: string;
  aud?: string | string[];
  exp?: number;
  nbf?: number;
  iat?: number;
  [claim: string]: unknown;
}

export interface UnverifiedJwt {
  header: { alg?: string; kid?: string; typ?: string };
  claims: JwtClaims;
}

/** The token of an `Authorization: Bearer <token>` header; 401 for anything else. */
export function bearerToken(authorization: string | undefined): string {
  if (authorization === undefined || authorization === '') throw unauthenticated('no bearer token: send "Authorization: Bearer <token>"');
  const m = /^Bearer +(\S+)\s*$/i.exec(authorization);
  if (!m) throw unauthenticated('the Authorization header must be "Bearer <token>"');
  const token = m[1]!;
  if (token.length > MAX_TOKEN_LENGTH) throw unauthenticated('the bearer token is too long');
  return token;
}

const B64URL = /^[A-Za-z0-9_-]+$/;

/**
 * Decodes a JWT without verifying it, or returns undefined when the token is not a JWT.
 * Used only to reject early (already expired), to bound a review cache entry by `exp`, and
 * to pick the authenticator; nothing is ever accepted on these unverified claims.
 */
export function decodeJwt(token: string): UnverifiedJwt | undefined {
  const parts = token.split('.');
  if (parts.length !== 3 || !parts.every((p) => p.length > 0 && B64URL.test(p))) return undefined;
  try {
    const header = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8')) as unknown;
    const claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as unknown;
    if (!isObject(header) || !isObject(claims) || typeof header.alg !== 'string') return undefined;
    return { header: header as UnverifiedJwt['header'], claims: claims as JwtClaims };
  } catch {
    return undefined;
  }
}

/**
 * The only local verdict on a bearer token: a JWT whose `exp` has passed is refused (401)
 * without asking anyone. Every other token — a JWT or not: EKS's `k8s-aws-v1.…`, GKE's
 * `ya29.…`, static, bootstrap and webhook tokens — is the API server's to judge. Returns
 * the unverified JWT, or undefined for a token that is not one.
 */
export function precheckToken(token: string, nowMs = Date.now()): UnverifiedJwt | undefined {
  const jwt = decodeJwt(token);
  if (jwt && typeof jwt.claims.exp === 'number' && jwt.claims.exp * 1000 <= nowMs) throw unauthenticated('the bearer token has expired');
  return jwt;
}

/** The cache key of a token: a digest, so no cache ever holds a usable credential. */
export function tokenDigest(token: string): string {
  return createHash('sha256').update(token).digest('base64url');
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
