// openapi.yaml is valid OpenAPI, served by the gateway as is, and every operation it
// describes is a route the gateway really has, on the listener it names (the operations
// paths have their own `servers`).
import { readFile } from 'node:fs/promises';
import t from 'tap';
import SwaggerParser from '@apidevtools/swagger-parser';
import { cluster } from '../harness/cluster.js';
import { https } from '../harness/http.js';
import { installKubePcap, makePki, scratchDir, startGateway } from '../harness/kube-pcap.js';
import { OPENAPI, openapiDoc } from '../harness/openapi.js';

t.test('openapi.yaml is a valid OpenAPI 3.1 document', async (t) => {
  const api = await SwaggerParser.validate(OPENAPI);
  t.match((api as { openapi: string }).openapi, /^3\.1\./);
});

t.test('the gateway serves it, and serves every operation it describes', async (t) => {
  const c = await cluster(t);
  await installKubePcap(c);
  const pki = await makePki(t);
  const gw = await startGateway(t, c, { pki, logDir: await scratchDir(t, 'logs'), agentService: 'none' });
  const served = await https(`${gw.url}/openapi.yaml`, { caFile: pki.ca.certFile });
  t.equal(served.status, 200);
  t.equal(served.body.toString(), await readFile(OPENAPI, 'utf8'));
  const doc = await openapiDoc();
  for (const [path, ops] of Object.entries(doc.paths)) {
    const base = (ops as { servers?: unknown }).servers ? gw.opsUrl : gw.url;
    for (const method of Object.keys(ops).filter((m) => ['get', 'delete', 'post', 'put', 'patch'].includes(m))) {
      const url = base + path.replace('{namespace}', 'ns').replace('{name}', 'name');
      const res = await https(url, { caFile: pki.ca.certFile, method: method.toUpperCase() as 'GET' | 'DELETE' });
      const notARoute = res.status === 404 && res.body.toString().includes('no such path');
      t.notOk(notARoute, `${method.toUpperCase()} ${path} is a route (got ${res.status})`);
      t.ok(Object.keys((ops as Record<string, { responses: object }>)[method]!.responses).includes(String(res.status)), `${method.toUpperCase()} ${path}: ${res.status} is documented`);
    }
  }
  const undocumented = await https(`${gw.url}/packet-capture/something-else`, { caFile: pki.ca.certFile });
  t.equal(undocumented.status, 404);
  t.equal((await https(`${gw.url}/metrics`, { caFile: pki.ca.certFile })).status, 404, 'operations paths are not on the API listener');
});
