// How the plugin reaches the gateway: --gateway URL (or $KUBE_PCAP_GATEWAY) for an Ingress,
// else `kubectl port-forward` to the gateway Service on a free local port for the length of
// the command. Over port-forward the gateway's certificate is verified against the CA that
// the ConfigMap kube-pcap/kube-pcap-gateway-ca publishes (key ca.crt), for the Service's DNS
// name; --insecure-skip-tls-verify exists and is never the default.
// What goes to the gateway (docs/security.md, "A user's credential at the gateway"): when
// the user is a ServiceAccount that may mint tokens for itself, a short-lived token for the
// gateway's audience only (useless against the API server); else the kubeconfig's own
// credentials (bearer token, client certificate). A --gateway URL gets them only when the
// cluster publishes it (key `urls` of that ConfigMap) or the user says --trust-gateway-url.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { rootCertificates } from 'node:tls';
import { Agent, request, type Dispatcher } from 'undici';
import { KubeApiError } from '../kube/client.js';
import type { KubeContext } from './kube-context.js';
import { PluginError } from './plugin-error.js';

export const GATEWAY_CA_CONFIGMAP = 'kube-pcap-gateway-ca';
export const DEFAULT_GATEWAY_SERVICE = 'kube-pcap/kube-pcap-gateway';
/** The gateway's default --token-audiences. */
export const DEFAULT_TOKEN_AUDIENCE = 'kube-pcap';

/** --token-audience as given: absent, the default; "-", none (the kubeconfig's credential). */
export function tokenAudience(flag: string | undefined): string | undefined {
  if (flag === undefined) return DEFAULT_TOKEN_AUDIENCE;
  return flag === '-' || flag === '' ? undefined : flag;
}

export interface GatewayFlags {
  /** An https:// URL (Ingress); port-forward when absent. */
  gateway?: string;
  /** NAMESPACE/NAME of the gateway Service. */
  gatewayService: string;
  /** Extra CA for --gateway (an Ingress with a private CA). */
  gatewayCaFile?: string;
  insecureSkipTlsVerify: boolean;
  /** Send credentials to a --gateway URL the cluster does not publish. */
  trustGatewayUrl?: boolean;
  /** Audience of the token minted for the gateway; empty: send the kubeconfig's credential. */
  tokenAudience?: string;
}

export interface GatewayResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData['body'];
}

export interface Gateway {
  /** Where requests go, e.g. https://127.0.0.1:41234/packet-capture. */
  base: string;
  /** How it was reached, for messages. */
  via: string;
  /** What was presented: a token for the gateway's audience, or the kubeconfig's credential. */
  credential: string;
  request(method: 'GET' | 'DELETE', path: string, signal?: AbortSignal, extraHeaders?: Record<string, string>): Promise<GatewayResponse>;
  close(): Promise<void>;
}

const PORT_FORWARD_TIMEOUT_MS = 30_000;

function parseService(text: string): { namespace: string; name: string } {
  const m = /^([a-z0-9-]+)\/([a-z0-9-]+)$/.exec(text);
  if (!m) throw new PluginError(`--gateway-service must be NAMESPACE/NAME, not "${text}"`, 2);
  return { namespace: m[1]!, name: m[2]! };
}

const installHint = 'Install kube-pcap with "kubectl apply -k deploy/" (README, "Deploying to a cluster"), or give --gateway URL when it is reached through an Ingress.';

async function readServicePort(ctx: KubeContext, svc: { namespace: string; name: string }): Promise<number> {
  let service: { spec?: { ports?: { name?: string; port: number }[] } };
  try {
    service = await ctx.kube.request({ path: `/api/v1/namespaces/${svc.namespace}/services/${svc.name}` });
  } catch (err) {
    if (err instanceof KubeApiError && err.status === 404) {
      throw new PluginError(`the kube-pcap gateway is not installed in this cluster (context "${ctx.contextName}"): there is no Service ${svc.namespace}/${svc.name}. ${installHint}`);
    }
    if (err instanceof KubeApiError && err.status === 403) {
      throw new PluginError(`you may not read the Service ${svc.namespace}/${svc.name}, which port-forward needs: rbac-examples/gateway-access.yaml grants it (get that Service, port-forward to the gateway's pods, read its CA); or give --gateway URL for an Ingress.`);
    }
    throw err;
  }
  const ports = service.spec?.ports ?? [];
  const port = ports.find((p) => p.name === 'https') ?? ports[0];
  if (!port) throw new PluginError(`the Service ${svc.namespace}/${svc.name} has no port`);
  return port.port;
}

