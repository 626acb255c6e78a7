// The heap under every time-ordered merge (merge.ts per node, the gateway's across nodes):
// one entry per source, smallest timestamp first, ties by the source's tag so the output is
// deterministic. Timestamps are [seconds, nanoseconds] pairs: comparable across microsecond
// and nanosecond sources without a BigInt per record.
export interface TimeKeyed {
  s: number;
  ns: number;
  tag: number;
}

export class TimeHeap<T extends TimeKeyed> {
  private readonly items: T[] = [];

  get size(): number {
    return this.items.length;
  }

  /** The earliest entry, left in place. */
  peek(): T | undefined {
    return this.items[0];
  }

  push(item: T): void {
    const h = this.items;
    h.push(item);
    for (let i = h.length - 1; i > 0;) {
      const p = (i - 1) >> 1;
      if (!earlier(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  pop(): T | undefined {
    const h = this.items;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last) {
      h[0] = last;
      for (let i = 0; ;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && earlier(h[l]!, h[m]!)) m = l;
        if (r < h.length && earlier(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}

function earlier(a: TimeKeyed, b: TimeKeyed): boolean {
  return a.s < b.s || (a.s === b.s && (a.ns < b.ns || (a.ns === b.ns && a.tag < b.tag)));
}

/**
 * A pcapng timestamp (its two 32-bit halves, in 10^-tsresol s) into `into`'s seconds and
 * nanoseconds (no allocation: once per packet). Microseconds since the epoch fit a double
 * exactly (until the year 2255); nanoseconds do not, and take the BigInt path.
 */
export function splitTimestamp(high: number, low: number, tsresol: 6 | 9, into: { s: number; ns: number }): void {
  if (tsresol === 6) {
    const us = high * 4294967296 + low;
    const s = Math.floor(us / 1_000_000);
    into.s = s;
    into.ns = (us - s * 1_000_000) * 1000;
    return;
  }
  const ns = (BigInt(high) << 32n) | BigInt(low);
  into.s = Number(ns / 1_000_000_000n);
  into.ns = Number(ns % 1_000_000_000n);
}
