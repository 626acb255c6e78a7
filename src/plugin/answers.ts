// Failures as answers: what went wrong, in the user's terms, and what to do about it. The
// gateway's and the API server's errors are Kubernetes Status objects; each status code
// becomes the sentence a platform engineer would have written by hand.
import { KubeApiError, KubeUnavailableError } from '../kube/client.js';
import { getPacketCapture, type NodeCaptureStatus, type PacketCapture } from '../kube/packetcapture.js';
import type { GatewayResponse } from './gateway-access.js';
import type { KubeContext } from './kube-context.js';
import { PluginError } from './plugin-error.js';

export interface Target {
  namespace: string;
  name: string;
}

interface Status {
  message?: string;
  reason?: string;
  details?: { causes?: { reason?: string; field?: string; message?: string }[]; retryAfterSeconds?: number };
}

const FILES_ROLE: Record<'get' | 'delete', string> = { get: 'rbac-examples/files-role.yaml', delete: 'rbac-examples/files-delete-role.yaml' };

async function readStatus(res: GatewayResponse): Promise<Status> {
  const text = await res.body.text().catch(() => '');
  try {
    return JSON.parse(text) as Status;
  } catch {
    return { message: text.slice(0, 300) };
  }
}

/** 401 from the gateway or the API server: expired, missing, or unknown, and for which context. */
async function unauthenticated(ctx: KubeContext, message: string | undefined, who: string): Promise<PluginError> {
  const expired = await ctx.expiry();
  const from = `context "${ctx.contextName}" (${ctx.credentialKind})`;
  if (expired || /expired/i.test(message ?? '')) {
    return new PluginError(`${who} refused your credential because it has expired (${expired ?? message}): it comes from ${from}. Log in again (or renew the token) and retry.`);
  }
  if (ctx.credentialKind === 'no credential') {
    return new PluginError(`${who} needs a credential, and ${from} has none: use a context with a token, an exec plugin or a client certificate.`);
  }
  return new PluginError(`${who} does not know your credential from ${from}${message ? `: ${message}` : ''}. It may be revoked, for another cluster, or (a client certificate) not from a CA the gateway trusts.`);
}

function stateCounts(files: readonly NodeCaptureStatus[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const f of files) counts.set(f.state ?? 'Unknown', (counts.get(f.state ?? 'Unknown') ?? 0) + 1);
  return counts;
}

