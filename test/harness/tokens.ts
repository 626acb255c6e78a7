// Credentials no one issued, for tests of what bad credentials cost.
let n = 0;

/** A JWT-shaped token no one issued, a new one each call: unexpired, so it goes to TokenReview. */
export function unissuedJwt(): string {
  return [{ alg: 'RS256' }, { sub: `nobody-${n++}`, exp: Math.floor(Date.now() / 1000) + 3600 }].map((p) => Buffer.from(JSON.stringify(p)).toString('base64url')).join('.') + '.c2ln';
}