async function readGatewayCa(ctx: KubeContext, namespace: string): Promise<string> {
  const hint = `The ConfigMap ${namespace}/${GATEWAY_CA_CONFIGMAP} (key ca.crt) publishes the CA of the gateway's certificate (README, "Deploying to a cluster"); --insecure-skip-tls-verify skips the check, which lets anyone on the path read your token.`;
  try {
    const cm = await ctx.kube.request<{ data?: Record<string, string> }>({ path: `/api/v1/namespaces/${namespace}/configmaps/${GATEWAY_CA_CONFIGMAP}` });
    const ca = cm.data?.['ca.crt'];
    if (!ca || !ca.includes('-----BEGIN CERTIFICATE-----')) throw new PluginError(`the ConfigMap ${namespace}/${GATEWAY_CA_CONFIGMAP} has no certificate under ca.crt. ${hint}`);
    return ca;
  } catch (err) {
    if (err instanceof KubeApiError && err.status === 404) throw new PluginError(`cannot verify the gateway: there is no ConfigMap ${namespace}/${GATEWAY_CA_CONFIGMAP}. ${hint}`);
    if (err instanceof KubeApiError && err.status === 403) throw new PluginError(`cannot verify the gateway: you may not read the ConfigMap ${namespace}/${GATEWAY_CA_CONFIGMAP} (deploy/gateway/rbac.yaml lets every authenticated user read it; is it applied?). ${hint}`);
    throw err;
  }
}

/** `kubectl port-forward` on a free local port; resolves once it forwards. */
async function portForward(ctx: KubeContext, svc: { namespace: string; name: string }, port: number): Promise<{ localPort: number; child: ChildProcess }> {
  const kubectl = process.env.KUBECTL ?? 'kubectl';
  const args = [...ctx.kubectlArgs, 'port-forward', '--namespace', svc.namespace, '--address', '127.0.0.1', `service/${svc.name}`, `:${port}`];
  const child = spawn(kubectl, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    if (stderr.length < 4096) stderr += d;
  });
  return await new Promise((resolve, reject) => {
    let stdout = '';
    const timer = setTimeout(() => {
      child.kill();
      reject(new PluginError(`kubectl port-forward to ${svc.namespace}/${svc.name} did not start forwarding within ${PORT_FORWARD_TIMEOUT_MS / 1000} s${stderr ? `: ${stderr.trim()}` : ''}`));
    }, PORT_FORWARD_TIMEOUT_MS);
    child.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new PluginError(err.code === 'ENOENT'
        ? `kubectl was not found on PATH: it runs the port-forward to the gateway (set $KUBECTL to its path), or give --gateway URL for an Ingress`
        : `cannot run kubectl port-forward: ${err.message}`));
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new PluginError(`kubectl port-forward to service/${svc.name} in ${svc.namespace} failed (exit ${code}): ${stderr.trim() || 'no message'}`));
    });
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      const m = /Forwarding from 127\.0\.0\.1:(\d+)/.exec(stdout);
      if (m) {
        clearTimeout(timer);
        child.removeAllListeners('exit');
        child.removeAllListeners('error');
        child.on('error', () => undefined);
        resolve({ localPort: Number(m[1]), child });
      }
    });
  });
}

/** The URLs the cluster publishes for its gateway (ConfigMap key `urls`), or why none can be read. */
async function publishedUrls(ctx: KubeContext, namespace: string): Promise<string[] | string> {
  try {
    const cm = await ctx.kube.request<{ data?: Record<string, string> }>({ path: `/api/v1/namespaces/${namespace}/configmaps/${GATEWAY_CA_CONFIGMAP}` });
    return (cm.data?.urls ?? '').split(/[\s,]+/).filter(Boolean);
  } catch (err) {
    if (err instanceof KubeApiError) return `the ConfigMap ${namespace}/${GATEWAY_CA_CONFIGMAP} cannot be read (${err.status})`;
    throw err;
  }
}

/** A URL's origin and path, as the gateway is addressed ("https://host:port/prefix"). */
function gatewayAddress(url: URL): string {
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
}

/**
 * Credentials are a full API credential more often than not: they go only to a URL the
 * cluster's operator published, unless the user vouches for it.
 */
async function checkGatewayUrl(ctx: KubeContext, url: URL, flags: GatewayFlags): Promise<void> {
  if (flags.trustGatewayUrl) return;
  const namespace = parseService(flags.gatewayService).namespace;
  const published = await publishedUrls(ctx, namespace);
  const wanted = gatewayAddress(url);
  if (Array.isArray(published) && published.some((p) => URL.canParse(p) && gatewayAddress(new URL(p)) === wanted)) return;
  const why = Array.isArray(published)
    ? published.length > 0 ? `it publishes ${published.join(', ')}` : `the ConfigMap ${namespace}/${GATEWAY_CA_CONFIGMAP} lists no gateway URL under the key urls`
    : published;
  throw new PluginError(`not sending your credentials to ${wanted}: it is not a gateway URL this cluster publishes (${why}). Check the address; if you trust it, add --trust-gateway-url. An operator publishes the URL with: kubectl -n ${namespace} patch configmap ${GATEWAY_CA_CONFIGMAP} --type merge -p '{"data":{"urls":"https://..."}}'`, 2);
}

