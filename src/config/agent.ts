// `kube-pcap agent` configuration.
import { serverConfig, serverOptions, type ServerConfig } from './common.js';
import { type OptionTable, type OptionValues, UsageError } from './options.js';

const C = 'kube-pcap agent';

export const agentOptions: OptionTable = {
  // The agent's one client is the gateway: its replicas may each hold a connection per
  // download and stream of a node, so the per-address cap is wide.
  ...serverOptions(9444, 256),
  'node-name': { type: 'string', metavar: 'NAME', env: 'NODE_NAME', help: 'The node this agent serves (required; from the downward API in a pod).' },
  'capture-dir': { type: 'string', metavar: 'DIR', default: '/var/lib/kube-pcap', help: 'Where pcap files are written: <dir>/<namespace>/<capture>/<pod>_<iface>.pcap.' },
  'capture-max-size-bytes': { type: 'integer', default: 10_000_000, min: 1, max: 2 ** 40, help: 'Rotate a file once it is larger than this, rounded up to whole millions of bytes (tcpdump\'s -C unit; at least 1 000 000).' },
  'capture-rotation-seconds': { type: 'integer', default: 3600, min: 1, max: 7 * 86400, help: 'Rotate a file when it is this old.' },
  'capture-max-files': { type: 'integer', default: 2, min: 0, max: 1000, help: 'Rotated files kept per pod and interface; the oldest is deleted first.' },
  tcpdump: { type: 'string', metavar: 'PATH', default: 'tcpdump', help: 'The tcpdump binary.' },
  'auth-audience': { type: 'string', metavar: 'AUDIENCE', default: 'kube-pcap-agent', help: 'Audience the gateway\'s token must carry.' },
  'client-ca-file': { type: 'string', metavar: 'FILE', help: 'CA that issued the gateway\'s client certificate (required: only the gateway may call the agent; reloaded when it changes).' },
  'gateway-client-names': { type: 'list', default: ['kube-pcap-gateway'], help: 'Common names of the gateway\'s client certificate that the agent accepts.' },
  'max-capture-workers': { type: 'integer', default: 32, min: 1, max: 10_000, help: 'Capture workers (one tcpdump per pod interface and capture) on this node, over all captures; more are refused with an Error naming this budget.' },
  'cni-results-dir': { type: 'string', metavar: 'DIR', default: '/var/lib/cni/results', help: 'The container runtime\'s CNI result cache (read-only); how pods behind a bridge CNI are matched to their bridge port.' },
  'finished-retention-seconds': { type: 'integer', default: 604_800, min: 0, max: 10 * 365 * 86400, help: 'A finished capture\'s files are removed from the node this long after its end time (default 7 days; 0: kept until the capture is deleted).' },
  'resync-seconds': { type: 'integer', default: 300, min: 5, max: 86400, help: 'Full reconciliation at least this often, whatever the watches say.' },
  'status-interval-ms': { type: 'integer', default: 1000, min: 100, max: 60_000, help: 'At most one write of this node\'s report per capture per this interval.' },
  'report-counters-interval-seconds': { type: 'integer', default: 60, min: 1, max: 3600, help: 'Packet, byte and drop counters move in this node\'s reports at most once per this interval (the agent\'s /metrics has them live).' },
  'api-timeout-seconds': { type: 'integer', default: 5, min: 1, max: 60, help: 'Timeout of each request to the API server.' },
  'pin-ttl-seconds': { type: 'integer', default: 120, min: 2, max: 86400, help: 'A download\'s pinned files are kept this long after their last use (the gateway renews them while it streams); then they are removed, also across agent restarts.' },
  'max-pins': { type: 'integer', default: 128, min: 1, max: 100_000, help: 'Downloads holding pinned files on this node at once; more are answered 503 until one ends.' },
};

export interface AgentConfig extends ServerConfig {
  nodeName: string;
  captureDir: string;
  maxSizeBytes: number;
  rotationSeconds: number;
  maxFiles: number;
  tcpdump: string;
  authAudience: string;
  clientCaFile: string;
  gatewayClientNames: string[];
  resyncMs: number;
  finishedRetentionMs: number;
  maxWorkers: number;
  cniResultsDir: string;
  statusIntervalMs: number;
  counterIntervalMs: number;
  apiTimeoutMs: number;
  pinTtlMs: number;
  maxPins: number;
}

export function agentConfig(v: OptionValues): AgentConfig {
  const base = serverConfig(C, v);
  const nodeName = v['node-name'] as string | undefined;
  if (!nodeName) throw new UsageError(`${C}: --node-name is required (or NODE_NAME)`);
  const clientCaFile = v['client-ca-file'] as string | undefined;
  if (!clientCaFile) throw new UsageError(`${C}: --client-ca-file is required (the CA of the gateway's client certificate)`);
  const gatewayClientNames = v['gateway-client-names'] as string[];
  if (gatewayClientNames.length === 0) throw new UsageError(`${C}: --gateway-client-names must name at least one common name`);
  return {
    ...base,
    nodeName,
    captureDir: v['capture-dir'] as string,
    maxSizeBytes: v['capture-max-size-bytes'] as number,
    rotationSeconds: v['capture-rotation-seconds'] as number,
    maxFiles: v['capture-max-files'] as number,
    tcpdump: v.tcpdump as string,
    authAudience: v['auth-audience'] as string,
    clientCaFile,
    gatewayClientNames,
    resyncMs: (v['resync-seconds'] as number) * 1000,
    finishedRetentionMs: (v['finished-retention-seconds'] as number) * 1000,
    maxWorkers: v['max-capture-workers'] as number,
    cniResultsDir: v['cni-results-dir'] as string,
    statusIntervalMs: v['status-interval-ms'] as number,
    counterIntervalMs: (v['report-counters-interval-seconds'] as number) * 1000,
    apiTimeoutMs: (v['api-timeout-seconds'] as number) * 1000,
    pinTtlMs: (v['pin-ttl-seconds'] as number) * 1000,
    maxPins: v['max-pins'] as number,
  };
}
