// TEST DOUBLE, named as such: an npm registry on 127.0.0.1 built from the project's lockfile
// and npm's own cache, standing in for registry.npmjs.org inside the sandbox, which has no
// network. It serves, for every package version the lockfile holds, the packument fields npm
// resolves with (dependencies, peer and optional dependencies, bin, engines, os, cpu) and the
// very tarball `npm ci` fetched and cached (by its integrity). So `npm install -g` of the
// packed project runs the real npm against the exact versions the tests ran with.
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import type { Teardown } from './cluster.js';
import { REPO_ROOT } from './control-plane.js';
import { run } from './http.js';

interface LockEntry {
  name?: string;
  version?: string;
  integrity?: string;
  link?: boolean;
  [field: string]: unknown;
}

const PACKUMENT_FIELDS = ['dependencies', 'peerDependencies', 'peerDependenciesMeta', 'optionalDependencies', 'bin', 'engines', 'os', 'cpu', 'license'];

/** Where npm keeps a tarball of this integrity in its content-addressed cache. */
function cachePath(cache: string, integrity: string): string {
  const [algorithm, b64] = integrity.split(' ')[0]!.split('-', 2) as [string, string];
  const hex = Buffer.from(b64, 'base64').toString('hex');
  return join(cache, '_cacache', 'content-v2', algorithm, hex.slice(0, 2), hex.slice(2, 4), hex.slice(4));
}

export async function lockfileRegistry(t: Teardown): Promise<{ url: string }> {
  const lock = JSON.parse(await readFile(join(REPO_ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
  const cache = (await run('npm', ['config', 'get', 'cache'])).stdout.trim();
  const packuments = new Map<string, { name: string; versions: Record<string, Record<string, unknown>>; 'dist-tags': { latest: string } }>();
  const tarballs = new Map<string, string>();
  let server: Server | undefined;
  let base = '';
  for (const [key, e] of Object.entries(lock.packages)) {
    if (!key.includes('node_modules/') || e.link || !e.version || !e.integrity) continue;
    const name = e.name ?? key.slice(key.lastIndexOf('node_modules/') + 'node_modules/'.length);
    const p = packuments.get(name) ?? { name, versions: {}, 'dist-tags': { latest: e.version } };
    const id = `${tarballs.size}`;
    tarballs.set(id, cachePath(cache, e.integrity));
    const manifest: Record<string, unknown> = { name, version: e.version, dist: { integrity: e.integrity, tarball: `@BASE@/-/tarball/${id}.tgz` } };
    for (const f of PACKUMENT_FIELDS) if (e[f] !== undefined) manifest[f] = e[f];
    p.versions[e.version] = manifest;
    if (e.version > p['dist-tags'].latest) p['dist-tags'].latest = e.version;
    packuments.set(name, p);
  }
  server = createServer((req, res) => {
    void (async () => {
      const path = decodeURIComponent((req.url ?? '/').split('?')[0]!).slice(1);
      const tarball = /^-\/tarball\/(\d+)\.tgz$/.exec(path);
      if (tarball) {
        const file = tarballs.get(tarball[1]!);
        const body = file ? await readFile(file).catch(() => undefined) : undefined;
        if (!body) return res.writeHead(404).end();
        return res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length }).end(body);
      }
      const p = packuments.get(path);
      if (!p) return res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}');
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(p).replaceAll('@BASE@', base));
    })().catch(() => res.writeHead(500).end());
  });
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  t.teardown(() => new Promise<void>((resolve) => server!.close(() => resolve())));
  return { url: `${base}/` };
}