/**
 * A token for the gateway's audience alone, when the user is a ServiceAccount allowed to
 * mint one for itself (TokenRequest); undefined otherwise (the kubeconfig's credential goes).
 */
async function audienceBoundToken(ctx: KubeContext, audience: string): Promise<string | undefined> {
  try {
    const review = await ctx.kube.request<{ status?: { userInfo?: { username?: string } } }>({
      method: 'POST', path: '/apis/authentication.k8s.io/v1/selfsubjectreviews',
      body: { apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' },
    });
    const sa = /^system:serviceaccount:([a-z0-9-]+):([a-z0-9.-]+)$/.exec(review.status?.userInfo?.username ?? '');
    if (!sa) return undefined;
    const minted = await ctx.kube.request<{ status?: { token?: string } }>({
      method: 'POST', path: `/api/v1/namespaces/${sa[1]}/serviceaccounts/${sa[2]}/token`,
      // An hour, as a pod's projected token: the gateway re-checks a live stream's token while
      // it runs (--access-recheck-seconds), so this bounds a stream, not just its start.
      body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { audiences: [audience], expirationSeconds: 3600 } },
    });
    return minted.status?.token || undefined;
  } catch (err) {
    // Not allowed to review itself or to mint tokens (most users): the kubeconfig's credential.
    if (err instanceof KubeApiError) return undefined;
    throw err;
  }
}

export async function openGateway(ctx: KubeContext, flags: GatewayFlags): Promise<Gateway> {
  const creds = await ctx.credentials();
  const headers: Record<string, string> = { 'user-agent': 'kubectl-pcap' };
  let url: URL | undefined;
  if (flags.gateway) {
    try {
      url = new URL(flags.gateway);
    } catch {
      throw new PluginError(`--gateway must be an https:// URL, not "${flags.gateway}"`, 2);
    }
    if (url.protocol !== 'https:') throw new PluginError(`--gateway must be an https:// URL (the gateway speaks TLS only), not "${flags.gateway}"`, 2);
    await checkGatewayUrl(ctx, url, flags);
  }
  const bound = flags.tokenAudience ? await audienceBoundToken(ctx, flags.tokenAudience) : undefined;
  let credential: string;
  if (bound) {
    headers.authorization = `Bearer ${bound}`;
    credential = `a token for the audience ${flags.tokenAudience} only`;
  } else {
    if (creds.authorization) headers.authorization = creds.authorization;
    credential = `the kubeconfig's credential (${ctx.credentialKind})`;
  }
  let base: string;
  let via: string;
  let ca: string[] | undefined;
  let servername: string | undefined;
  let child: ChildProcess | undefined;
  if (url) {
    base = `${url.origin}${url.pathname.replace(/\/+$/, '')}/packet-capture`;
    via = url.origin;
    if (flags.gatewayCaFile) ca = [...rootCertificates, await readFile(flags.gatewayCaFile, 'utf8')];
  } else {
    const svc = parseService(flags.gatewayService);
    const port = await readServicePort(ctx, svc);
    if (!flags.insecureSkipTlsVerify) ca = [await readGatewayCa(ctx, svc.namespace)];
    const forward = await portForward(ctx, svc, port);
    child = forward.child;
    base = `https://127.0.0.1:${forward.localPort}/packet-capture`;
    via = `port-forward to service/${svc.name} in ${svc.namespace}`;
    servername = `${svc.name}.${svc.namespace}.svc`;
  }
  const dispatcher = new Agent({
    connect: {
      ca,
      servername,
      cert: creds.cert,
      key: creds.key,
      // Over port-forward the address is 127.0.0.1: TLS checks the certificate against the
      // servername, the Service's DNS name.
      rejectUnauthorized: !flags.insecureSkipTlsVerify,
    },
  });
  return {
    base,
    via,
    credential,
    async request(method, path, signal, extraHeaders) {
      let res;
      try {
        res = await request(`${base}${path}`, { method, headers: { ...extraHeaders, ...headers }, dispatcher, signal });
      } catch (err) {
        if (signal?.aborted) throw err;
        const cause = err as NodeJS.ErrnoException;
        throw new PluginError(`cannot reach the gateway (${via}): ${cause.code ? `${cause.code} ` : ''}${cause.message}`);
      }
      return { status: res.statusCode, headers: res.headers, body: res.body };
    },
    async close() {
      await dispatcher.close().catch(() => undefined);
      if (child && child.exitCode === null) {
        const exited = new Promise((r) => child!.once('exit', r));
        child.kill();
        await exited;
      }
    },
  };
}

