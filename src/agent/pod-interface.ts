// Which host-side interface carries a pod's traffic, found from the pod's IP in the node's
// network namespace (where the agent runs, hostNetwork):
//
// - routed veth CNIs (Calico, Cilium in routing mode, kindnet, ...): the node routes the
//   pod's /32 to the pod's veth, so `ip route get <podIP>` names it;
// - bridge CNIs (the bridge plugin, flannel's cni0, docker0): the route leads to the bridge;
//   the pod's MAC (from the neighbour table) is then looked up in the bridge's forwarding
//   database, which names the bridge port, the pod's veth. The bridge learns a pod's MAC
//   from its first frame, so until a pod has sent anything its interface is unknown and the
//   agent keeps asking.
import { execFile } from 'node:child_process';

export type Resolution = { iface: string } | { error: string; retry: boolean };

export interface InterfaceResolver {
  resolve(podIP: string): Promise<Resolution>;
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

export class RouteInterfaceResolver implements InterfaceResolver {
  constructor(private readonly ip = 'ip', private readonly bridge = 'bridge') {}

  async resolve(podIP: string): Promise<Resolution> {
    let route: RouteInfo | undefined;
    try {
      [route] = await ipJson<RouteInfo[]>(this.ip, ['-j', 'route', 'get', podIP]);
    } catch (err) {
      return { error: (err as Error).message, retry: true };
    }
    if (!route?.dev) return { error: `no route to the pod's IP ${podIP} on this node`, retry: true };
    if (route.type === 'local') return { error: `${podIP} is an address of the node itself (a host-network pod?)`, retry: false };
    // A pod on this node is reached directly; through a gateway means the CNI has not set
    // up the pod's route (yet), and the device would be the node's uplink: never capture it.
    if (route.gateway) return { error: `the pod's IP ${podIP} is routed through the gateway ${route.gateway}: no route to a pod interface on this node (yet)`, retry: true };
    let link: LinkInfo | undefined;
    try {
      [link] = await ipJson<LinkInfo[]>(this.ip, ['-j', '-d', 'link', 'show', 'dev', route.dev]);
    } catch (err) {
      return { error: (err as Error).message, retry: true };
    }
    const kind = link?.linkinfo?.info_kind;
    if (kind === 'veth') return { iface: route.dev };
    if (kind === 'bridge') return await this.bridgePort(podIP, route.dev);
    return { error: `the pod's IP ${podIP} is routed through ${route.dev} (${kind ?? 'a device'}), not a pod interface: is the pod on this node?`, retry: true };
  }

  private async bridgePort(podIP: string, bridge: string): Promise<Resolution> {
    try {
      const neigh = await ipJson<{ lladdr?: string; state?: string[] }[]>(this.ip, ['-j', 'neigh', 'show', 'to', podIP, 'dev', bridge]);
      const mac = neigh.find((n) => n.lladdr)?.lladdr?.toLowerCase();
      if (!mac) return { error: `waiting for pod ${podIP} to send a frame on bridge ${bridge}, to learn its port`, retry: true };
      const fdb = await ipJson<{ mac?: string; ifname?: string; flags?: string[]; state?: string }[]>(this.bridge, ['-j', 'fdb', 'show', 'br', bridge]);
      const port = fdb.find((e) => e.mac?.toLowerCase() === mac && e.ifname && e.ifname !== bridge && e.state !== 'permanent');
      if (!port?.ifname) return { error: `bridge ${bridge} has not learnt the port of ${podIP} (${mac}) yet`, retry: true };
      return { iface: port.ifname };
    } catch (err) {
      return { error: (err as Error).message, retry: true };
    }
  }
}
