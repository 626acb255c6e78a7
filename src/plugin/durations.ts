// Times and durations as kubectl takes them: Go durations ("90s", "10m", "1h30m") and RFC 3339.
import { setTimeout as delay } from 'node:timers/promises';
import { PluginUsageError } from './plugin-error.js';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Milliseconds of a Go-style duration; a bare number is seconds. */
export function parseDuration(flag: string, text: string): number {
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  let total = 0;
  let end = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text))) {
    total += Number(m[1]) * UNITS[m[2]!]!;
    end = re.lastIndex;
  }
  if (text === '' || end !== text.length) throw new PluginUsageError(`${flag} must be a duration such as 90s, 10m or 1h30m, not "${text}"`);
  return Math.round(total);
}

/** An RFC 3339 time, or "now". */
export function parseTime(flag: string, text: string, now = Date.now()): Date {
  if (text === 'now') return new Date(now);
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/i.test(text) || Number.isNaN(Date.parse(text))) {
    throw new PluginUsageError(`${flag} must be an RFC 3339 time such as 2026-11-28T10:00:00Z, or "now", not "${text}"`);
  }
  return new Date(text);
}

/** "3m12s"-style age, as kubectl prints it. */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return `${m}m${s % 60 ? `${s % 60}s` : ''}`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h`;
  return `${Math.floor(h / 24)}d`;
}

/** Bytes for people: 1.5 MiB. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** Waits `ms`, or less when `signal` aborts (Ctrl-C while polling): the caller looks at `signal.aborted`. */
export async function pause(ms: number, signal: AbortSignal): Promise<void> {
  await delay(ms, undefined, { signal }).catch(() => undefined);
}
