// The user's own Kubernetes identity, exactly as kubectl would use it: the kubeconfig
// (--kubeconfig, else $KUBECONFIG, else ~/.kube/config), the context (--context, else the
// current one), its namespace, and its credentials through @kubernetes/client-node's
// KubeConfig (tokens, token files, exec plugins such as EKS/GKE/OIDC login helpers, auth
// providers, client certificates). The same credentials are presented to the gateway.
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { KubeConfig, type User } from '@kubernetes/client-node';
import { KubeClient } from '../kube/client.js';
import { kubeConfigConnection } from '../kube/config.js';
import { PluginError } from './plugin-error.js';

export interface GatewayCredentials {
  authorization?: string;
  cert?: Buffer | string;
  key?: Buffer | string;
}

export interface KubeContext {
  kc: KubeConfig;
  contextName: string;
  /** -n, else the context's namespace, else "default". */
  namespace: string;
  kube: KubeClient;
  /** What the credential is, for answers ("an exec plugin (aws)", "a token"). */
  credentialKind: string;
  /** The credentials to present to the gateway (asked of plugins each time; they cache). */
  credentials(): Promise<GatewayCredentials>;
  /** Why the credential is known to be expired, when it is (JWT exp, certificate notAfter). */
  expiry(): Promise<string | undefined>;
  /** kubectl's own flags for the same kubeconfig and context (for port-forward). */
  kubectlArgs: string[];
  close(): Promise<void>;
}

export interface KubeContextFlags {
  kubeconfig?: string;
  context?: string;
  namespace?: string;
}

function describeCredential(user: User | null): string {
  if (!user) return 'no user';
  if (user.exec) return `an exec credential plugin (${String((user.exec as { command?: unknown }).command ?? '?')})`;
  if (user.authProvider) return `the auth provider ${user.authProvider.name}`;
  if (user.certFile || user.certData) return 'a client certificate';
  if (user.token || (user as { tokenFile?: string }).tokenFile) return 'a token';
  if (user.username) return 'a user name and password (which the gateway does not accept)';
  return 'no credential';
}

/** A JWT's exp, when the token is a JWT that has one. */
function jwtExpiry(token: string): number | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof claims.exp === 'number' ? claims.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * kubectl's `tokenFile` user field, which client-node does not read (it knows only
 * `token-file`): the current user's token is read from that file, as kubectl does, when the
 * user has no other credential. Only that one field is looked up in the files client-node
 * loaded; everything else stays client-node's.
 */
async function adoptKubectlTokenFile(kc: KubeConfig, explicit: string | undefined): Promise<void> {
  const user = kc.getCurrentUser();
  if (!user || user.token || user.exec || user.authProvider || user.certFile || user.certData) return;
  const files = explicit ? [explicit] : process.env.KUBECONFIG ? process.env.KUBECONFIG.split(':').filter(Boolean) : [join(homedir(), '.kube', 'config')];
  const { parse } = await import('yaml');
  for (const file of files) {
    let doc: { users?: { name?: string; user?: { tokenFile?: unknown } }[] };
    try {
      doc = parse(await readFile(file, 'utf8')) as typeof doc;
    } catch {
      continue;
    }
    const tokenFile = doc?.users?.find((u) => u.name === user.name)?.user?.tokenFile;
    if (typeof tokenFile !== 'string') continue;
    const path = isAbsolute(tokenFile) ? tokenFile : join(dirname(resolve(file)), tokenFile);
    let token: string;
    try {
      token = (await readFile(path, 'utf8')).trim();
    } catch (err) {
      throw new PluginError(`cannot read the token file ${path} of the user "${user.name}": ${(err as Error).message}`);
    }
    kc.users = kc.users.map((u) => (u.name === user.name ? { ...u, token } : u));
    return;
  }
}

export async function loadKubeContext(flags: KubeContextFlags): Promise<KubeContext> {
  const kc = new KubeConfig();
  try {
    if (flags.kubeconfig) kc.loadFromFile(flags.kubeconfig);
    else kc.loadFromDefault();
  } catch (err) {
    throw new PluginError(`cannot read the kubeconfig${flags.kubeconfig ? ` ${flags.kubeconfig}` : ''}: ${(err as Error).message}`);
  }
  if (flags.context) {
    if (!kc.getContextObject(flags.context)) {
      throw new PluginError(`no context "${flags.context}" in the kubeconfig (contexts: ${kc.getContexts().map((c) => c.name).join(', ') || 'none'})`);
    }
    kc.setCurrentContext(flags.context);
  }
  const contextName = kc.getCurrentContext();
  const context = kc.getContextObject(contextName);
  // What client-node falls back to when it found no kubeconfig and no pod ServiceAccount.
  if (!flags.kubeconfig && contextName === 'loaded-context' && kc.getCurrentCluster()?.server === 'http://localhost:8080') {
    throw new PluginError('no kubeconfig found ($KUBECONFIG, ~/.kube/config) and not running in a pod: give --kubeconfig, or set up kubectl first');
  }
  if (!kc.getCurrentCluster()) {
    throw new PluginError(contextName ? `the context "${contextName}" names no cluster of the kubeconfig` : 'no current context in the kubeconfig: use --context, or "kubectl config use-context"');
  }
  await adoptKubectlTokenFile(kc, flags.kubeconfig);
  let connection;
  try {
    connection = await kubeConfigConnection(kc);
  } catch (err) {
    throw new PluginError(`cannot get credentials for the context "${contextName}": ${(err as Error).message}`);
  }
  const kube = KubeClient.fromConnection(connection);
  const user = kc.getCurrentUser();
  const credentials = async (): Promise<GatewayCredentials> => {
    const opts: { cert?: Buffer | string; key?: Buffer | string; headers?: Record<string, unknown> } = {};
    try {
      await kc.applyToHTTPSOptions(opts);
    } catch (err) {
      throw new PluginError(`cannot get credentials for the context "${contextName}" (${describeCredential(user)}): ${(err as Error).message}`);
    }
    const auth = opts.headers?.Authorization ?? opts.headers?.authorization;
    return { authorization: typeof auth === 'string' ? auth : undefined, cert: opts.cert, key: opts.key };
  };
  const kubectlArgs = [...(flags.kubeconfig ? ['--kubeconfig', flags.kubeconfig] : []), ...(flags.context ? ['--context', flags.context] : [])];
  return {
    kc,
    contextName,
    namespace: flags.namespace ?? context?.namespace ?? 'default',
    kube,
    credentialKind: describeCredential(user),
    credentials,
    async expiry() {
      const c = await credentials().catch(() => undefined);
      const token = c?.authorization?.startsWith('Bearer ') ? c.authorization.slice(7) : undefined;
      const exp = token ? jwtExpiry(token) : undefined;
      if (exp !== undefined && exp <= Date.now()) return `the token expired at ${new Date(exp).toISOString()}`;
      if (c?.cert) {
        try {
          const cert = new X509Certificate(c.cert);
          if (Date.parse(cert.validTo) <= Date.now()) return `the client certificate expired at ${new Date(cert.validTo).toISOString()}`;
        } catch {
          // Not parseable here: the server's answer says what is wrong with it.
        }
      }
      return undefined;
    },
    kubectlArgs,
    close: () => kube.close(),
  };
}
