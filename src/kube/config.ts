// Where the API server is and who we are: the pod's ServiceAccount when running in a
// cluster, else a kubeconfig file.
//
// The common cases (in-cluster, and kubeconfigs with a token, token file or client
// certificate) are read here directly: loading @kubernetes/client-node costs a server
// ~85 MB of memory, more than the gateway's whole streaming budget. Kubeconfigs that need
// its machinery (exec credential plugins, auth providers) are handed to it, loaded only then.
import { readFile, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { KubeClient, type Connection } from './client.js';

export type { Connection };

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** Re-reads a token file when it changes (the kubelet rotates projected tokens). */
export function tokenFileAuthorization(file: string): () => Promise<string | undefined> {
  let cached: { mtimeMs: number; value: string } | undefined;
  return async () => {
    const { mtimeMs } = await stat(file);
    if (!cached || cached.mtimeMs !== mtimeMs) cached = { mtimeMs, value: `Bearer ${(await readFile(file, 'utf8')).trim()}` };
    return cached.value;
  };
}

export async function inClusterConnection(): Promise<Connection> {
  const host = process.env.KUBERNETES_SERVICE_HOST;
  const port = process.env.KUBERNETES_SERVICE_PORT ?? '443';
  if (!host) throw new Error('not running in a pod: KUBERNETES_SERVICE_HOST is not set');
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    ca: await readFile(join(SA_DIR, 'ca.crt')),
    authorization: tokenFileAuthorization(join(SA_DIR, 'token')),
  };
}

interface KubeconfigFile {
  'current-context'?: string;
  contexts?: { name: string; context: { cluster: string; user: string } }[];
  clusters?: { name: string; cluster: { server: string; 'certificate-authority'?: string; 'certificate-authority-data'?: string; 'insecure-skip-tls-verify'?: boolean; 'tls-server-name'?: string; 'proxy-url'?: string } }[];
  users?: { name: string; user: Record<string, unknown> }[];
}

export async function kubeconfigConnection(path: string): Promise<Connection> {
  const base = dirname(resolve(path));
  // Loaded only here: a pod's ServiceAccount needs no YAML parser in memory.
  const { parse: parseYaml } = await import('yaml');
  const doc = parseYaml(await readFile(path, 'utf8')) as KubeconfigFile;
  const ctxName = doc['current-context'];
  const ctx = doc.contexts?.find((c) => c.name === ctxName)?.context;
  if (!ctx) throw new Error(`${path}: no current context`);
  const cluster = doc.clusters?.find((c) => c.name === ctx.cluster)?.cluster;
  const user = doc.users?.find((u) => u.name === ctx.user)?.user ?? {};
  if (!cluster?.server) throw new Error(`${path}: the current context's cluster has no server`);
  if (user.exec || user['auth-provider'] || cluster['proxy-url']) return await clientNodeConnection(path);
  const file = async (p: unknown): Promise<Buffer | undefined> => (typeof p === 'string' ? await readFile(isAbsolute(p) ? p : join(base, p)) : undefined);
  const data = (d: unknown): Buffer | undefined => (typeof d === 'string' ? Buffer.from(d, 'base64') : undefined);
  let authorization: Connection['authorization'] = async () => undefined;
  if (typeof user.token === 'string') {
    const header = `Bearer ${user.token}`;
    authorization = async () => header;
  } else if (typeof user.tokenFile === 'string') {
    authorization = tokenFileAuthorization(isAbsolute(user.tokenFile) ? user.tokenFile : join(base, user.tokenFile));
  } else if (typeof user.username === 'string') {
    const header = `Basic ${Buffer.from(`${user.username}:${String(user.password ?? '')}`).toString('base64')}`;
    authorization = async () => header;
  }
  return {
    server: cluster.server,
    ca: data(cluster['certificate-authority-data']) ?? (await file(cluster['certificate-authority'])),
    cert: data(user['client-certificate-data']) ?? (await file(user['client-certificate'])),
    key: data(user['client-key-data']) ?? (await file(user['client-key'])),
    insecureSkipTlsVerify: cluster['insecure-skip-tls-verify'] === true,
    tlsServerName: cluster['tls-server-name'],
    authorization,
  };
}

/** Exec plugins and auth providers: @kubernetes/client-node knows them all. */
async function clientNodeConnection(path: string): Promise<Connection> {
  const { KubeConfig } = await import('@kubernetes/client-node');
  const kc = new KubeConfig();
  kc.loadFromFile(path);
  return await kubeConfigConnection(kc);
}

/**
 * The current context of a loaded KubeConfig, credentials by its own machinery (token, token
 * file, exec plugins, auth providers, client certificates): what kubectl-pcap uses.
 */
export async function kubeConfigConnection(kc: KubeConfig): Promise<Connection> {
  const cluster = kc.getCurrentCluster();
  if (!cluster?.server) throw new Error(`the context "${kc.getCurrentContext()}" has no cluster with a server`);
  const opts: { ca?: Buffer; cert?: Buffer; key?: Buffer; rejectUnauthorized?: boolean; servername?: string; headers?: Record<string, unknown> } = {};
  await kc.applyToHTTPSOptions(opts);
  let header: { value: string | undefined; at: number } | undefined;
  return {
    server: cluster.server,
    ca: opts.ca,
    cert: opts.cert,
    key: opts.key,
    insecureSkipTlsVerify: opts.rejectUnauthorized === false,
    tlsServerName: opts.servername,
    authorization: async () => {
      // Plugins cache their own credentials; asking once a minute picks up renewals.
      if (!header || Date.now() - header.at > 60_000) {
        const o: { headers?: Record<string, unknown> } = {};
        await kc.applyToHTTPSOptions(o);
        const auth = o.headers?.Authorization ?? o.headers?.authorization;
        header = { value: typeof auth === 'string' ? auth : undefined, at: Date.now() };
      }
      return header.value;
    },
  };
}

/** --kubeconfig when given; else the pod's ServiceAccount in a cluster; else ~/.kube/config. */
export async function loadConnection(kubeconfigPath?: string): Promise<Connection> {
  if (kubeconfigPath) return await kubeconfigConnection(kubeconfigPath.split(':')[0]!);
  if (process.env.KUBERNETES_SERVICE_HOST) return await inClusterConnection();
  return await kubeconfigConnection(join(homedir(), '.kube', 'config'));
}

export async function connect(kubeconfigPath?: string): Promise<KubeClient> {
  return KubeClient.fromConnection(await loadConnection(kubeconfigPath));
}
