// `kube-pcap agent`: one per node. Captures the traffic of the pods on this node that
// PacketCaptures select, reports this node's status, and serves the files to the gateway.
import { mkdir } from 'node:fs/promises';
import { Counter, Gauge, Registry } from 'prom-client';
import type { AgentConfig } from '../config/agent.js';
import { serveUntilSignal } from '../http/serve.js';
import { loadTls, withClientCa } from '../http/tls.js';
import { connect } from '../kube/config.js';
import { capturesPath, type PacketCapture } from '../kube/packetcapture.js';
import { Reflector } from '../kube/reflector.js';
import { createLogger } from '../log/logger.js';
import { buildAgentApp } from './app.js';
import { CaptureStore } from './capture-store.js';
import { RouteInterfaceResolver } from './pod-interface.js';
import { Reconciler, type Pod, type ReconcilerMetrics } from './reconciler.js';

function agentMetrics(registry: Registry): ReconcilerMetrics {
  const packets = new Counter({ name: 'kube_pcap_agent_packets_written_total', help: 'Packets written to pcap files, by capture.', labelNames: ['namespace', 'capture'], registers: [registry] });
  const bytes = new Counter({ name: 'kube_pcap_agent_bytes_written_total', help: 'Bytes of packets written to pcap files, by capture.', labelNames: ['namespace', 'capture'], registers: [registry] });
  const rotations = new Counter({ name: 'kube_pcap_agent_rotations_total', help: 'File rotations, by capture.', labelNames: ['namespace', 'capture'], registers: [registry] });
  const captures = new Gauge({ name: 'kube_pcap_agent_active_captures', help: 'Captures with at least one running capture on this node.', registers: [registry] });
  const workers = new Gauge({ name: 'kube_pcap_agent_capture_interfaces', help: 'Pod interfaces being captured on this node.', registers: [registry] });
  const drops = new Gauge({ name: 'kube_pcap_agent_kernel_drops', help: 'Packets the kernel dropped before tcpdump could read them, summed over running captures.', registers: [registry] });
  const diskFree = new Gauge({ name: 'kube_pcap_agent_disk_free_bytes', help: 'Free bytes on the capture directory\'s filesystem.', registers: [registry] });
  return {
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
  const tls = await withClientCa(await loadTls(config.tls, 'kube-pcap-agent', log), config.clientCaFile, '--client-ca-file');
  const registry = new Registry();
  const captures = new Reflector<PacketCapture>(kube, { path: capturesPath(), log: log.child({ watch: 'packetcaptures' }), timeoutMs: config.apiTimeoutMs * 6 });
  const pods = new Reflector<Pod>(kube, { path: '/api/v1/pods', fieldSelector: `spec.nodeName=${config.nodeName}`, log: log.child({ watch: 'pods' }), timeoutMs: config.apiTimeoutMs * 6 });
  let reconciler: Reconciler | undefined;
  const store = new CaptureStore(config.captureDir, (path) => reconciler?.liveLength(path));
  reconciler = new Reconciler({
    nodeName: config.nodeName,
    captureDir: config.captureDir,
    policy: { maxSizeBytes: config.maxSizeBytes, rotationSeconds: config.rotationSeconds, maxFiles: config.maxFiles },
    tcpdump: config.tcpdump,
    log,
    kube,
    store,
    captures,
    pods,
    resolver: new RouteInterfaceResolver(),
    statusIntervalMs: config.statusIntervalMs,
    resyncMs: config.resyncMs,
    metrics: agentMetrics(registry),
  });
  const running = reconciler;
  const app = await buildAgentApp({
    kube, log, tls, registry, store, limits: config.limits,
    activity: { isCapturing: (ns, name) => running.isCapturing(ns, name), filesDeleted: () => running.filesDeleted() },
    authAudience: config.authAudience,
    gatewayClientNames: config.gatewayClientNames,
    apiTimeoutMs: config.apiTimeoutMs,
    notReadyReason: async () => {
      if (!captures.synced) return `PacketCaptures not synced${captures.lastError ? ` (${captures.lastError})` : ''}`;
      if (!pods.synced) return `pods not synced${pods.lastError ? ` (${pods.lastError})` : ''}`;
      return undefined;
    },
  });
  captures.start();
  pods.start();
  running.start();
  try {
    await serveUntilSignal(app, config.listen, tls, log);
  } finally {
    // Captures stop, files stay: a restarted agent continues in new files.
    await running.stop();
    await captures.stop();
    await pods.stop();
    await kube.close();
  }
}
