// TEST DOUBLE: a fake Kubernetes API server, for the fast tier only (test/fast/). It answers
// TokenReviews and SubjectAccessReviews from tables the test gives it, and serves a fixed set
// of objects (PacketCaptures, node reports, EndpointSlices, Nodes, Leases) with list, get,
// watch and writes, so that the gateway's and agents' HTTP routes run through `inject` in
// milliseconds. It is not Kubernetes: RBAC, admission, field validation, watch semantics and
// outages are the real tier's (test/gateway, test/cluster), against a real kube-apiserver.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeUser {
  username: string;
  groups?: string[];
  /** Audiences the token is valid for; absent: the API server's own (any review without audiences). */
  audiences?: string[];
}

export interface AccessQuestion {
  user: string;
  groups: string[];
  verb: string;
  namespace?: string;
  resource?: string;
  subresource?: string;
  /** For non-resource URLs (/metrics). */
  path?: string;
}

export interface FakeApiServerOptions {
  /** Bearer tokens the fake knows. */
  tokens: Record<string, FakeUser>;
  /** Tokens whose review answers 503, as an API server that cannot be asked. */
  unavailableTokens?: string[];
  /** The SubjectAccessReview's answer. */
  allow: (q: AccessQuestion) => boolean;
}

interface Stored {
  path: string;
  obj: KubeObject;
}

interface KubeObject {
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; resourceVersion?: string; uid?: string };
  [key: string]: unknown;
}

interface Watcher {
  collection: string;
  labelSelector?: string;
  res: ServerResponse;
}

/** `/apis/g/v/namespaces/ns/things/name/status` → collection key `/apis/g/v/things`, namespace, name, subresource. */
function parsePath(path: string): { collection: string; namespace?: string; name?: string; subresource?: string } | undefined {
  const m = /^(\/api\/v1|\/apis\/[^/]+\/[^/]+)(?:\/namespaces\/([^/]+))?\/([^/]+)(?:\/([^/]+))?(?:\/([^/]+))?$/.exec(path);
  if (!m) return undefined;
  return { collection: `${m[1]}/${m[3]}`, namespace: m[2] && decodeURIComponent(m[2]), name: m[4] && decodeURIComponent(m[4]), subresource: m[5] };
}

function labelsMatch(obj: KubeObject, selector: string | undefined): boolean {
  if (!selector) return true;
  return selector.split(',').every((term) => {
    const [k, v] = term.split('=');
    return obj.metadata.labels?.[k!] === v;
  });
}

function fieldsMatch(obj: KubeObject, selector: string | undefined): boolean {
  if (!selector) return true;
  return selector.split(',').every((term) => {
    const [path, v] = term.split('=');
    let cur: unknown = obj;
    for (const part of path!.split('.')) cur = (cur as Record<string, unknown> | undefined)?.[part];
    return String(cur) === v;
  });
}

export class FakeApiServer {
  private readonly server: Server;
  private readonly objects = new Map<string, Stored>();
  private readonly watchers = new Set<Watcher>();
  private version = 1;
  /** Requests by "<METHOD> <collection>", for tests that check what was asked. */
  readonly requests: string[] = [];
  url = '';

  constructor(private readonly o: FakeApiServerOptions) {
    this.server = createServer((req, res) => void this.handle(req, res).catch((err: Error) => this.send(res, 500, { kind: 'Status', message: err.message })));
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this.url;
  }

