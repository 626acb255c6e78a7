// kubectl pcap get / list / describe: captures and their per-node state, from the capture's
// status (folded by the gateway's status aggregator from every node's report).
import { capturesPath, CAPTURE_STATES, summarizeStates, type PacketCapture } from '../../kube/packetcapture.js';
import { KubeApiError } from '../../kube/client.js';
import { exportsPath, type PacketCaptureExport } from '../../export/packetcapture-export.js';
import { kubeFailure, readCapture } from '../answers.js';
import { formatAge, formatBytes } from '../durations.js';
import { describeRule } from '../filter-flags.js';
import type { CommandSpec, Invocation } from '../invocation.js';
import { outputFormat, printObjects, table } from '../output.js';
import { PluginUsageError } from '../plugin-error.js';

/** Where the capture is in its life, from its spec alone (the nodes say the rest). */
function phase(pc: PacketCapture, now: number): string {
  const start = pc.spec?.startTime ? Date.parse(pc.spec.startTime) : undefined;
  const end = pc.spec?.endTime ? Date.parse(pc.spec.endTime) : undefined;
  if (end !== undefined && end <= now) return 'Ended';
  if (start !== undefined && start > now) return 'Scheduled';
  return 'Running';
}

function nodesColumn(pc: PacketCapture): string {
  const files = pc.status?.files ?? [];
  return files.length ? summarizeStates(files) : '<none>';
}

function sum(pc: PacketCapture, key: 'packets' | 'bytes' | 'kernelDrops'): number {
  return (pc.status?.files ?? []).reduce((a, f) => a + (f[key] ?? 0), 0);
}

function rows(items: PacketCapture[], wide: boolean, allNamespaces: boolean, now: number): string {
  const header = [...(allNamespaces ? ['NAMESPACE'] : []), 'NAME', 'NODES', 'PHASE', 'AGE', ...(wide ? ['SELECTOR', 'FILTERS', 'PACKETS', 'BYTES', 'DROPS', 'START', 'END'] : [])];
  const body = items.map((pc) => [
    ...(allNamespaces ? [pc.metadata.namespace] : []),
    pc.metadata.name,
    nodesColumn(pc),
    phase(pc, now),
    pc.metadata.creationTimestamp ? formatAge(now - Date.parse(pc.metadata.creationTimestamp)) : '<unknown>',
    ...(wide ? [
      pc.spec?.selector || 'all()',
      (pc.spec?.filters ?? []).map(describeRule).join(' ') || '<all traffic>',
      String(sum(pc, 'packets')),
      formatBytes(sum(pc, 'bytes')),
      String(sum(pc, 'kernelDrops')),
      pc.spec?.startTime ?? '<created>',
      pc.spec?.endTime ?? '<none>',
    ] : []),
  ]);
  return table(header, body);
}

async function listCaptures(inv: Invocation): Promise<{ items: PacketCapture[]; allNamespaces: boolean; namespace: string }> {
  const ctx = await inv.context();
  const allNamespaces = inv.boolean('all-namespaces');
  if (allNamespaces && inv.string('namespace')) throw new PluginUsageError('give either -n or -A, not both');
  try {
    const list = await ctx.kube.request<{ items: PacketCapture[] }>({ path: capturesPath(allNamespaces ? undefined : ctx.namespace) });
    return { items: list.items.sort((a, b) => `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`)), allNamespaces, namespace: ctx.namespace };
  } catch (err) {
    return await kubeFailure(ctx, err, 'list', { namespace: allNamespaces ? undefined : ctx.namespace });
  }
}

async function show(inv: Invocation): Promise<number> {
  const format = outputFormat(inv.string('output'));
  const now = Date.now();
  if (inv.name) {
    if (inv.boolean('all-namespaces')) throw new PluginUsageError('-A lists captures; give a NAME with -n instead');
    const { ctx, target } = await inv.captureTarget();
    const pc = await readCapture(ctx, target);
    if (format === 'yaml' || format === 'json') printObjects(inv.stdout, format, [pc], true);
    else {
      inv.stdout.write(rows([pc], format === 'wide', false, now));
      await showExports(inv, target.namespace, target.name, false, now);
    }
    return 0;
  }
  const { items, allNamespaces, namespace } = await listCaptures(inv);
  if (format === 'yaml' || format === 'json') printObjects(inv.stdout, format, items, false);
  else if (items.length === 0) inv.stderr.write(allNamespaces ? 'No PacketCaptures found.\n' : `No PacketCaptures found in ${namespace} namespace.\n`);
  else inv.stdout.write(rows(items, format === 'wide', allNamespaces, now));
  if (format !== 'yaml' && format !== 'json') await showExports(inv, allNamespaces ? undefined : namespace, undefined, allNamespaces, now);
  return 0;
}

/**
 * The exports beside the captures (docs/export.md): a second table, when there are any. A
 * cluster without the export CRD, or a user who may not list exports, sees the captures alone.
 */
