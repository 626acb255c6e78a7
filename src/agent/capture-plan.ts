// The agent's desired state, as a pure function (docs/agent.md, "Desired state"): from
// what is observed about one capture — its spec, this node's pods, the verdicts of the
// filter check and of the interface lookups (read from their caches, never awaited), the
// clock and the node's budgets — which capture workers should run, and what this node's
// status entry says. No processes, no API server, no disk: the actuator does those.
import { captureLimitSpec, CaptureSpecError, type CaptureLimitSpec, type CaptureState, type NodeCaptureStatus, type PacketCaptureSpec } from '../kube/packetcapture.js';
import { REPORT_LIMITS } from '../kube/node-report.js';
import { parseSelector, SelectorError } from '../selector/selector.js';
import { FilterError, filtersToBpf } from '../filters/bpf.js';
import { limitReached, type Written } from './capture-tally.js';
import type { FilterVerdict } from './filter-checks.js';
import type { InterfaceVerdict } from './interface-cache.js';
import type { PodRef } from './pod-interface.js';

export interface CaptureView {
  namespace: string;
  name: string;
  uid: string;
  spec: PacketCaptureSpec | undefined;
}

export interface PodView {
  namespace: string;
  name: string;
  uid: string;
  ip: string | undefined;
  /** Every IP of the pod (status.podIPs), `ip` first. */
  ips?: string[];
  labels: Record<string, string>;
  nodeName: string | undefined;
  hostNetwork: boolean;
  deleting: boolean;
  phase: string | undefined;
}

export interface NodeBudgetView {
  /** Workers that may still start on this node (--max-capture-workers minus running ones). */
  freeWorkerSlots: number;
  maxWorkers: number;
  /** Free bytes on the capture filesystem (NaN: unknown, not checked). */
  diskFree: number;
  /** Of diskFree, what running workers may still write ((captureMaxFiles + 1) x (captureMaxSizeBytes + 4 KiB) each) and what downloads hold pinned. */
  diskReserved: number;
  /** What one more worker reserves. */
  perWorkerBytes: number;
  captureDir: string;
}

export interface PlanInputs {
  capture: CaptureView;
  nodeName: string;
  pods: Iterable<PodView>;
  filter: (expression: string) => FilterVerdict;
  iface: (pod: PodRef) => InterfaceVerdict;
  now: number;
  /** Keys of this capture's workers that run now (kept whatever the budget says). */
  running: ReadonlySet<string>;
  budget: NodeBudgetView;
  /** What the capture has written on this node so far (capture-tally.ts), for its limits. */
  written: Written;
}

export interface WorkerPlan {
  /** "<pod uid>/<iface>" */
  key: string;
  pod: PodRef;
  iface: string;
  /** The evidence the interface was found by. */
  via: 'route' | 'cni-result';
  bpf: string;
  /** tcpdump's -s; undefined: the whole packet. */
  snapLen: number | undefined;
}

export type CapturePhase = 'Invalid' | 'Scheduled' | 'Active' | 'Finished';

export interface CapturePlan {
  phase: CapturePhase;
  /** Why the capture cannot run on this node at all (spec error, tcpdump missing). */
  error: string | undefined;
  workers: WorkerPlan[];
  /** Workers the node's budget refused, and why. */
  refused: string | undefined;
  /** Per-pod problems (no interface yet, ...), and a pending filter check. */
  problems: string[];
  matchedPods: PodRef[];
  /**
   * Selected pods that run in the node's own network namespace (hostNetwork): their packets
   * cannot be told from the node's and every other host-network pod's, so they are never
   * captured; the node's entry says so (docs/agent.md, "Host-network pods").
   */
  hostNetworkPods: string[];
  /**
   * A filter check or an interface lookup is running right now: the plan will change as soon
   * as it answers, so its status is not worth writing yet (it would say WaitingForTraffic
   * with no tcpdump running).
   */
  settling: boolean;
  /** The next moment the plan changes by the clock alone (start or end time). */
  wakeAt: number | undefined;
  bpf: string | undefined;
  /** The spec's snapLen, maxPackets and maxBytes (undefined when the spec is invalid). */
  limits: CaptureLimitSpec | undefined;
  /** Why the capture finished on this node before its end time (a limit reached). */
  finishedBy: string | undefined;
}

export function workerKey(podUid: string, iface: string): string {
  return `${podUid}/${iface}`;
}

function parseTime(s: string | undefined): number | undefined {
  if (!s) return undefined;
  const t = Date.parse(s);
  return Number.isNaN(t) ? undefined : t;
}

