// Tokens never reach a log line: every log the gateway and the agents wrote, at trace level,
// during a run of good, bad, expired and misplaced tokens — also inside requests the HTTP
// parser rejects, whose raw bytes fastify logs — is searched for every token and its parts.
import { readFile } from 'node:fs/promises';
import { connect } from 'node:tls';
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { https } from '../harness/http.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await storefrontWorld(t, c, { gatewayArgs: ['--log-level=trace'], agentArgs: ['--log-level=trace'] });
await w.grantFiles();
const ca = w.pki.ca.certFile;

t.test('no token, and no part of one, appears in any log', async (t) => {
  const otherAudience = await c.tokenFor(w.ns, 'devops-sa', { audience: 'elsewhere' });
  const tokens = [w.devopsToken, otherAudience, `${w.devopsToken.slice(0, -10)}AAAAAAAAAA`, 'not-a-jwt-secret-value-1234567890'];
  await waitFor(async () => (await https(w.downloadUrl(), { caFile: ca, token: w.devopsToken })).status === 200, { what: 'the grant', timeoutMs: 15_000 });
  for (const token of tokens) {
    await https(w.downloadUrl(), { caFile: ca, token });
    await https(`${w.gateway.url}/packet-capture/files/${w.ns}/${CAPTURE}`, { caFile: ca, token, method: 'DELETE' });
    await https(`${w.downloadUrl()}?token=${encodeURIComponent(token)}`, { caFile: ca, token });
    await https(w.downloadUrl(), { caFile: ca, headers: { authorization: `bearer ${token}`, cookie: `session=${token}` } });
    await https(`${w.gateway.url}/no/such/path/${token}`, { caFile: ca });
  }
  // Requests the HTTP parser refuses, with the token in their headers.
  for (const token of tokens) await rawRequest(w.gateway.port, `GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nBroken header line\r\n\r\n`);
  await waitFor(async () => (await readFile(w.gateway.logFile, 'utf8')).includes('"msg":"client error"'), { what: 'fastify to log the client errors (trace)', timeoutMs: 10_000 });
  const logs = [w.gateway.logFile, ...w.agents.map((a) => a.logFile)];
  const logged = (await Promise.all(logs.map((f) => readFile(f, 'utf8')))).join('\n');
  // Bytes serialized as {"type":"Buffer","data":[...]} hide text from a substring search:
  // decode them and search them too.
  const text = `${logged}\n${decodedBuffers(logged).join('\n')}`;
  t.match(text, /"level":10,/, 'at trace level');
  t.ok(text.split('\n').length > 50, 'the services did log (debug level) while being exercised');
  t.match(text, /"reqId":"[0-9a-f-]{36}"/, 'with request ids');
  for (const token of tokens) {
    // The JWT header is the same for every token of an issuer and secret in no way.
    const [, payload, signature] = token.split('.');
    for (const part of [token, payload, signature].filter((p): p is string => !!p && p.length >= 16)) {
      t.notOk(text.includes(part), `a token part of ${part.length} characters is not logged: ${text.split('\n').filter((l) => l.includes(part)).map((l) => l.replace(part, '<TOKEN>').slice(0, 400)).slice(0, 3).join(' | ')}`);
    }
  }
  // The agent's token the gateway presents is a credential too.
  const agentToken = (await readFile(`${w.logDir}/gateway-agent-token`, 'utf8')).trim();
  t.notOk(text.includes(agentToken), 'the gateway\'s agent token is not logged');
  t.notOk(text.includes(agentToken.split('.')[2]!), 'nor its signature');
});

/** Sends bytes as they are over TLS and waits for the server to close. */
async function rawRequest(port: number, bytes: string): Promise<void> {
  await new Promise<void>((resolve) => {
    const s = connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => s.end(bytes));
    s.on('data', () => undefined);
    s.on('close', () => resolve());
    s.on('error', () => resolve());
  });
}

/** The contents of every Buffer-shaped value in JSON log lines, as text. */
function decodedBuffers(log: string): string[] {
  const out: string[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') {
      const o = v as { type?: unknown; data?: unknown };
      if (o.type === 'Buffer' && Array.isArray(o.data)) out.push(Buffer.from(o.data as number[]).toString('latin1'));
      else Object.values(o).forEach(walk);
    }
  };
  for (const line of log.split('\n')) {
    try {
      walk(JSON.parse(line));
    } catch {
      // not a JSON line (e.g. a crash trace): searched as text already
    }
  }
  return out;
}
