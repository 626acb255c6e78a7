// `kube-pcap agent`: one per node. Captures the traffic of the pods on this node that
// PacketCaptures select, writes this node's reports of them, and serves the files to the gateway.
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Counter, Gauge, Registry } from 'prom-client';
import type { AgentConfig } from '../config/agent.js';
import { serveUntilSignal } from '../http/serve.js';
import { loadTls, withClientCa } from '../http/tls.js';
import { connect } from '../kube/config.js';
import { reportsPath, type NodeReport } from '../kube/node-report.js';
import { Reflector } from '../kube/reflector.js';
import { createLogger } from '../log/logger.js';
import { buildAgentApp } from './app.js';
import { CaptureSpecs } from './capture-specs.js';
import { CaptureStore } from './capture-store.js';
import { CaptureController, RUN_DIR, type ControllerMetrics, type Pod } from './capture-controller.js';
import { FilePins } from './file-pins.js';
import { ProcessRecords } from './leftover-tcpdumps.js';
import { CniAddresses } from './cni-addresses.js';
import { CniResultCache, HostInterfaceResolver } from './pod-interface.js';
import { RotationGate } from './rotation-gate.js';

function agentMetrics(registry: Registry): ControllerMetrics {
  const packets = new Counter({ name: 'kube_pcap_agent_packets_written_total', help: 'Packets written to pcap files, by capture.', labelNames: ['namespace', 'capture'], registers: [registry] });
  const bytes = new Counter({ name: 'kube_pcap_agent_bytes_written_total', help: 'Bytes of packets written to pcap files, by capture.', labelNames: ['namespace', 'capture'], registers: [registry] });
  const rotations = new Counter({ name: 'kube_pcap_agent_rotations_total', help: 'File rotations, by capture.', labelNames: ['namespace', 'capture'], registers: [registry] });
  const captures = new Gauge({ name: 'kube_pcap_agent_active_captures', help: 'Captures with at least one running capture on this node.', registers: [registry] });
  const workers = new Gauge({ name: 'kube_pcap_agent_capture_interfaces', help: 'Pod interfaces being captured on this node.', registers: [registry] });
  const drops = new Gauge({ name: 'kube_pcap_agent_kernel_drops', help: 'Packets the kernel dropped before tcpdump could read them, summed over running captures.', registers: [registry] });
  const diskFree = new Gauge({ name: 'kube_pcap_agent_disk_free_bytes', help: 'Free bytes on the capture directory\'s filesystem.', registers: [registry] });
  const filterChecks = new Counter({ name: 'kube_pcap_agent_filter_checks_total', help: 'tcpdump -d runs checking a capture\'s filter (cached by expression; resyncs add none).', registers: [registry] });
  const lookups = new Counter({ name: 'kube_pcap_agent_interface_lookups_total', help: 'Lookups of a pod\'s host interface (failed ones back off per pod).', registers: [registry] });
  return {
    filterCheck: () => filterChecks.inc(),
    interfaceLookup: () => lookups.inc(),
    packets: (namespace, capture, n, b) => {
      packets.inc({ namespace, capture }, n);
      bytes.inc({ namespace, capture }, b);
    },
    rotation: (namespace, capture) => rotations.inc({ namespace, capture }),
    observe: (s) => {
      captures.set(s.captures);
      workers.set(s.workers);
      drops.set(s.kernelDrops);
      if (!Number.isNaN(s.diskFreeBytes)) diskFree.set(s.diskFreeBytes);
    },
  };
}

