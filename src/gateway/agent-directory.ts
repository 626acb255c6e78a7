// Which address serves which node's files: the EndpointSlices of the agents' headless
// Service (endpoints[].nodeName), kept current by a watch rather than listed per request.
import type { Logger } from 'pino';
import type { KubeClient } from '../kube/client.js';
import { Reflector } from '../kube/reflector.js';

interface EndpointSlice {
  metadata?: { name?: string; namespace?: string; resourceVersion?: string };
  addressType?: string;
  endpoints?: { addresses?: string[]; nodeName?: string; conditions?: { ready?: boolean; terminating?: boolean } }[];
  ports?: { name?: string; port?: number }[];
}

export interface AgentEndpoint {
  node: string;
  address: string;
  port: number;
  ready: boolean;
}

export class AgentDirectory {
  private readonly reflector: Reflector<EndpointSlice>;

  constructor(kube: KubeClient, service: { namespace: string; name: string }, private readonly portName: string, log: Logger) {
    this.reflector = new Reflector<EndpointSlice>(kube, {
      path: `/apis/discovery.k8s.io/v1/namespaces/${encodeURIComponent(service.namespace)}/endpointslices`,
      labelSelector: `kubernetes.io/service-name=${service.name}`,
      log,
    });
  }

  start(): void {
    this.reflector.start();
  }

  async stop(): Promise<void> {
    await this.reflector.stop();
  }

  get synced(): boolean {
    return this.reflector.synced;
  }

  get lastError(): string | undefined {
    return this.reflector.lastError;
  }

  async waitForSync(timeoutMs: number): Promise<void> {
    await this.reflector.waitForSync(timeoutMs);
  }

  /** The agent serving `node`: a ready endpoint when there is one (e.g. during a rollout). */
  endpointFor(node: string): AgentEndpoint | undefined {
    let best: AgentEndpoint | undefined;
    for (const slice of this.reflector.items.values()) {
      if (slice.addressType !== 'IPv4' && slice.addressType !== 'IPv6') continue;
      const port = slice.ports?.find((p) => (p.name ?? '') === this.portName)?.port;
      if (port === undefined) continue;
      for (const ep of slice.endpoints ?? []) {
        const address = ep.addresses?.[0];
        if (ep.nodeName !== node || !address || ep.conditions?.terminating) continue;
        const candidate = { node, address, port, ready: ep.conditions?.ready !== false };
        if (!best || (candidate.ready && !best.ready)) best = candidate;
      }
    }
    return best;
  }
}
