// Runs the status aggregator on the one gateway replica that holds the Lease
// (docs/status.md, "One writer"): it starts when this replica starts leading and stops, its
// Node watch with it, when it stops; the captures and reports it folds are the gateway's
// cache (capture-cache.ts), which every replica keeps for its requests anyway.
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { GatewayConfig } from '../config/gateway.js';
import type { KubeClient } from '../kube/client.js';
import { LeaderElector } from '../kube/leader-election.js';
import type { CaptureCache } from './capture-cache.js';
import { StatusAggregator } from './status-aggregator.js';

/** One capture's status may cost each PacketCapture watcher this many bytes per second. */
const STATUS_BYTES_PER_SECOND = 64 * 1024;

export interface Aggregation {
  elector: LeaderElector;
  stop(): Promise<void>;
}

export function startAggregation(kube: KubeClient, cache: CaptureCache, config: GatewayConfig, log: Logger, registry: Registry): Aggregation {
  const leader = new Gauge({ name: 'kube_pcap_gateway_status_aggregator_leader', help: '1 while this replica holds the Lease and writes PacketCapture status.', registers: [registry] });
  const writes = new Counter({ name: 'kube_pcap_gateway_status_writes_total', help: 'PacketCapture status writes by this replica\'s aggregator.', registers: [registry] });
  const pruned = new Counter({ name: 'kube_pcap_gateway_reports_pruned_total', help: 'Node reports deleted because their Node no longer exists.', registers: [registry] });
  const elector = new LeaderElector(kube, { ...config.leaderElection, log: log.child({ component: 'leader-election' }), timeoutMs: config.apiTimeoutMs });
  let aggregator: StatusAggregator | undefined;
  // Leadership can flip faster than an aggregator stops: each change waits for the last.
  let transition: Promise<void> = Promise.resolve();
  elector.on('started-leading', () => {
    leader.set(1);
    transition = transition.then(() => {
      if (!elector.isLeader) return;
      aggregator = new StatusAggregator({
        kube,
        cache,
        log: log.child({ component: 'status-aggregator' }),
        minIntervalMs: config.statusMinIntervalMs,
        bytesPerSecond: STATUS_BYTES_PER_SECOND,
        resyncMs: 5 * 60_000,
        apiTimeoutMs: config.apiTimeoutMs,
        metrics: { statusWrite: () => writes.inc(), reportPruned: () => pruned.inc() },
      });
      aggregator.start();
    });
  });
  elector.on('stopped-leading', () => {
    leader.set(0);
    transition = transition.then(async () => {
      const a = aggregator;
      aggregator = undefined;
      await a?.stop();
    });
  });
  elector.start();
  return {
    elector,
    async stop() {
      // The aggregator stops writing before the Lease is released to the next replica.
      const a = aggregator;
      aggregator = undefined;
      await a?.stop();
      await elector.stop();
      await transition;
    },
  };
}
