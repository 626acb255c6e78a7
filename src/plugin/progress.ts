// A download's progress on a terminal, like curl's: bytes of the total (the gateway's exact
// Content-Length), rate and time left; bytes and rate alone when the length is not known
// ahead (files.pcapng, which is merged while it streams). Redrawn at most 10 times a second
// on one line of stderr.
import { formatBytes } from './durations.js';

const REDRAW_MS = 100;

function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds)) return '--';
  const s = Math.ceil(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export class ProgressBar {
  private bytes = 0;
  private readonly started = Date.now();
  private drawnAt = 0;

  constructor(private readonly out: NodeJS.WriteStream, private readonly label: string, private readonly total: number | undefined) {}

  add(n: number): void {
    this.bytes += n;
    const now = Date.now();
    if (now - this.drawnAt >= REDRAW_MS) {
      this.drawnAt = now;
      this.draw(now);
    }
  }

  /** The line as it stands now (exported for tests through the terminal's output). */
  line(now = Date.now()): string {
    const elapsed = Math.max(0.001, (now - this.started) / 1000);
    const rate = this.bytes / elapsed;
    const rateText = `${formatBytes(Math.round(rate))}/s`;
    if (this.total === undefined || this.total === 0) return `${this.label}  ${formatBytes(this.bytes)}  ${rateText}`;
    const fraction = Math.min(1, this.bytes / this.total);
    const width = 24;
    const filled = Math.round(fraction * width);
    const bar = `${'='.repeat(Math.max(0, filled - 1))}${filled > 0 ? (fraction >= 1 ? '=' : '>') : ''}${' '.repeat(width - filled)}`;
    const eta = rate > 0 ? (this.total - this.bytes) / rate : Infinity;
    return `${this.label} ${String(Math.floor(fraction * 100)).padStart(3)}% [${bar}] ${formatBytes(this.bytes)} of ${formatBytes(this.total)}  ${rateText}  ETA ${formatEta(eta)}`;
  }

  private draw(now: number): void {
    const columns = this.out.columns || 100;
    this.out.write(`\r${this.line(now).slice(0, columns - 1)}\x1b[K`);
  }

  /** The final state, then a new line. */
  finish(): void {
    this.draw(Date.now());
    this.out.write('\n');
  }

  /** Clears the line (an error message follows). */
  clear(): void {
    this.out.write('\r\x1b[K');
  }
}