/** The PluginError for a gateway answer that is not a success. */
export async function gatewayFailure(ctx: KubeContext, res: GatewayResponse, verb: 'get' | 'delete', target: Target): Promise<PluginError> {
  const s = await readStatus(res);
  const capture = `PacketCapture ${target.name} in namespace ${target.namespace}`;
  switch (res.status) {
    case 400:
      return new PluginError(`the gateway refused the request: ${s.message ?? 'bad request'}`);
    case 401:
      return await unauthenticated(ctx, s.message, 'the gateway');
    case 403:
      return new PluginError(
        `forbidden: ${s.message ?? 'the gateway refused'}.\n` +
        `Reading captured packets needs "${verb}" on packetcaptures/files (projectcalico.org) in namespace ${target.namespace}, a permission separate from managing captures. ` +
        `A namespace owner grants it with ${FILES_ROLE[verb]} (check with: kubectl auth can-i ${verb} packetcaptures.projectcalico.org --subresource files -n ${target.namespace}).`,
      );
    case 404: {
      if (s.reason !== 'NoFiles') return new PluginError(`there is no ${capture}.`);
      const pc = await getPacketCapture(ctx.kube, target.namespace, target.name).catch(() => undefined);
      const files = pc?.status?.files ?? [];
      const counts = stateCounts(files);
      const waiting = counts.get('WaitingForTraffic') ?? 0;
      const parts = [`${waiting} of ${files.length} node${files.length === 1 ? '' : 's'} ${waiting === 1 ? 'is' : 'are'} still WaitingForTraffic (no matching packet yet)`];
      for (const [state, n] of counts) if (state !== 'WaitingForTraffic') parts.push(`${n} ${state}`);
      return new PluginError(`the ${capture} has no files yet: ${files.length === 0 ? 'no node has taken it up yet (is the agent DaemonSet running, and does the selector match pods?)' : parts.join(', ')}. Try again when "kubectl pcap wait ${target.name} --for=capturing" returns.`);
    }
    case 409:
      return new PluginError(`${s.message ?? 'conflict'}.\nStop the capture first (kubectl pcap stop ${target.name} -n ${target.namespace}), then clean its files.`);
    case 429: {
      const after = res.headers['retry-after'];
      return new PluginError(`the gateway is busy (${s.message ?? 'too many requests'}); retry in ${typeof after === 'string' ? after : 'a few'} s.`);
    }
    case 502: {
      const how = (c: { reason?: string; message?: string }): string => c.reason === 'AgentInvalidResponse' ? 'answered off-contract'
        : c.reason === 'AgentRefused' ? (c.message ?? 'refused').replace(/^the agent of node \S+ /, '') : 'unreachable';
      const nodes = (s.details?.causes ?? []).map((c) => `${c.field ?? '?'} (${how(c)})`);
      return new PluginError(`${nodes.length === 1 ? 'the agent of node' : 'the agents of nodes'} ${nodes.join(', ') || '(unnamed)'} could not deliver ${nodes.length === 1 ? 'its' : 'their'} files. --partial downloads what the other nodes hold and names the missing ones in the result (MISSING.txt in a zip, the section comment in a pcapng).`);
    }
    case 503: {
      const after = res.headers['retry-after'];
      return new PluginError(`the gateway cannot answer now: ${s.message ?? 'service unavailable'}${typeof after === 'string' ? ` (retry in ${after} s)` : ''}.`);
    }
    default:
      return new PluginError(`the gateway answered ${res.status}${s.message ? `: ${s.message}` : ''}`);
  }
}

/** The answer for a capture that does not exist (with a hint of what to do, when there is one). */
export function noSuchCapture(target: Target, hint?: string): PluginError {
  return new PluginError(`there is no PacketCapture ${target.name} in namespace ${target.namespace}${hint ? ` (${hint})` : ''}.`);
}

/** The capture, read as the user; a missing capture or a refusal is an answer (PluginError). */
export async function readCapture(ctx: KubeContext, target: Target): Promise<PacketCapture> {
  let pc: PacketCapture | undefined;
  try {
    pc = await getPacketCapture(ctx.kube, target.namespace, target.name);
  } catch (err) {
    return await kubeFailure(ctx, err, 'get', target);
  }
  if (!pc) throw noSuchCapture(target);
  return pc;
}

/** Rethrows an API server failure (of managing the capture itself) as an answer. */
export async function kubeFailure(ctx: KubeContext, err: unknown, verb: string, target: Target | { namespace?: string }): Promise<never> {
  const ns = target.namespace;
  if (err instanceof KubeApiError) {
    if (err.status === 401) throw await unauthenticated(ctx, err.body.message, `the API server of context "${ctx.contextName}"`);
    if (err.status === 403) {
      throw new PluginError(
        `forbidden: ${err.body.message ?? ''}\n` +
        `Managing captures needs "${verb}" on packetcaptures (projectcalico.org)${ns ? ` in namespace ${ns}` : ' in every namespace (-A)'}; rbac-examples/capture-role.yaml grants it per namespace.`,
      );
    }
    if (err.status === 404) {
      // A missing object is a Status naming it; a missing resource type is a bare 404.
      if ('name' in target && err.body.details !== undefined) throw noSuchCapture(target);
      throw new PluginError(`this cluster has no PacketCapture resource (projectcalico.org/v3): install kube-pcap's CRD with "kubectl apply -k deploy/" (README, "Deploying to a cluster").`);
    }
    throw new PluginError(`the API server refused: ${err.body.message ?? err.message}`);
  }
  if (err instanceof KubeUnavailableError) throw new PluginError(`cannot reach the API server of context "${ctx.contextName}": ${err.message}`);
  throw err;
}
