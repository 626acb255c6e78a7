// OpenAPI conformance, in the fast tier: every operation openapi.yaml describes is driven to
// every status it documents, through fastify's `inject` on the gateway built in this process,
// and each answer is checked against the document (status, content type, body schema). The
// other way round too: every route the gateway registers is documented. A drift between
// code and document fails here, in seconds, before the real tier runs.
import t from 'tap';
import type { FastifyInstance, InjectOptions } from 'fastify';
import { checkResponse, openapiDoc } from '../harness/openapi.js';
import { CAPTURING, FINISHED, NS, TOKENS, UNREACHABLE, fastWorld } from './fast-world.js';

/** Failed authentications per address before 429 (--authn-failure-limit). */
const FAILURE_LIMIT = 3;
/** A client address that is not loopback (loopback is shared, so never limited): RFC 5737. */
const LIMITED_ADDRESS = '192.0.2.200';

const w = await fastWorld(t, { gatewayArgs: [`--authn-failure-limit=${FAILURE_LIMIT}`] });
const doc = await openapiDoc();

interface Drive {
  ns?: string;
  name?: string;
  token?: string;
  remoteAddress?: string;
}

/** How to make each documented status happen, for the API listener's capture routes. */
function captureCase(method: string, status: number): Drive | undefined {
  switch (status) {
    case 200: return { name: method === 'DELETE' ? FINISHED : CAPTURING, token: TOKENS.devops };
    case 400: return { ns: 'Not_A_Namespace', token: TOKENS.devops };
    case 401: return {};
    case 403: return { token: TOKENS.onlooker };
    case 404: return { name: 'no-such-capture', token: TOKENS.devops };
    case 409: return method === 'DELETE' ? { name: CAPTURING, token: TOKENS.devops } : undefined;
    case 429: return { remoteAddress: LIMITED_ADDRESS, token: 'not-a-token-anyone-issued' };
    case 502: return { name: UNREACHABLE, token: TOKENS.devops };
    case 503: return { token: TOKENS.outage };
    default: return undefined;
  }
}

function opsCase(path: string, status: number): Drive | undefined {
  if (path === '/metrics') return { 200: { token: TOKENS.scraper }, 401: {}, 403: { token: TOKENS.devops }, 503: { token: TOKENS.outage } }[status];
  return status === 200 ? {} : undefined;
}

async function send(app: FastifyInstance, method: string, template: string, d: Drive): Promise<Awaited<ReturnType<FastifyInstance['inject']>>> {
  let url = template.replace('{namespace}', d.ns ?? NS).replace('{name}', d.name ?? CAPTURING);
  // A live stream ends when its capture has: the finished one, so inject can read it whole.
  if (url.includes('/stream/') && d.name === CAPTURING && d.token === TOKENS.devops) url = url.replace(CAPTURING, FINISHED);
  const opts: InjectOptions = { method: method as InjectOptions['method'], url, remoteAddress: d.remoteAddress ?? '127.0.0.1', headers: d.token ? { authorization: `Bearer ${d.token}` } : {} };
  return await app.inject(opts);
}

// The address that will be limited first spends its failures.
for (let i = 0; i < FAILURE_LIMIT; i++) {
  const r = await w.api.inject({ method: 'GET', url: `/packet-capture/files/${NS}/${CAPTURING}`, remoteAddress: LIMITED_ADDRESS, headers: { authorization: 'Bearer not-a-token-anyone-issued' } });
  if (r.statusCode !== 401) throw new Error(`failure ${i + 1} from ${LIMITED_ADDRESS}: ${r.statusCode} ${r.body}`);
}

