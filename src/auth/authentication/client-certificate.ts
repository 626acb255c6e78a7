// Client certificates, as kube-apiserver reads them: a certificate that the TLS handshake
// verified against the configured client CA names the user by its subject's common name
// and the groups by its organisations. The server asks for a certificate without requiring
// one (see server-options.ts), so each request is looked at here.
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { UserInfo } from '../user.js';

const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const ANY_EXTENDED_KEY_USAGE = '2.5.29.37.0';

export type PeerCertificate =
  | { status: 'none' }
  | { status: 'unverified'; reason: string }
  | { status: 'verified'; commonName: string; organizations: string[] };

function isTls(socket: Socket | TLSSocket): socket is TLSSocket {
  return 'getPeerCertificate' in socket && typeof socket.getPeerCertificate === 'function';
}

function values(v: string | string[] | undefined): string[] {
  if (v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}

/** What the client presented on this connection, and whether it holds. */
export function peerCertificate(socket: Socket | TLSSocket, nowMs = Date.now()): PeerCertificate {
  if (!isTls(socket)) return { status: 'none' };
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) return { status: 'none' };
  if (!socket.authorized) return { status: 'unverified', reason: `not signed by a trusted client CA (${String(socket.authorizationError ?? 'unknown')})` };
  // The handshake checked validity then; a connection may outlive the certificate.
  if (Date.parse(cert.valid_to) <= nowMs || Date.parse(cert.valid_from) > nowMs) return { status: 'unverified', reason: 'the client certificate is not valid now' };
  const eku = cert.ext_key_usage;
  if (eku && eku.length > 0 && !eku.includes(CLIENT_AUTH) && !eku.includes(ANY_EXTENDED_KEY_USAGE)) {
    return { status: 'unverified', reason: 'the client certificate is not for client authentication (extended key usage)' };
  }
  const cns = values(cert.subject?.CN);
  // Go keeps the last of several CNs; rather than guess, a certificate with several is refused.
  if (cns.length !== 1 || cns[0] === '') return { status: 'unverified', reason: 'the client certificate must name exactly one common name' };
  return { status: 'verified', commonName: cns[0]!, organizations: values(cert.subject?.O) };
}

/** The Kubernetes user of a verified client certificate: CN the name, O the groups. */
export function certificateUser(cert: { commonName: string; organizations: string[] }): UserInfo {
  return { username: cert.commonName, groups: [...cert.organizations, 'system:authenticated'], via: 'x509' };
}
