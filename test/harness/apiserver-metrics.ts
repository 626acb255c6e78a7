// Counting what the API server received, from its own /metrics (as the admin).
import { readFile } from 'node:fs/promises';
import { Agent, request } from 'undici';
import type { TestCluster } from './cluster.js';

/** apiserver_request_total summed over codes for one resource and verb. */
export async function apiServerRequests(c: TestCluster, resource: string, verb = 'POST'): Promise<number> {
  const dispatcher = new Agent({ connect: { ca: await readFile(c.info.caFile), cert: await readFile(c.info.adminCertFile), key: await readFile(c.info.adminKeyFile) } });
  try {
    const res = await request(`${c.info.server}/metrics`, { dispatcher });
    const text = await res.body.text();
    let total = 0;
    for (const line of text.split('\n')) {
      if (!line.startsWith('apiserver_request_total{')) continue;
      if (!line.includes(`resource="${resource}"`) || !line.includes(`verb="${verb}"`)) continue;
      total += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    return total;
  } finally {
    await dispatcher.close();
  }
}
