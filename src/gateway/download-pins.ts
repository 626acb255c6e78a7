// The pins one download holds on its nodes (docs/downloads.md, "Pinned files"): renewed while
// the download streams, since a slow client may take hours to reach the last node's files
// while each pin lapses `ttl` after its last use; given back as soon as a node's files are
// all in the zip, and all of them when the response closes for any reason. A release that
// cannot reach its agent is no leak: the pin lapses there on its own.
import type { FastifyBaseLogger } from 'fastify';
import { ConcurrencyLimit } from '../flow/concurrency-limit.js';
import { AgentError } from './agent-client.js';
import type { CaptureFiles, NodeFiles } from './capture-files.js';

/** Agents renewed at once per download (the same bound as the listing's fan-out). */
const RENEW_CONCURRENCY = 16;

export class DownloadPins {
  private timer: NodeJS.Timeout | undefined;
  private renewing = false;

  constructor(
    private readonly files: CaptureFiles,
    private readonly namespace: string,
    private readonly name: string,
    private readonly nodes: NodeFiles[],
    private readonly log: FastifyBaseLogger,
  ) {}

  /** Renews every held pin at a third of the shortest lifetime, so one missed renewal is no loss. */
  start(): void {
    const ttls = this.nodes.flatMap((n) => (n.pin ? [n.pin.ttlSeconds] : []));
    if (ttls.length === 0) return;
    this.timer = setInterval(() => void this.renew(), (Math.min(...ttls) * 1000) / 3);
    this.timer.unref();
  }

  /** This node's files are all in the zip: its pin is no longer needed. */
  releaseNode(node: NodeFiles): void {
    void this.files.release(this.namespace, this.name, [node]);
  }

  async releaseAll(): Promise<void> {
    clearInterval(this.timer);
    await this.files.release(this.namespace, this.name, this.nodes);
  }

  private async renew(): Promise<void> {
    if (this.renewing) return; // the last round is still out: agents are slow, not forgotten
    this.renewing = true;
    try {
      const limit = new ConcurrencyLimit({ maxInFlight: RENEW_CONCURRENCY, maxQueued: Infinity, what: 'pin renewals' });
      await Promise.all(this.nodes.map((n) => {
        const pin = n.pin;
        if (!pin) return undefined;
        return limit.run(() => this.files.agents.renewPin(n.endpoint, this.namespace, this.name, pin.id)).catch((err: Error) => {
          // Lost (404: the agent restarted past its lifetime, or the files were deleted): the
          // fetch of its files fails and cuts the download; anything else is retried next round.
          const lost = err instanceof AgentError && err.status === 404;
          this.log.warn({ node: n.node, pin: pin.id, err: err.message }, lost ? 'a pin of this download is gone; the download will be cut at its files' : 'cannot renew a pin; retrying');
        });
      }));
    } finally {
      this.renewing = false;
    }
  }
}