async function showExports(inv: Invocation, namespace: string | undefined, capture: string | undefined, allNamespaces: boolean, now: number): Promise<void> {
  const ctx = await inv.context();
  let items: PacketCaptureExport[];
  try {
    items = (await ctx.kube.request<{ items: PacketCaptureExport[] }>({ path: exportsPath(namespace) })).items;
  } catch (err) {
    if (err instanceof KubeApiError && (err.status === 403 || err.status === 404)) return;
    throw err;
  }
  items = items.filter((e) => capture === undefined || e.spec?.captureName === capture).sort((a, b) => `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`));
  if (items.length === 0) return;
  inv.stdout.write('\n');
  inv.stdout.write(table(
    [...(allNamespaces ? ['NAMESPACE'] : []), 'EXPORT', 'CAPTURE', 'FORMAT', 'WHEN', 'PHASE', 'OBJECTS', 'BYTES', 'DESTINATION', 'AGE'],
    items.map((e) => [
      ...(allNamespaces ? [e.metadata.namespace] : []),
      e.metadata.name,
      e.spec?.captureName ?? '',
      e.spec?.format ?? 'zip',
      e.spec?.when ?? 'OnFinish',
      e.status?.phase ?? 'Pending',
      String(e.status?.objectCount ?? 0),
      formatBytes(e.status?.bytes ?? 0),
      e.status?.destination ?? `s3://${e.spec?.destination?.s3?.bucket ?? '?'}/`,
      e.metadata.creationTimestamp ? formatAge(now - Date.parse(e.metadata.creationTimestamp)) : '<unknown>',
    ]),
  ));
}

const listFlags = {
  'all-namespaces': { type: 'boolean' as const, short: 'A', help: 'Captures of every namespace.' },
  output: { type: 'string' as const, short: 'o', metavar: 'yaml|json|wide', help: 'Output format.' },
};

export const getCommand: CommandSpec = {
  usage: 'get [NAME] [-A] [-o yaml|json|wide]',
  short: 'Show captures with their nodes\' states (one, or all of the namespace).',
  long: 'Show captures: NODES counts the nodes in each state (Scheduled, WaitingForTraffic, Capturing, Finished, Error); PHASE is where the capture is in its time window. Their exports (kubectl pcap export) follow in a second table.',
  examples: ['kubectl pcap get -n storefront', 'kubectl pcap get dns -n storefront -o yaml', 'kubectl pcap get -A -o wide'],
  takes: 'optional',
  flags: listFlags,
  run: show,
};

export const listCommand: CommandSpec = {
  ...getCommand,
  usage: 'list [-A] [-o yaml|json|wide]',
  short: 'List the captures with per-state node counts.',
  examples: ['kubectl pcap list -A'],
  takes: 'none',
};

export const describeCommand: CommandSpec = {
  usage: 'describe NAME',
  short: 'Show a capture in detail: per node its state, pods, packets, bytes, drops, files.',
  examples: ['kubectl pcap describe dns -n storefront'],
  takes: 'name',
  flags: {},
  async run(inv) {
    const { ctx, target } = await inv.captureTarget();
    const pc = await readCapture(ctx, target);
    const now = Date.now();
    const spec = pc.spec ?? {};
    const lines = [
      `Name:         ${pc.metadata.name}`,
      `Namespace:    ${pc.metadata.namespace}`,
      `Created:      ${pc.metadata.creationTimestamp ?? '<unknown>'}${pc.metadata.creationTimestamp ? ` (${formatAge(now - Date.parse(pc.metadata.creationTimestamp))} ago)` : ''}`,
      `Selector:     ${spec.selector || 'all()'}`,
      `Filters:      ${(spec.filters ?? []).map(describeRule).join(' ') || '<all traffic>'}`,
      `Start:        ${spec.startTime ?? '<when created>'}`,
      `End:          ${spec.endTime ?? '<none: until stopped>'}`,
      `Phase:        ${phase(pc, now)}`,
      ...(spec.snapLen !== undefined ? [`Snap length:  ${spec.snapLen} bytes`] : []),
      ...(spec.maxPackets !== undefined ? [`Max packets:  ${spec.maxPackets} per node`] : []),
      ...(spec.maxBytes !== undefined ? [`Max bytes:    ${spec.maxBytes} per node`] : []),
      `Nodes:        ${nodesColumn(pc)}`,
      '',
    ];
    inv.stdout.write(lines.join('\n'));
    const files = [...(pc.status?.files ?? [])].sort((a, b) => a.node.localeCompare(b.node));
    if (files.length === 0) {
      inv.stdout.write('No node has reported this capture yet.\n');
      return 0;
    }
    const order = (s: string | undefined): number => (s ? CAPTURE_STATES.indexOf(s as (typeof CAPTURE_STATES)[number]) : 99);
    files.sort((a, b) => order(a.state) - order(b.state) || a.node.localeCompare(b.node));
    inv.stdout.write(table(
      ['NODE', 'STATE', 'PODS', 'PACKETS', 'BYTES', 'DROPS', 'FILES', 'MESSAGE'],
      files.map((f) => [f.node, f.state ?? 'Unknown', String(f.pods ?? 0), String(f.packets ?? 0), formatBytes(f.bytes ?? 0), String(f.kernelDrops ?? 0), String(f.fileNames?.length ?? 0), f.message ?? '']),
    ));
    return 0;
  },
};
