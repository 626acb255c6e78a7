// Runs the status aggregator, and whatever else the caller gives it to run (the exporter,
// src/export/exporter.ts), on the one gateway replica that holds the Lease (docs/status.md,
// "One writer"): each starts when this replica starts leading and stops when it stops; the
// captures and reports they read are the gateway's cache (capture-cache.ts), which every
// replica keeps for its requests anyway. What runs beside the aggregator is handed in by the
// program that composes the gateway, so this wing does not depend on the ones built on it.
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { GatewayConfig } from '../config/gateway.js';
import type { KubeClient } from '../kube/client.js';
import { LeaderElector } from '../kube/leader-election.js';
import type { CaptureCache } from './capture-cache.js';
import type { CaptureFiles } from './capture-files.js';
import { StatusAggregator } from './status-aggregator.js';

/** One capture's status may cost each PacketCapture watcher this many bytes per second. */
const STATUS_BYTES_PER_SECOND = 64 * 1024;

/** What the leader runs, for one term of leadership. */
export interface LeaderWork {
  start(): void;
  stop(): Promise<void>;
}

/** What a leader's work may use: the replica's own clients, caches and metrics. */
export interface LeaderDeps {
  kube: KubeClient;
  cache: CaptureCache;
  files: CaptureFiles;
  config: GatewayConfig;
  log: Logger;
  registry: Registry;
}

/**
 * Called once as the gateway starts (to register metrics, say); returns what makes one
 * term's work each time this replica starts leading.
 */
export type LeaderWorkFactory = (deps: LeaderDeps) => () => LeaderWork;

export interface Aggregation {
  elector: LeaderElector;
  stop(): Promise<void>;
}

export function startAggregation(deps: LeaderDeps, more: LeaderWorkFactory[] = []): Aggregation {
  const { kube, cache, config, log, registry } = deps;
  const leader = new Gauge({ name: 'kube_pcap_gateway_status_aggregator_leader', help: '1 while this replica holds the Lease and writes PacketCapture status.', registers: [registry] });
  const writes = new Counter({ name: 'kube_pcap_gateway_status_writes_total', help: 'PacketCapture status writes by this replica\'s aggregator.', registers: [registry] });
  const pruned = new Counter({ name: 'kube_pcap_gateway_reports_pruned_total', help: 'Node reports deleted because their Node no longer exists.', registers: [registry] });
  const elector = new LeaderElector(kube, { ...config.leaderElection, log: log.child({ component: 'leader-election' }), timeoutMs: config.apiTimeoutMs });
  const makers: (() => LeaderWork)[] = [
    () => new StatusAggregator({
      kube,
      cache,
      log: log.child({ component: 'status-aggregator' }),
      minIntervalMs: config.statusMinIntervalMs,
      bytesPerSecond: STATUS_BYTES_PER_SECOND,
      resyncMs: 5 * 60_000,
      apiTimeoutMs: config.apiTimeoutMs,
      metrics: { statusWrite: () => writes.inc(), reportPruned: () => pruned.inc() },
    }),
    ...more.map((factory) => factory(deps)),
  ];
  let running: LeaderWork[] = [];
  const stopAll = async (): Promise<void> => {
    const was = running;
    running = [];
    await Promise.all(was.map((w) => w.stop()));
  };
  // Leadership can flip faster than the work stops: each change waits for the last.
  let transition: Promise<void> = Promise.resolve();
  elector.on('started-leading', () => {
    leader.set(1);
    transition = transition.then(() => {
      if (!elector.isLeader) return;
      running = makers.map((make) => make());
      for (const w of running) w.start();
    });
  });
  elector.on('stopped-leading', () => {
    leader.set(0);
    transition = transition.then(stopAll);
  });
  elector.start();
  return {
    elector,
    async stop() {
      // The work stops writing before the Lease is released to the next replica.
      await stopAll();
      await elector.stop();
      await transition;
    },
  };
}