/**
 * Pods of this node that the selector picks in the capture's namespace, sorted by name;
 * host-network pods apart (never captured: see CapturePlan.hostNetworkPods).
 */
export function selectedPods(capture: CaptureView, nodeName: string, pods: Iterable<PodView>, matches: (labels: Record<string, string>) => boolean): { pods: PodView[]; hostNetwork: PodView[] } {
  const out: PodView[] = [];
  const host: PodView[] = [];
  for (const pod of pods) {
    if (pod.namespace !== capture.namespace || pod.nodeName !== nodeName) continue;
    if (pod.deleting || pod.phase === 'Succeeded' || pod.phase === 'Failed') continue;
    if (matches(pod.labels)) (pod.hostNetwork ? host : out).push(pod);
  }
  const byName = (a: PodView, b: PodView): number => a.name.localeCompare(b.name);
  return { pods: out.sort(byName), hostNetwork: host.sort(byName) };
}

/** What the node's entry says of the selected host-network pods. */
export function hostNetworkMessage(pods: string[]): string {
  return `not captured: ${pods.join(', ')} ${pods.length === 1 ? 'uses' : 'use'} the node's own network (hostNetwork: true), whose packets cannot be told from the node's and other host-network pods', and kube-pcap never captures the node's traffic for a namespace's capture`;
}

export function planCapture(i: PlanInputs): CapturePlan {
  const plan: CapturePlan = { phase: 'Active', error: undefined, workers: [], refused: undefined, problems: [], matchedPods: [], hostNetworkPods: [], settling: false, wakeAt: undefined, bpf: undefined, limits: undefined, finishedBy: undefined };
  const spec = i.capture.spec;
  let selector: ReturnType<typeof parseSelector>;
  let limits: CaptureLimitSpec;
  try {
    selector = parseSelector(spec?.selector ?? 'all()');
    plan.bpf = filtersToBpf(spec?.filters);
    limits = captureLimitSpec(spec);
  } catch (err) {
    if (!(err instanceof SelectorError || err instanceof FilterError || err instanceof CaptureSpecError)) throw err;
    return { ...plan, phase: 'Invalid', error: err.message.split('\n')[0] };
  }
  plan.limits = limits;
  const verdict = i.filter(plan.bpf);
  if (verdict.kind === 'invalid') return { ...plan, phase: 'Invalid', error: verdict.message };

  const selected = selectedPods(i.capture, i.nodeName, i.pods, (l) => selector.matches(l));
  plan.hostNetworkPods = selected.hostNetwork.map((p) => p.name);
  const pods = selected.pods;
  const refs = pods.filter((p) => p.ip).map((p) => ({ namespace: p.namespace, name: p.name, uid: p.uid, ip: p.ip!, ips: p.ips ?? [p.ip!] }));
  plan.matchedPods = refs;

  const start = parseTime(spec?.startTime);
  const end = parseTime(spec?.endTime);
  if (end !== undefined && i.now >= end) return { ...plan, phase: 'Finished' };
  const reached = limitReached(limits, i.written);
  if (reached) {
    const what = reached === 'maxPackets' ? `${i.written.packets} packets` : `${i.written.bytes} bytes`;
    return { ...plan, phase: 'Finished', finishedBy: `spec.${reached} (${limits[reached]}) reached on node ${i.nodeName}: ${what} written` };
  }
  if (start !== undefined && i.now < start) return { ...plan, phase: 'Scheduled', wakeAt: start };
  plan.wakeAt = end;
  if (verdict.kind === 'pending') {
    // No verdict on the filter yet: nothing starts, and nothing is called invalid either.
    if (verdict.missing) plan.error = verdict.message;
    else if (verdict.message) plan.problems.push(`checking the filter: ${verdict.message}`);
    else plan.settling = true;
    return plan;
  }

  const wanted: WorkerPlan[] = [];
  for (const pod of refs) {
    const v = i.iface(pod);
    if (v.kind === 'found') wanted.push({ key: workerKey(pod.uid, v.iface), pod, iface: v.iface, via: v.via, bpf: plan.bpf, snapLen: limits.snapLen });
    else if (v.kind === 'failed') plan.problems.push(`pod ${pod.name}: ${v.error}`);
    else plan.settling = true;
  }

  // Running workers stay; new ones start while the node's budgets allow, in a stable order,
  // so the same observation always admits the same workers.
  let slots = i.budget.freeWorkerSlots;
  let disk = i.budget.diskFree - i.budget.diskReserved;
  const refusedPods: string[] = [];
  let refusal: string | undefined;
  for (const w of wanted) {
    if (i.running.has(w.key)) {
      plan.workers.push(w);
      continue;
    }
    if (slots <= 0) {
      refusal ??= `node budget: ${i.budget.maxWorkers} capture workers (pod interfaces) already run on node ${i.nodeName}, the most --max-capture-workers allows`;
      refusedPods.push(w.pod.name);
      continue;
    }
    if (!Number.isNaN(disk) && disk < i.budget.perWorkerBytes) {
      refusal ??= `not enough disk space on node ${i.nodeName}: ${formatBytes(i.budget.diskFree)} free in ${i.budget.captureDir}, ${formatBytes(i.budget.diskReserved)} of it reserved by running captures and downloads' pinned files, a capture of one pod interface needs (captureMaxFiles + 2) x (captureMaxSizeBytes + 4 KiB for each file's source record) = ${formatBytes(i.budget.perWorkerBytes)}`;
      refusedPods.push(w.pod.name);
      continue;
    }
    slots--;
    if (!Number.isNaN(disk)) disk -= i.budget.perWorkerBytes;
    plan.workers.push(w);
  }
  if (refusal) plan.refused = `${refusal}; not captured: ${refusedPods.join(', ')}`;
  return plan;
}