  async stop(): Promise<void> {
    for (const w of this.watchers) w.res.end();
    this.watchers.clear();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Creates or replaces an object under its collection path (e.g. capturesPath(ns)). */
  put<T extends { metadata: { name: string; namespace?: string } }>(collectionPath: string, given: T): void {
    // Stored as the API server would: any object with a name (its other fields are the caller's).
    const obj = given as unknown as KubeObject;
    const p = parsePath(`${collectionPath}/${obj.metadata.name}`);
    if (!p) throw new Error(`not a collection path: ${collectionPath}`);
    this.store(p.collection, { ...obj, metadata: { ...obj.metadata, namespace: obj.metadata.namespace ?? p.namespace } });
  }

  remove(collectionPath: string, name: string): void {
    const p = parsePath(`${collectionPath}/${name}`)!;
    const key = `${p.collection}|${p.namespace ?? ''}|${name}`;
    const s = this.objects.get(key);
    if (!s) return;
    this.objects.delete(key);
    this.notify(p.collection, 'DELETED', s.obj);
  }

  private store(collection: string, obj: KubeObject): KubeObject {
    const stored = { ...obj, metadata: { ...obj.metadata, uid: obj.metadata.uid ?? `uid-${obj.metadata.name}`, resourceVersion: String(++this.version) } };
    const key = `${collection}|${stored.metadata.namespace ?? ''}|${stored.metadata.name}`;
    const existed = this.objects.has(key);
    this.objects.set(key, { path: collection, obj: stored });
    this.notify(collection, existed ? 'MODIFIED' : 'ADDED', stored);
    return stored;
  }

  private notify(collection: string, type: string, obj: KubeObject): void {
    for (const w of this.watchers) {
      if (w.collection === collection && labelsMatch(obj, w.labelSelector)) w.res.write(`${JSON.stringify({ type, object: obj })}\n`);
    }
  }

  private send(res: ServerResponse, code: number, body: unknown): void {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  }

  private async body(req: IncomingMessage): Promise<Record<string, unknown>> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString();
    return text === '' ? {} : (JSON.parse(text) as Record<string, unknown>);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const method = req.method ?? 'GET';
    if (url.pathname === '/version') return this.send(res, 200, { gitVersion: 'v0.0.0-fake' });
    if (url.pathname === '/apis/authentication.k8s.io/v1/tokenreviews' && method === 'POST') return this.tokenReview(res, await this.body(req));
    if (url.pathname === '/apis/authorization.k8s.io/v1/subjectaccessreviews' && method === 'POST') return this.accessReview(res, await this.body(req));
    const p = parsePath(url.pathname);
    if (!p) return this.send(res, 404, { kind: 'Status', code: 404, reason: 'NotFound', message: `no such path ${url.pathname}` });
    this.requests.push(`${method} ${p.collection}`);
    const key = `${p.collection}|${p.namespace ?? ''}|${p.name ?? ''}`;
    if (!p.name && method === 'GET') {
      const items = [...this.objects.values()]
        .filter((s) => s.path === p.collection && (!p.namespace || s.obj.metadata.namespace === p.namespace))
        .map((s) => s.obj)
        .filter((o) => labelsMatch(o, url.searchParams.get('labelSelector') ?? undefined) && fieldsMatch(o, url.searchParams.get('fieldSelector') ?? undefined));
      if (url.searchParams.get('watch') === 'true') {
        res.writeHead(200, { 'content-type': 'application/json' });
        const w: Watcher = { collection: p.collection, labelSelector: url.searchParams.get('labelSelector') ?? undefined, res };
        this.watchers.add(w);
        res.on('close', () => this.watchers.delete(w));
        return;
      }
      return this.send(res, 200, { kind: 'List', metadata: { resourceVersion: String(this.version) }, items });
    }
    if (!p.name && method === 'POST') {
      const obj = (await this.body(req)) as unknown as KubeObject;
      if (this.objects.has(`${p.collection}|${p.namespace ?? ''}|${obj.metadata.name}`)) return this.send(res, 409, { kind: 'Status', code: 409, reason: 'AlreadyExists' });
      return this.send(res, 201, this.store(p.collection, { ...obj, metadata: { ...obj.metadata, namespace: p.namespace } }));
    }
    const current = this.objects.get(key);
    if (method === 'GET') return current ? this.send(res, 200, current.obj) : this.send(res, 404, { kind: 'Status', code: 404, reason: 'NotFound', message: `${p.name} not found` });
    if (method === 'DELETE') {
      if (!current) return this.send(res, 404, { kind: 'Status', code: 404, reason: 'NotFound' });
      this.objects.delete(key);
      this.notify(p.collection, 'DELETED', current.obj);
      return this.send(res, 200, { kind: 'Status', status: 'Success' });
    }
    if (method === 'PUT' || method === 'PATCH') {
      const body = (await this.body(req)) as Partial<KubeObject>;
      // A status write replaces the status; any other write the object (merge patches and
      // server-side apply alike, which is all the fast tier needs).
      const next = p.subresource === 'status' ? { ...(current?.obj ?? { metadata: { name: p.name!, namespace: p.namespace } }), status: body.status } : { ...(current?.obj ?? {}), ...body, metadata: { ...(current?.obj.metadata ?? {}), ...(body.metadata ?? {}), name: p.name!, namespace: p.namespace } };
      if (!current && p.subresource === 'status') return this.send(res, 404, { kind: 'Status', code: 404, reason: 'NotFound' });
      return this.send(res, 200, this.store(p.collection, next as KubeObject));
    }
    return this.send(res, 405, { kind: 'Status', code: 405, reason: 'MethodNotAllowed' });
  }

  private tokenReview(res: ServerResponse, review: Record<string, unknown>): void {
    const spec = review.spec as { token?: string; audiences?: string[] };
    const token = spec.token ?? '';
    if (this.o.unavailableTokens?.includes(token)) return this.send(res, 503, { kind: 'Status', code: 503, reason: 'ServiceUnavailable', message: 'fake: reviews unavailable' });
    const user = this.o.tokens[token];
    const wanted = spec.audiences ?? [];
    const audienceOk = user !== undefined && (wanted.length === 0 ? user.audiences === undefined : wanted.some((a) => user.audiences?.includes(a)));
    const status = user && audienceOk
      ? { authenticated: true, user: { username: user.username, groups: user.groups ?? ['system:authenticated'] }, audiences: wanted.length === 0 ? undefined : wanted.filter((a) => user.audiences?.includes(a)) }
      : { authenticated: false, error: 'fake: unknown token' };
    this.send(res, 201, { ...review, status });
  }

  private accessReview(res: ServerResponse, review: Record<string, unknown>): void {
    const spec = review.spec as { user?: string; groups?: string[]; resourceAttributes?: { namespace?: string; verb?: string; resource?: string; subresource?: string }; nonResourceAttributes?: { path?: string; verb?: string } };
    const r = spec.resourceAttributes;
    const q: AccessQuestion = r
      ? { user: spec.user ?? '', groups: spec.groups ?? [], verb: r.verb ?? '', namespace: r.namespace, resource: r.resource, subresource: r.subresource }
      : { user: spec.user ?? '', groups: spec.groups ?? [], verb: spec.nonResourceAttributes?.verb ?? '', path: spec.nonResourceAttributes?.path };
    const allowed = this.o.allow(q);
    this.send(res, 201, { ...review, status: { allowed, ...(allowed ? {} : { reason: 'fake: not in the table' }) } });
  }
}