const driven = new Set<string>();
for (const [template, ops] of Object.entries(doc.paths)) {
  const onOps = (ops as { servers?: unknown }).servers !== undefined;
  for (const method of Object.keys(ops).filter((m) => ['get', 'delete', 'post', 'put', 'patch'].includes(m))) {
    const M = method.toUpperCase();
    for (const status of Object.keys(ops[method]!.responses ?? {}).map(Number)) {
      if (template === '/readyz' && status === 503) continue; // below, with the API server gone
      const d = onOps ? opsCase(template, status) : template === '/openapi.yaml' ? {} : captureCase(M, status);
      t.test(`${M} ${template} → ${status}`, async (t) => {
        t.ok(d, 'the fast tier knows how to make this status happen');
        if (!d) return;
        const res = await send(onOps ? w.ops : w.api, M, template, d);
        t.equal(res.statusCode, status, `answered ${res.statusCode}: ${res.rawPayload.subarray(0, 200).toString()}`);
        await t.resolves(checkResponse(M, template, res.statusCode, res.headers['content-type'] as string | undefined, res.rawPayload), 'the answer is what openapi.yaml says');
        if (status === 429) t.ok(Number(res.headers['retry-after']) > 0, 'with Retry-After');
        driven.add(`${M} ${template} ${status}`);
      });
    }
  }
}

t.test('every route the gateway registers is documented, on the listener the document names', async (t) => {
  const documented = (onOps: boolean): Set<string> => {
    const out = new Set<string>();
    for (const [template, ops] of Object.entries(doc.paths)) {
      if (((ops as { servers?: unknown }).servers !== undefined) !== onOps) continue;
      for (const m of Object.keys(ops)) if (['get', 'delete', 'post', 'put', 'patch'].includes(m)) out.add(`${m.toUpperCase()} ${template.replace(/\{(\w+)\}/g, ':$1')}`);
    }
    return out;
  };
  const api = documented(false);
  const ops = documented(true);
  t.same(w.routes.api.filter((r) => !api.has(r)), [], 'no undocumented route on the API listener');
  t.same(w.routes.ops.filter((r) => !ops.has(r)), [], 'no undocumented route on the operations listener');
  t.same([...api].filter((r) => !w.routes.api.includes(r)), [], 'every documented API operation is a route');
  t.same([...ops].filter((r) => !w.routes.ops.includes(r)), [], 'every documented operations path is a route');
});

t.test('the zip holds every file of every node of the capture', async (t) => {
  const res = await w.api.inject({ method: 'GET', url: `/packet-capture/download/${NS}/${CAPTURING}/files.zip`, headers: { authorization: `Bearer ${TOKENS.devops}` } });
  t.equal(res.statusCode, 200);
  t.equal(Number(res.headers['content-length']), res.rawPayload.length, 'Content-Length is the exact length');
  for (const [key, bytes] of w.files) {
    const [node, capture, file] = key.split('/');
    if (capture !== CAPTURING) continue;
    t.ok(res.rawPayload.includes(Buffer.from(`${node}/${file}`)), `${node}/${file} is named in the zip`);
    t.ok(res.rawPayload.includes(bytes), `${node}/${file}'s bytes are in it, stored`);
  }
});

t.test('readyz: 503 with the reason once the API server cannot be asked', async (t) => {
  await w.fake.stop();
  const res = await w.ops.inject({ method: 'GET', url: '/readyz' });
  t.equal(res.statusCode, 503);
  await checkResponse('GET', '/readyz', 503, res.headers['content-type'] as string | undefined, res.rawPayload);
  t.match(res.body, /API server/);
  driven.add('GET /readyz 503');
});

t.test('every documented status was driven', async (t) => {
  const missing: string[] = [];
  for (const [template, ops] of Object.entries(doc.paths)) {
    for (const method of Object.keys(ops).filter((m) => ['get', 'delete', 'post', 'put', 'patch'].includes(m))) {
      for (const status of Object.keys(ops[method]!.responses ?? {})) if (!driven.has(`${method.toUpperCase()} ${template} ${status}`)) missing.push(`${method.toUpperCase()} ${template} ${status}`);
    }
  }
  t.same(missing, []);
});