/** What the node's entry says about one running (or given-up) worker. */
export interface WorkerView {
  pod: string;
  iface: string;
  packets: number;
  bytes: number;
  kernelDrops: number;
  /** Set while the worker is failing or has given up (disk full). */
  error: string | undefined;
}

export interface EntryInputs {
  nodeName: string;
  directory: string;
  plan: CapturePlan;
  workers: WorkerView[];
  /** Some file of this capture on this node ever held a packet. */
  sawTraffic: boolean;
  fileNames: string[];
  /** What the API server holds for this node now. */
  observed: NodeCaptureStatus | undefined;
  /** Packets and bytes written over the capture's life on this node (capture-tally.ts); else the running workers' sum. */
  written?: { packets: number; bytes: number };
}

/** This node's entry in status.files, or undefined when the node has nothing to say. */
export function nodeEntry(i: EntryInputs): NodeCaptureStatus | undefined {
  const { plan } = i;
  let packets = 0;
  let bytes = 0;
  let kernelDrops = 0;
  const workerErrors: string[] = [];
  for (const w of i.workers) {
    packets += w.packets;
    bytes += w.bytes;
    kernelDrops += w.kernelDrops;
    if (w.error) workerErrors.push(`${w.pod}/${w.iface}: ${w.error}`);
  }
  let state: CaptureState;
  let messages: string[];
  const fatal = plan.error ?? plan.refused;
  if (plan.phase === 'Invalid' || plan.error) {
    state = 'Error';
    messages = [plan.error!];
  } else if (plan.phase === 'Scheduled') {
    state = 'Scheduled';
    messages = [];
  } else if (plan.phase === 'Finished') {
    state = 'Finished';
    messages = plan.finishedBy ? [plan.finishedBy] : [];
  } else {
    const healthy = i.workers.some((w) => !w.error);
    // Only host-network pods selected here: nothing will ever be captured on this node.
    const onlyHostNetwork = plan.hostNetworkPods.length > 0 && plan.matchedPods.length === 0;
    if (plan.refused || onlyHostNetwork) state = 'Error';
    else if (i.workers.length > 0 && !healthy) state = 'Error';
    else state = i.sawTraffic ? 'Capturing' : 'WaitingForTraffic';
    messages = [...(plan.refused ? [plan.refused] : []), ...workerErrors, ...plan.problems];
    if (plan.hostNetworkPods.length > 0) messages.push(hostNetworkMessage(plan.hostNetworkPods));
    else if (plan.matchedPods.length === 0) messages.push(`no pod on node ${i.nodeName} matches the selector`);
  }
  const relevant = fatal !== undefined || plan.matchedPods.length > 0 || plan.hostNetworkPods.length > 0 || i.fileNames.length > 0 || i.workers.length > 0 || i.observed !== undefined;
  if (!relevant) return undefined;
  return {
    node: i.nodeName,
    directory: i.directory,
    // More names than a report holds: the last in sort order (each pod's newest rotations).
    fileNames: i.fileNames.length > REPORT_LIMITS.fileNames ? i.fileNames.slice(-REPORT_LIMITS.fileNames) : i.fileNames,
    state,
    ...(messages.length > 0 ? { message: messages.join('; ').slice(0, REPORT_LIMITS.messageLength) } : {}),
    pods: i.workers.filter((w) => !w.error).length,
    packets: i.written?.packets ?? packets,
    bytes: i.written?.bytes ?? bytes,
    kernelDrops,
  };
}

export function formatBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}
