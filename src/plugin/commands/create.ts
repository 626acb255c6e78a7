// kubectl pcap create: a PacketCapture from flags, by server-side apply (field manager
// kubectl-pcap), checked locally first with the agents' own parsers so that a mistake is
// pointed at before anything reaches the cluster.
import { KubeApiError } from '../../kube/client.js';
import type { PacketCapture, PacketCaptureSpec } from '../../kube/packetcapture.js';
import { capturesPath, captureLimitSpec, CaptureSpecError, getPacketCapture, PACKETCAPTURE } from '../../kube/packetcapture.js';
import { parseSelector, SelectorError } from '../../selector/selector.js';
import { kubeFailure } from '../answers.js';
import { parseDuration, parseTime } from '../durations.js';
import { filterRule, FilterFlagError } from '../filter-flags.js';
import type { CommandSpec } from '../invocation.js';
import type { KubeContext } from '../kube-context.js';
import { calicoFromLabelSelector, LabelSelectorError } from '../label-selector.js';
import { outputFormat, printObjects } from '../output.js';
import { PluginError, PluginUsageError } from '../plugin-error.js';

export const FIELD_MANAGER = 'kubectl-pcap';

function positiveInteger(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text)) throw new PluginUsageError(`--${flag} must be a whole number, not "${text}"`);
  return Number(text);
}

/** The spec the flags describe (exported for tests of the translation). */
export function specFromFlags(f: { selector?: string; labels?: string; filters: string[]; start?: string; end?: string; duration?: string; snapLen?: string; maxPackets?: string; maxBytes?: string }, now = Date.now()): PacketCaptureSpec {
  const spec: PacketCaptureSpec = {};
  if (f.selector !== undefined && f.labels !== undefined) throw new PluginUsageError('give either --selector (Calico syntax) or -l (Kubernetes syntax), not both');
  try {
    if (f.selector !== undefined) spec.selector = parseSelector(f.selector).toString();
    else if (f.labels !== undefined) spec.selector = calicoFromLabelSelector(f.labels);
  } catch (err) {
    if (err instanceof SelectorError) throw new PluginUsageError(`--selector: ${err.message}`);
    if (err instanceof LabelSelectorError) throw new PluginUsageError(`-l: ${err.message}`);
    throw err;
  }
  try {
    if (f.filters.length) spec.filters = f.filters.map(filterRule);
  } catch (err) {
    if (err instanceof FilterFlagError) throw new PluginUsageError(err.message);
    throw err;
  }
  const start = f.start !== undefined ? parseTime('--start', f.start, now) : undefined;
  if (start) spec.startTime = start.toISOString();
  if (f.duration !== undefined && f.end !== undefined) throw new PluginUsageError('give either --duration or --end, not both');
  if (f.duration !== undefined) {
    const ms = parseDuration('--duration', f.duration);
    if (ms <= 0) throw new PluginUsageError('--duration must be longer than 0');
    spec.endTime = new Date((start?.getTime() ?? now) + ms).toISOString();
  }
  if (f.end !== undefined) spec.endTime = parseTime('--end', f.end, now).toISOString();
  if (spec.endTime && Date.parse(spec.endTime) <= (start?.getTime() ?? now)) throw new PluginUsageError(`the capture would end (${spec.endTime}) before it starts`);
  const snapLen = positiveInteger('snaplen', f.snapLen);
  const maxPackets = positiveInteger('max-packets', f.maxPackets);
  const maxBytes = positiveInteger('max-bytes', f.maxBytes);
  if (snapLen !== undefined) spec.snapLen = snapLen;
  if (maxPackets !== undefined) spec.maxPackets = maxPackets;
  if (maxBytes !== undefined) spec.maxBytes = maxBytes;
  try {
    captureLimitSpec(spec);
  } catch (err) {
    if (err instanceof CaptureSpecError) throw new PluginUsageError(err.message.replace(/^spec\.snapLen/, '--snaplen').replace(/^spec\.maxPackets/, '--max-packets').replace(/^spec\.maxBytes/, '--max-bytes'));
    throw err;
  }
  return spec;
}

/**
 * Creates or updates the capture by server-side apply (field manager kubectl-pcap); whether
 * it existed before. Failures are answers (PluginError).
 */
