// Which host-side interface carries a pod's traffic, found in the node's network namespace
// (where the agent runs, hostNetwork), from evidence the pod cannot forge (docs/agent.md,
// "Finding a pod's interface"):
//
// - routed veth CNIs (Calico, Cilium in routing mode, kindnet, ...): the node routes the
//   pod's /32 to the pod's veth, so `ip route get <podIP>` names it. Routes are the CNI's,
//   never the pod's.
// - bridge CNIs (the bridge plugin, flannel's cni0): the route leads to the bridge. The
//   bridge's neighbour and forwarding tables are learnt from frames the pods send, so a pod
//   with NET_RAW can make another pod's IP point at its own port, or its own IP at another
//   pod's: they are not evidence. The container runtime's CNI result cache is: libcni
//   writes each attachment's result (host-side interface, the pod's IPs, the pod's name in
//   CNI_ARGS) under /var/lib/cni/results, on the host, where no pod can write.
import { execFile } from 'node:child_process';

import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

export interface PodRef {
  namespace: string;
  name: string;
  uid: string;
  ip: string;
  /** All its IPs (dual-stack), `ip` first; recorded with its files (file-source.ts). */
  ips?: string[];
}

export type Resolution = { iface: string; via: 'route' | 'cni-result' } | { error: string };

export interface InterfaceResolver {
  resolve(pod: PodRef): Promise<Resolution>;
}

interface RouteInfo {
  dev?: string;
  type?: string;
  gateway?: string;
}

interface LinkInfo {
  ifname: string;
  linkinfo?: { info_kind?: string };
}

