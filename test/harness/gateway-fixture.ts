// The gateway tests' world: a storefront-like namespace set up from rbac-examples/ (renamed,
// so test files can share one control plane), devops-sa with a real token, the seed
// PacketCapture, two agents ("nodes") whose capture directories already hold pcap files
// (no pods run here, so nothing new is captured; the agents report the files in status
// themselves), and a gateway in front.
import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from '../../src/kube/config.js';
import type { KubeClient } from '../../src/kube/client.js';
import { getPacketCapture, type CaptureState } from '../../src/kube/packetcapture.js';
import { captureReports } from './node-reports.js';
import { bridgeAddress } from './addresses.js';
import { uniqueName, type Teardown, type TestCluster } from './cluster.js';
import { REPO_ROOT } from './control-plane.js';
import { installKubePcap, makePki, publishAgents, scratchDir, startAgent, startGateway, type AgentHandle, type GatewayHandle, type Pki } from './kube-pcap.js';
import { writeDnsPcap } from './pcap-fixtures.js';
import { waitFor } from './wait.js';

export const CAPTURE = 'pc-storefront-logging-dns';
const RBAC = join(REPO_ROOT, 'rbac-examples');

export interface StorefrontWorld {
  ns: string;
  pki: Pki;
  logDir: string;
  agents: AgentHandle[];
  agentService: string;
  gateway: GatewayHandle;
  devopsToken: string;
  /** The pcap bytes written on each node, by "<node>/<file>". */
  files: Map<string, Buffer>;
  kube: KubeClient;
  /** Grants devops-sa get on packetcaptures/files (rbac-examples/files-role.yaml). */
  grantFiles(): Promise<void>;
  /** The cluster's name of node-1, node-2 in this world. */
  nodeName(short: string): string;
  /** Every node's expected fileNames once `file` is added on `node` (a cluster node name). */
  filesWith(node: string, file: string): Record<string, string[]>;
  /** Adds a file on the first node (written by `make`) and waits until its agent lists it (reporting `state`, Capturing unless said). */
  addFileOnFirstNode(file: string, make: (path: string) => Promise<unknown>, state?: CaptureState): Promise<void>;
  /** Sets spec.endTime in the past, as `kubectl pcap stop` does: the agents report Finished (with these files, the first ones unless said). */
  stopCapture(fileNames?: Record<string, string[]>): Promise<void>;
  /** Waits until every node's report has this state and lists exactly these files. */
  waitForStatus(state: CaptureState, fileNames?: Record<string, string[]>): Promise<void>;
  downloadUrl(prefix?: boolean): string;
}

