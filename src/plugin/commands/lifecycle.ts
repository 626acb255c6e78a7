// kubectl pcap stop / delete / clean: end a capture (files kept), delete the resource, or
// delete its files from the nodes through the gateway.
import { capturesPath } from '../../kube/packetcapture.js';
import { gatewayFailure, kubeFailure, readCapture } from '../answers.js';
import type { CommandSpec } from '../invocation.js';
import { FIELD_MANAGER } from './create.js';

export const stopCommand: CommandSpec = {
  usage: 'stop NAME',
  short: 'Stop a capture now (sets spec.endTime to now); its files are kept.',
  examples: ['kubectl pcap stop dns -n storefront && kubectl pcap wait dns -n storefront --for=finished'],
  takes: 'name',
  flags: {},
  async run(inv) {
    const { ctx, target } = await inv.captureTarget();
    const pc = await readCapture(ctx, target);
    const end = pc.spec?.endTime ? Date.parse(pc.spec.endTime) : undefined;
    if (end !== undefined && end <= Date.now()) {
      inv.stdout.write(`packetcapture.projectcalico.org/${target.name} already stopped at ${pc.spec!.endTime}\n`);
      return 0;
    }
    try {
      // A merge patch with the resourceVersion read: a concurrent change is a conflict, not lost.
      await ctx.kube.request({
        method: 'PATCH',
        path: `${capturesPath(target.namespace)}/${encodeURIComponent(target.name)}`,
        query: { fieldManager: FIELD_MANAGER },
        contentType: 'application/merge-patch+json',
        body: { metadata: { resourceVersion: pc.metadata.resourceVersion }, spec: { endTime: new Date().toISOString() } },
      });
    } catch (err) {
      return await kubeFailure(ctx, err, 'patch', target);
    }
    inv.stdout.write(`packetcapture.projectcalico.org/${target.name} stopped (files kept: kubectl pcap download ${target.name} -n ${target.namespace})\n`);
    return 0;
  },
};

export const deleteCommand: CommandSpec = {
  usage: 'delete NAME',
  short: 'Delete a capture; the agents then delete its files too (download them first).',
  examples: ['kubectl pcap download dns -n storefront && kubectl pcap delete dns -n storefront'],
  takes: 'name',
  flags: {},
  async run(inv) {
    const { ctx, target } = await inv.captureTarget();
    try {
      await ctx.kube.request({ method: 'DELETE', path: `${capturesPath(target.namespace)}/${encodeURIComponent(target.name)}` });
    } catch (err) {
      return await kubeFailure(ctx, err, 'delete', target);
    }
    inv.stdout.write(`packetcapture.projectcalico.org "${target.name}" deleted (the agents delete its files)\n`);
    return 0;
  },
};

export const cleanCommand: CommandSpec = {
  usage: 'clean NAME',
  short: 'Delete a stopped capture\'s files from every node (through the gateway).',
  long: 'Delete the capture\'s files from every node. The capture must have stopped on every node (kubectl pcap stop). Needs "delete" on packetcaptures/files (rbac-examples/files-delete-role.yaml).',
  examples: ['kubectl pcap stop dns -n storefront && kubectl pcap wait dns -n storefront --for=finished && kubectl pcap clean dns -n storefront'],
  takes: 'name',
  flags: {},
  async run(inv) {
    const { ctx, target } = await inv.captureTarget();
    const gateway = await inv.gateway();
    const res = await gateway.request('DELETE', `/files/${encodeURIComponent(target.namespace)}/${encodeURIComponent(target.name)}`, inv.signal);
    if (res.status !== 200) throw await gatewayFailure(ctx, res, 'delete', target);
    const body = (await res.body.json()) as { removed?: { node: string; file: string }[] };
    const removed = body.removed ?? [];
    const nodes = new Set(removed.map((r) => r.node));
    inv.stdout.write(`removed ${removed.length} file${removed.length === 1 ? '' : 's'} of ${target.name} from ${nodes.size} node${nodes.size === 1 ? '' : 's'}\n`);
    return 0;
  },
};