export async function applyCapture(ctx: KubeContext, target: { namespace: string; name: string }, spec: PacketCaptureSpec, force: boolean): Promise<{ existed: boolean; applied: PacketCapture }> {
  const manifest = { apiVersion: PACKETCAPTURE.apiVersion, kind: PACKETCAPTURE.kind, metadata: target, spec };
  try {
    const existed = (await getPacketCapture(ctx.kube, target.namespace, target.name)) !== undefined;
    const applied = await ctx.kube.request<PacketCapture>({
      method: 'PATCH',
      path: `${capturesPath(target.namespace)}/${encodeURIComponent(target.name)}`,
      query: { fieldManager: FIELD_MANAGER, force: force || undefined },
      contentType: 'application/apply-patch+yaml',
      body: manifest,
    });
    return { existed, applied };
  } catch (err) {
    if (err instanceof KubeApiError && err.status === 409) {
      throw new PluginError(`${err.body.message ?? 'conflict'}\nAnother field manager set these fields of ${target.name}; --force-conflicts takes them over.`);
    }
    return await kubeFailure(ctx, err, 'create', target);
  }
}

export const createCommand: CommandSpec = {
  usage: 'create NAME [--selector EXPR | -l LABELS] [--filter PROTO[:PORTS]]... [--start TIME] [--duration D | --end TIME] [flags]',
  short: 'Create (or update) a capture of the pods a selector picks.',
  long: 'Create a PacketCapture by server-side apply (running it again with other flags updates it). The selector is Calico\'s (--selector) or Kubernetes\' label syntax (-l), checked here first; no selector captures every pod of the namespace.',
  examples: [
    'kubectl pcap create dns -n storefront --selector \'app == "logging"\' --filter udp:53',
    'kubectl pcap create web -n shop -l app=web,tier!=canary --filter tcp:80-90 --filter tcp:443 --duration 10m',
    'kubectl pcap create headers -n shop -l app=checkout --snaplen 128 --max-packets 1000000',
    'kubectl pcap create dns -n storefront -l app=logging --dry-run -o yaml   # print, do not apply',
  ],
  takes: 'name',
  flags: {
    selector: { type: 'string', metavar: 'EXPR', help: 'Calico selector, e.g. \'app == "web" && tier != "db"\'.' },
    labels: { type: 'string', short: 'l', metavar: 'LABELS', help: 'Kubernetes label selector, e.g. app=web,tier!=db, translated to Calico\'s.' },
    filter: { type: 'strings', metavar: 'PROTO[:PORTS]', help: 'Capture only this: udp:53, tcp:80-90,443, icmp, :8080 (repeatable; rules are ORed).' },
    start: { type: 'string', metavar: 'TIME', help: 'Start at this RFC 3339 time (default now).' },
    duration: { type: 'string', metavar: 'D', help: 'Stop after this long from the start, e.g. 10m, 1h30m.' },
    end: { type: 'string', metavar: 'TIME', help: 'Stop at this RFC 3339 time.' },
    snaplen: { type: 'string', metavar: 'BYTES', help: 'Keep this many bytes of each packet (kube-pcap extension).' },
    'max-packets': { type: 'string', metavar: 'N', help: 'Finish on a node after N packets (kube-pcap extension).' },
    'max-bytes': { type: 'string', metavar: 'N', help: 'Finish on a node after N bytes (kube-pcap extension).' },
    'dry-run': { type: 'boolean', help: 'Print the resource instead of applying it.' },
    'force-conflicts': { type: 'boolean', help: 'Take over fields another manager (kubectl apply, a controller) set, as kubectl apply --server-side --force-conflicts does.' },
    output: { type: 'string', short: 'o', metavar: 'yaml|json', help: 'Print the applied resource in this format.' },
  },
  async run(inv) {
    const format = outputFormat(inv.string('output'));
    if (format === 'wide') throw new PluginUsageError('create prints -o yaml or -o json');
    const spec = specFromFlags({
      selector: inv.string('selector'), labels: inv.string('labels'), filters: inv.list('filter'),
      start: inv.string('start'), end: inv.string('end'), duration: inv.string('duration'),
      snapLen: inv.string('snaplen'), maxPackets: inv.string('max-packets'), maxBytes: inv.string('max-bytes'),
    });
    const name = inv.name!;
    if (inv.boolean('dry-run')) {
      // Like kubectl's client dry run: -n alone needs no cluster.
      const namespace = inv.string('namespace') ?? (await inv.context()).namespace;
      const manifest = { apiVersion: PACKETCAPTURE.apiVersion, kind: PACKETCAPTURE.kind, metadata: { name, namespace }, spec };
      printObjects(inv.stdout, format === 'json' ? 'json' : 'yaml', [manifest], true);
      return 0;
    }
    const { ctx, target } = await inv.captureTarget();
    const { existed, applied } = await applyCapture(ctx, target, spec, inv.boolean('force-conflicts'));
    if (format === 'yaml' || format === 'json') printObjects(inv.stdout, format, [applied], true);
    else inv.stdout.write(`packetcapture.projectcalico.org/${name} ${existed ? 'configured' : 'created'}\n`);
    return 0;
  },
};