async function ipJson<T>(cmd: string, args: string[]): Promise<T> {
  return await new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 5000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`));
      try {
        resolve(JSON.parse(stdout || '[]') as T);
      } catch (e) {
        reject(new Error(`${cmd} ${args.join(' ')}: unreadable output (${(e as Error).message})`));
      }
    });
  });
}

/** What the agent reads of a libcni cache file (libcni's cachedInfo). */
interface CniCacheFile {
  kind?: string;
  containerId?: string;
  ifName?: string;
  cniArgs?: [string, string][];
  result?: {
    interfaces?: { name?: string; mac?: string; sandbox?: string }[];
    ips?: { address?: string; interface?: number }[];
  };
}

export interface CniAttachment {
  file: string;
  hostIfaces: string[];
  ips: string[];
  podNamespace: string | undefined;
  podName: string | undefined;
  podUid: string | undefined;
  mtimeMs: number;
}

/** The attachments in a libcni result cache directory (files that do not parse are skipped). */
export class CniResultCache {
  /** Parsed files by name, kept while their mtime stays the same. */
  private readonly parsed = new Map<string, CniAttachment | undefined>();

  constructor(readonly dir: string) {}

  async attachments(): Promise<CniAttachment[]> {
    const names = await readdir(this.dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[];
      throw err;
    });
    const out: CniAttachment[] = [];
    const seen = new Set<string>();
    for (const name of names) {
      const file = join(this.dir, name);
      const st = await stat(file).catch(() => undefined);
      if (!st?.isFile() || st.size > 1 << 20) continue;
      const key = `${name}@${st.mtimeMs}@${st.size}`;
      seen.add(key);
      if (!this.parsed.has(key)) this.parsed.set(key, parseCniCache(file, await readFile(file, 'utf8').catch(() => ''), st.mtimeMs));
      const a = this.parsed.get(key);
      if (a) out.push(a);
    }
    for (const key of this.parsed.keys()) if (!seen.has(key)) this.parsed.delete(key);
    return out;
  }
}

export function parseCniCache(file: string, text: string, mtimeMs: number): CniAttachment | undefined {
  let c: CniCacheFile;
  try {
    c = JSON.parse(text) as CniCacheFile;
  } catch {
    return undefined;
  }
  const interfaces = c.result?.interfaces ?? [];
  const ips = (c.result?.ips ?? []).map((i) => i.address?.split('/')[0]).filter((a): a is string => typeof a === 'string' && a !== '');
  const hostIfaces = interfaces.filter((i) => !i.sandbox && typeof i.name === 'string' && i.name !== '').map((i) => i.name!);
  const args = new Map((c.cniArgs ?? []).filter((a) => Array.isArray(a) && a.length === 2).map(([k, v]) => [k, v]));
  return { file, hostIfaces, ips, podNamespace: args.get('K8S_POD_NAMESPACE'), podName: args.get('K8S_POD_NAME'), podUid: args.get('K8S_POD_UID'), mtimeMs };
}

export interface HostInterfaceResolverOptions {
  /** libcni's result cache (mounted read-only from the host); bridge CNIs need it. */
  cniResultsDir: string;
  /** The reader of that cache, when the agent shares one (cni-addresses.ts reads it too). */
  cni?: CniResultCache;
  ip?: string;
}

export class HostInterfaceResolver implements InterfaceResolver {
  private readonly cni: CniResultCache;
  private readonly ip: string;

  constructor(o: HostInterfaceResolverOptions) {
    this.cni = o.cni ?? new CniResultCache(o.cniResultsDir);
    this.ip = o.ip ?? 'ip';
  }

  async resolve(pod: PodRef): Promise<Resolution> {
    let route: RouteInfo | undefined;
    try {
      [route] = await ipJson<RouteInfo[]>(this.ip, ['-j', 'route', 'get', pod.ip]);
    } catch (err) {
      return { error: (err as Error).message };
    }
    if (!route?.dev) return { error: `no route to the pod's IP ${pod.ip} on this node` };
    if (route.type === 'local') return { error: `${pod.ip} is an address of the node itself (a host-network pod?)` };
    // A pod on this node is reached directly; through a gateway means the CNI has not set
    // up the pod's route (yet), and the device would be the node's uplink: never capture it.
    if (route.gateway) return { error: `the pod's IP ${pod.ip} is routed through the gateway ${route.gateway}: no route to a pod interface on this node (yet)` };
    let link: LinkInfo | undefined;
    try {
      [link] = await ipJson<LinkInfo[]>(this.ip, ['-j', '-d', 'link', 'show', 'dev', route.dev]);
    } catch (err) {
      return { error: (err as Error).message };
    }
    const kind = link?.linkinfo?.info_kind;
    if (kind === 'veth') return { iface: route.dev, via: 'route' };
    if (kind === 'bridge') return await this.bridgePort(pod, route.dev);
    return { error: `the pod's IP ${pod.ip} is routed through ${route.dev} (${kind ?? 'a device'}), not a pod interface: is the pod on this node?` };
  }

  /** The pod's port of the bridge, from the runtime's CNI result for the pod. */
  private async bridgePort(pod: PodRef, bridge: string): Promise<Resolution> {
    const untrusted = `the bridge's own neighbour and forwarding tables are not used: a pod can forge them`;
    let attachments: CniAttachment[];
    try {
      attachments = await this.cni.attachments();
    } catch (err) {
      return { error: `the pod's IP ${pod.ip} is behind bridge ${bridge}, and the CNI result cache ${this.cni.dir} cannot be read (${(err as Error).message}); ${untrusted}` };
    }
    const mine = attachments.filter((a) => a.ips.includes(pod.ip)
      && (a.podNamespace === undefined || a.podNamespace === pod.namespace)
      && (a.podName === undefined || a.podName === pod.name)
      && (a.podUid === undefined || pod.uid === '' || a.podUid === pod.uid));
    if (mine.length === 0) return { error: `the pod's IP ${pod.ip} is behind bridge ${bridge} and no CNI result in ${this.cni.dir} names the pod's interface (is the runtime's /var/lib/cni/results mounted into the agent?); ${untrusted}` };
    let ports: LinkInfo[];
    try {
      ports = await ipJson<LinkInfo[]>(this.ip, ['-j', 'link', 'show', 'master', bridge]);
    } catch (err) {
      return { error: (err as Error).message };
    }
    const portNames = new Set(ports.map((p) => p.ifname));
    const candidates = new Set(mine.flatMap((a) => a.hostIfaces.filter((i) => portNames.has(i))));
    if (candidates.size === 0) return { error: `the CNI result for ${pod.ip} (${mine.map((a) => a.file).join(', ')}) names no port of bridge ${bridge} that exists` };
    if (candidates.size > 1) return { error: `CNI results disagree on the interface of ${pod.ip}: ${[...candidates].join(', ')}; not capturing either` };
    return { iface: [...candidates][0]!, via: 'cni-result' };
  }
}
