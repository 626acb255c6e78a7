// Who the caller is, as the API server (or an OIDC issuer) vouches for it.
export interface UserInfo {
  username: string;
  uid?: string;
  groups: string[];
  extra?: Record<string, string[]>;
  /** How the identity was established: a TokenReview, an OIDC ID token, a client certificate. */
  via: 'tokenreview' | 'oidc' | 'x509';
}
