// Counting what the API server received, from its own /metrics (as the admin).
import { readFile } from 'node:fs/promises';
import { Agent, request } from 'undici';
import type { TestCluster } from './cluster.js';

/** apiserver_request_total summed over codes for one resource (and its subresources) and verb. */
export async function apiServerRequests(c: TestCluster, resource: string, verb = 'POST'): Promise<number> {
  let total = 0;
  for (const [key, n] of await apiServerRequestCounts(c)) if (key === `${verb} ${resource}` || key.startsWith(`${verb} ${resource}/`)) total += n;
  return total;
}

/** apiserver_request_total summed over codes, by "VERB resource[/subresource]". */
export async function apiServerRequestCounts(c: TestCluster): Promise<Map<string, number>> {
  const dispatcher = new Agent({ connect: { ca: await readFile(c.info.caFile), cert: await readFile(c.info.adminCertFile), key: await readFile(c.info.adminKeyFile) } });
  try {
    const text = await (await request(`${c.info.server}/metrics`, { dispatcher })).body.text();
    const out = new Map<string, number>();
    for (const line of text.split('\n')) {
      if (!line.startsWith('apiserver_request_total{')) continue;
      const verb = /verb="([A-Z]+)"/.exec(line)?.[1];
      const resource = /resource="([a-z]+)"/.exec(line)?.[1];
      const sub = /subresource="([a-z]*)"/.exec(line)?.[1];
      if (!verb || !resource) continue;
      const key = `${verb} ${resource}${sub ? `/${sub}` : ''}`;
      out.set(key, (out.get(key) ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1)));
    }
    return out;
  } finally {
    await dispatcher.close();
  }
}
