import t from 'tap';
import { bearerToken, decodeJwt, MAX_TOKEN_LENGTH, precheckToken, tokenDigest } from '../../src/auth/authentication/bearer.js';
import { isVerdict } from '../../src/auth/verdict.js';
import { httpErrorOf } from '../../src/http/status.js';

const jwt = (claims: object, header: object = { alg: 'RS256' }) =>
  `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.c2ln`;

t.test('bearerToken accepts exactly "Bearer <token>"', async (t) => {
  t.equal(bearerToken('Bearer abc'), 'abc');
  t.equal(bearerToken('bearer abc'), 'abc', 'the scheme is case-insensitive');
  for (const bad of [undefined, '', 'Bearer', 'Bearer ', 'Basic abc', 'Bearer a b', 'Token abc', `Bearer ${'x'.repeat(MAX_TOKEN_LENGTH + 1)}`]) {
    let error: unknown;
    try {
      bearerToken(bad);
    } catch (e) {
      error = e;
    }
    t.ok(isVerdict(error, 'unauthenticated'), `unauthenticated: ${String(bad).slice(0, 20)}`);
    const answer = isVerdict(error) ? httpErrorOf(error) : undefined;
    t.ok(answer?.code === 401 && answer.headers['www-authenticate']?.startsWith('Bearer'), `answered 401 with a challenge for ${String(bad).slice(0, 20)}`);
  }
});

t.test('decodeJwt only for three base64url parts with a JSON header that names alg', async (t) => {
  t.same(decodeJwt(jwt({ sub: 'x' }))?.claims, { sub: 'x' });
  for (const bad of ['garbage', 'a.b', 'a.b.c.d', '..', jwt({ sub: 'x' }, { typ: 'JWT' }), 'e30.e30.c2ln', `${jwt({})}=`, 'eyJhbGciOiJub25lIn0.bm90IGpzb24.x']) {
    t.equal(decodeJwt(bad), undefined, bad);
  }
});

t.test('precheckToken refuses only an expired JWT; every other token is the API server\'s to judge', async (t) => {
  const now = 1_800_000_000_000;
  t.ok(precheckToken(jwt({ exp: now / 1000 + 1 }), now));
  t.ok(precheckToken(jwt({}), now), 'no exp: the API server decides');
  t.throws(() => precheckToken(jwt({ exp: now / 1000 }), now), /expired/);
  for (const token of ['opaque-static-token', 'abcdef.0123456789abcdef', `k8s-aws-v1.${Buffer.from('https://sts.amazonaws.com/?Action=GetCallerIdentity').toString('base64url')}`, 'ya29.a0AfB_byC-not-a-jwt', 'a.b.c']) {
    t.equal(precheckToken(token, now), undefined, `${token.slice(0, 20)}: not a JWT, not refused`);
  }
});

t.test('tokenDigest is stable, distinct, and not the token', async (t) => {
  t.equal(tokenDigest('a'), tokenDigest('a'));
  t.not(tokenDigest('a'), tokenDigest('b'));
  t.notMatch(tokenDigest('secret-token-value'), /secret/);
});
