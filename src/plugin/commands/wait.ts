// kubectl pcap wait: until the capture is capturing or finished, as its nodes report it.
//
// "capturing" means packets are being written somewhere and nothing is broken: at least one
// node is Capturing (or has already Finished with files, e.g. after spec.maxPackets), and no
// node is in Error. Nodes whose pods see no matching traffic stay WaitingForTraffic, often
// for good (a selector that matches pods on 3 nodes of 50): requiring every node would wait
// for ever, so that is --all-nodes. "finished" means every node that took the capture up is
// Finished. A node in Error ends the wait at once with its message (exit 1).
import { getPacketCapture, summarizeStates, type NodeCaptureStatus, type PacketCapture } from '../../kube/packetcapture.js';
import { kubeFailure, noSuchCapture } from '../answers.js';
import { parseDuration, pause } from '../durations.js';
import type { CommandSpec } from '../invocation.js';
import { PluginError, PluginUsageError } from '../plugin-error.js';

export type WaitFor = 'capturing' | 'finished';

export type WaitVerdict = { done: true } | { done: false; failed?: string };

const POLL_MS = 500;

const captured = (f: NodeCaptureStatus): boolean => f.state === 'Capturing' || (f.state === 'Finished' && (f.fileNames?.length ?? 0) > 0);

/** Whether the capture is there yet (a pure function of its status, exported for tests). */
export function waitVerdict(pc: PacketCapture, forWhat: WaitFor, allNodes: boolean): WaitVerdict {
  const files = pc.status?.files ?? [];
  const errors = files.filter((f) => f.state === 'Error');
  if (errors.length) return { done: false, failed: `${errors.length === 1 ? 'node' : 'nodes'} in Error: ${errors.map((f) => `${f.node}: ${f.message ?? 'no message'}`).join('; ')}` };
  if (files.length === 0) return { done: false };
  if (forWhat === 'finished') return files.every((f) => f.state === 'Finished') ? { done: true } : { done: false };
  if (allNodes ? files.every(captured) : files.some(captured)) return { done: true };
  if (files.every((f) => f.state === 'Finished')) return { done: false, failed: 'every node Finished without capturing a packet' };
  return { done: false };
}

export const waitCommand: CommandSpec = {
  usage: 'wait NAME [--for=capturing|finished] [--all-nodes] [--timeout=D]',
  short: 'Wait until a capture is capturing (default) or finished.',
  long: [
    'Wait until a capture is capturing or finished, as its nodes report it.',
    '',
    '  --for=capturing  at least one node is Capturing (or already Finished with files) and no node is in Error;',
    '                   nodes without matching traffic may stay WaitingForTraffic. --all-nodes requires every node.',
    '  --for=finished   every node that took the capture up is Finished.',
    '',
    'A node in Error ends the wait at once (exit 1, with its message); so does the timeout (exit 1).',
  ].join('\n'),
  examples: ['kubectl pcap wait dns -n storefront', 'kubectl pcap wait dns -n storefront --for=finished --timeout=15m'],
  takes: 'name',
  flags: {
    for: { type: 'string', metavar: 'capturing|finished', help: 'The condition (default capturing).' },
    'all-nodes': { type: 'boolean', help: 'With --for=capturing: every node must be capturing.' },
    timeout: { type: 'string', metavar: 'D', help: 'Give up after this long, e.g. 30s, 5m (default 30s).' },
  },
  async run(inv) {
    const forWhat = (inv.string('for') ?? 'capturing').replace(/^condition=/, '');
    if (forWhat !== 'capturing' && forWhat !== 'finished') throw new PluginUsageError(`--for must be capturing or finished, not "${forWhat}"`);
    const timeoutMs = parseDuration('--timeout', inv.string('timeout') ?? '30s');
    const { ctx, target } = await inv.captureTarget();
    const deadline = Date.now() + timeoutMs;
    let last: PacketCapture | undefined;
    for (;;) {
      let pc: PacketCapture | undefined;
      try {
        pc = await getPacketCapture(ctx.kube, target.namespace, target.name);
      } catch (err) {
        return await kubeFailure(ctx, err, 'get', target);
      }
      if (!pc) throw last ? new PluginError(`the PacketCapture ${target.name} in namespace ${target.namespace} was deleted while waiting`) : noSuchCapture(target);
      last = pc;
      const verdict = waitVerdict(pc, forWhat, inv.boolean('all-nodes'));
      const nodes = summarizeStates(pc.status?.files ?? []) || 'no node has reported it';
      if (verdict.done) {
        inv.stdout.write(`packetcapture.projectcalico.org/${target.name} ${forWhat} (${nodes})\n`);
        return 0;
      }
      if (verdict.failed) throw new PluginError(`${target.name} will not be ${forWhat}: ${verdict.failed}`);
      if (Date.now() >= deadline) throw new PluginError(`timed out after ${inv.string('timeout') ?? '30s'} waiting for ${target.name} to be ${forWhat}: ${nodes}`);
      await pause(Math.min(POLL_MS, Math.max(0, deadline - Date.now())), inv.signal);
      if (inv.signal.aborted) return 130;
    }
  },
};