export async function runAgent(config: AgentConfig): Promise<void> {
  const log = createLogger(config.logLevel, 'kube-pcap-agent').child({ node: config.nodeName });
  const kube = await connect(config.kubeconfig);
  await mkdir(config.captureDir, { recursive: true, mode: 0o700 });
  // tcpdumps an earlier agent left running, however it ended (leftover-tcpdumps.ts).
  const leftovers = await new ProcessRecords(join(config.captureDir, RUN_DIR)).endLeftovers();
  if (leftovers.length > 0) log.warn({ pids: leftovers }, 'ended the tcpdumps an earlier agent left running');
  // Records of the tcpdumps just ended: nothing of them runs any more.
  await rm(join(config.captureDir, RUN_DIR), { recursive: true, force: true });
  const tls = await withClientCa(await loadTls(config.tls, 'kube-pcap-agent', log), config.clientCaFile, '--client-ca-file');
  const registry = new Registry();
  const captures = new CaptureSpecs(kube, { log: log.child({ watch: 'packetcaptures' }), timeoutMs: config.apiTimeoutMs * 6 });
  const pods = new Reflector<Pod>(kube, { path: '/api/v1/pods', fieldSelector: `spec.nodeName=${config.nodeName}`, log: log.child({ watch: 'pods' }), timeoutMs: config.apiTimeoutMs * 6 });
  const reports = new Reflector<NodeReport>(kube, { path: reportsPath(), fieldSelector: `spec.nodeName=${config.nodeName}`, log: log.child({ watch: 'packetcapturenodereports' }), timeoutMs: config.apiTimeoutMs * 6 });
  let controller: CaptureController | undefined;
  const store = new CaptureStore(config.captureDir, {
    isWriting: (dir, ino) => controller?.isWriting(dir, ino) ?? false,
    committedLength: async (dir, ino) => await controller?.committedLength(dir, ino),
    flushedThrough: (ns, name) => controller?.flushedThrough(ns, name),
    generationOf: (dir, ino) => controller?.generationOf(dir, ino),
    steady: (dir, op) => rotationGate.exclusive(dir, op),
  });
  const rotationGate = new RotationGate();
  const pinCount = new Gauge({ name: 'kube_pcap_agent_pins', help: 'Downloads holding pinned files on this node.', registers: [registry] });
  const pinBytes = new Gauge({ name: 'kube_pcap_agent_pinned_bytes', help: 'Bytes of files held by downloads\' pins, each file once.', registers: [registry] });
  let pinned = 0;
  const pinsExpired = new Counter({ name: 'kube_pcap_agent_pins_expired_total', help: 'Pins removed because their time was up (a download ended without releasing them).', registers: [registry] });
  const pins = new FilePins({
    root: config.captureDir, store, gate: rotationGate, ttlMs: config.pinTtlMs, maxPins: config.maxPins, log: log.child({ part: 'pins' }),
    admit: (ns, name, bytes) => controller?.pinRefusal(ns, name, bytes),
    onExpired: () => pinsExpired.inc(),
    onChange: (n, bytes) => {
      if (bytes < pinned) controller?.pinsReleased();
      pinned = bytes;
      pinCount.set(n);
      pinBytes.set(bytes);
    },
  });
  // Pins of a run before a restart: kept while their time is not up, the others removed.
  await pins.load();
  new Gauge({
    name: 'kube_pcap_agent_pinned_reserved_bytes',
    help: 'Of the pinned bytes, those reserved on the disk: files their capture still links, which rotation may delete without freeing (file-pins.ts).',
    registers: [registry],
    collect() {
      this.set(pins.reservedBytes);
    },
  });
  const cniCache = new CniResultCache(config.cniResultsDir);
  const addresses = new CniAddresses(cniCache, { onError: (err) => log.warn({ dir: config.cniResultsDir, err: err.message }, 'watching the CNI result cache failed; it is read again at every resync') });
  controller = new CaptureController({
    nodeName: config.nodeName,
    captureDir: config.captureDir,
    policy: { maxSizeBytes: config.maxSizeBytes, rotationSeconds: config.rotationSeconds, maxFiles: config.maxFiles },
    tcpdump: config.tcpdump,
    log,
    kube,
    store,
    captures,
    pods,
    reports,
    resolver: new HostInterfaceResolver({ cniResultsDir: config.cniResultsDir, cni: cniCache }),
    addresses,
    statusIntervalMs: config.statusIntervalMs,
    counterIntervalMs: config.counterIntervalMs,
    resyncMs: config.resyncMs,
    finishedRetentionMs: config.finishedRetentionMs,
    maxWorkers: config.maxWorkers,
    metrics: agentMetrics(registry),
    rotationGate,
    pinnedBytes: () => pins.reservedBytes,
    dropPins: (ns, name) => pins.dropCapture(ns, name),
  });
  const running = controller;
  const app = await buildAgentApp({
    kube, log, tls, registry, store, pins, limits: config.limits, nodeName: config.nodeName,
    activity: { isCapturing: (ns, name) => running.isCapturing(ns, name), kernelDrops: (ns, name) => running.kernelDrops(ns, name), deletingFiles: (ns, name) => running.deletingFiles(ns, name), filesDeleted: (ns, name) => running.filesDeleted(ns, name) },
    authAudience: config.authAudience,
    gatewayClientNames: config.gatewayClientNames,
    apiTimeoutMs: config.apiTimeoutMs,
    notReadyReason: async () => {
      if (!captures.synced) return `PacketCaptures not synced${captures.lastError ? ` (${captures.lastError})` : ''}`;
      if (!pods.synced) return `pods not synced${pods.lastError ? ` (${pods.lastError})` : ''}`;
      if (!reports.synced) return `node reports not synced${reports.lastError ? ` (${reports.lastError})` : ''}`;
      return undefined;
    },
  });
  // The last line of defence (docs/agent.md, "Nothing wedges it"): a rejection nobody
  // handled is a bug to log, not a reason to drop every node's capture; an exception thrown
  // out of the event loop leaves state unknown, so the agent stops its captures (files stay
  // valid) and exits for the kubelet to restart it.
  process.on('unhandledRejection', (reason) => {
    log.error({ err: reason instanceof Error ? { message: reason.message, stack: reason.stack } : String(reason) }, 'unhandled rejection (a bug); the agent goes on');
  });
  process.once('uncaughtException', (err) => {
    log.fatal({ err: { message: err.message, stack: err.stack } }, 'uncaught exception; stopping captures and exiting');
    const exit = setTimeout(() => process.exit(1), 20_000);
    exit.unref();
    void running.stop().finally(() => process.exit(1));
  });
  await addresses.start().catch((err: Error) => log.warn({ dir: config.cniResultsDir, err: err.message }, 'cannot read the CNI result cache; new pods are captured once the API server has their addresses'));
  captures.start();
  pods.start();
  reports.start();
  running.start();
  pins.start();
  try {
    await serveUntilSignal([{ app, listen: config.listen }], tls, log);
  } finally {
    // Captures stop, files stay: a restarted agent continues in new files.
    await running.stop();
    addresses.stop();
    pins.stop();
    log.info('captures stopped');
    await captures.stop();
    await pods.stop();
    await reports.stop();
    await kube.close();
  }
}