export async function storefrontWorld(t: Teardown, c: TestCluster, opts: { nodes?: string[]; gatewayArgs?: string[]; agentArgs?: string[]; filesPerNode?: number; exports?: boolean } = {}): Promise<StorefrontWorld> {
  await installKubePcap(c);
  const pki = await makePki(t);
  const logDir = await scratchDir(t, 'logs');
  const ns = await c.createNamespace('storefront');
  const rename = { renameNamespace: { from: 'storefront', to: ns } };
  await c.applyYaml(join(RBAC, 'devops-serviceaccount.yaml'), rename);
  await c.applyYaml(join(RBAC, 'capture-role.yaml'), rename);
  const devopsToken = await c.tokenFor(ns, 'devops-sa');
  // The engineer applies the capture with their own token, as in the story.
  await c.applyYaml(join(REPO_ROOT, 'deploy', 'examples', 'pc-storefront-logging-dns.yaml'), { ...rename, token: devopsToken });

  const kube = await connect(c.info.kubeconfig);
  t.teardown(() => kube.close());
  // Unique node names: test files share one API server and agents watch every namespace.
  const suffix = randomBytes(3).toString('hex');
  const nodeName = (short: string): string => `${short}-${suffix}`;
  const nodes = (opts.nodes ?? ['node-1', 'node-2']).map(nodeName);
  const files = new Map<string, Buffer>();
  const agents: AgentHandle[] = [];
  const expected: Record<string, string[]> = {};
  for (const [i, node] of nodes.entries()) {
    const captureDir = await scratchDir(t, `captures-${node}`);
    const dir = join(captureDir, ns, CAPTURE);
    await mkdir(dir, { recursive: true });
    const names: string[] = [];
    for (let f = 0; f < (opts.filesPerNode ?? 2); f++) {
      const name = f === 0 ? `logging-${i}_cali${i}.pcap` : `logging-${i}_cali${i}-${1_700_000_000_000_000 + f}.pcap`;
      files.set(`${node}/${name}`, await writeDnsPcap(join(dir, name), 20 + 10 * f + i, { src: `192.0.2.${10 + i}` }));
      names.push(name);
    }
    expected[node] = names.sort();
    const address = await bridgeAddress(t);
    agents.push(await startAgent(t, c, { node, address, captureDir, pki, logDir, extraArgs: ['--status-interval-ms=200', ...(opts.agentArgs ?? [])] }));
  }
  const waitForStatus = async (state: CaptureState, fileNames: Record<string, string[]> = expected): Promise<void> => {
    await waitFor(async () => {
      const reports = await captureReports(kube, ns, CAPTURE);
      const ok = nodes.every((n) => {
        const e = reports.get(n)?.status;
        return e?.state === state && JSON.stringify(e.fileNames ?? []) === JSON.stringify(fileNames[n] ?? []);
      });
      if (!ok) throw new Error(`reports: ${JSON.stringify([...reports.values()].map((r) => [r.spec.nodeName, r.status]))}`);
      return true;
    }, { what: `every node to report ${state} with its files`, timeoutMs: 20_000 });
  };
  // The capture runs and has captured (its files are there), though no pod matches now.
  await waitForStatus('Capturing');
  const agentService = uniqueName('agents');
  await publishAgents(c, agentService, agents);
  const gateway = await startGateway(t, c, { pki, logDir, agentService, extraArgs: opts.gatewayArgs, exports: opts.exports });
  const world: StorefrontWorld = {
    ns, pki, logDir, agents, agentService, gateway, devopsToken, files, kube, waitForStatus, nodeName,
    filesWith: (node, file) => {
      const byNode: Record<string, string[]> = {};
      for (const key of files.keys()) (byNode[key.split('/')[0]!] ??= []).push(key.split('/')[1]!);
      byNode[node] = [...(byNode[node] ?? []), file];
      for (const n of Object.keys(byNode)) byNode[n]!.sort();
      return byNode;
    },
    async addFileOnFirstNode(file, make, state = 'Capturing') {
      await make(join(agents[0]!.captureDir, ns, CAPTURE, file));
      // A file made behind the agent's back is noticed at its next resync; an event on the
      // capture (any change to it) makes the agent look now.
      const r = await c.kubectl(['annotate', '--overwrite', '-n', ns, 'packetcaptures.projectcalico.org', CAPTURE, `kube-pcap-test/files=${randomBytes(4).toString('hex')}`]);
      if (r.code !== 0) throw new Error(`kubectl annotate: ${r.stderr}`);
      await waitForStatus(state, world.filesWith(agents[0]!.node, file));
    },
    stopCapture: async (fileNames) => {
      const pc = await getPacketCapture(kube, ns, CAPTURE);
      await c.applyManifest(JSON.stringify({ apiVersion: 'projectcalico.org/v3', kind: 'PacketCapture', metadata: { name: CAPTURE, namespace: ns }, spec: { ...pc?.spec, endTime: new Date(Date.now() - 1000).toISOString() } }));
      await waitForStatus('Finished', fileNames);
    },
    grantFiles: async () => {
      await c.applyYaml(join(RBAC, 'files-role.yaml'), rename);
    },
    downloadUrl: (prefix = true) => `${gateway.url}${prefix ? '/packet-capture' : ''}/download/${ns}/${CAPTURE}/files.zip`,
  };
  return world;
}
