// The agent's work queue (docs/agent.md, "The actuator"): one key at a time, re-run when
// added during its work, back-off per key, scheduled wake-ups, and a hung key gives its slot back.
import t from 'tap';
import { WorkQueue } from '../../src/kube/work-queue.js';

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setImmediate(r));
  }
}

t.test('a key is never worked on twice at once; added meanwhile, it runs once more after', async (t) => {
  const gate = deferred();
  let concurrent = 0;
  let maxConcurrent = 0;
  let runs = 0;
  const q = new WorkQueue(async () => {
    runs++;
    concurrent++;
    maxConcurrent = Math.max(maxConcurrent, concurrent);
    if (runs === 1) await gate.promise;
    concurrent--;
  }, { concurrency: 4, slotTimeoutMs: 10_000, baseDelayMs: 10, maxDelayMs: 100, onError: () => undefined });
  q.add('a');
  await until(() => runs === 1);
  q.add('a');
  q.add('a');
  gate.resolve();
  await until(() => runs === 2);
  await q.shutDown();
  t.equal(maxConcurrent, 1);
  t.equal(runs, 2, 'two adds during the work: one more run, not two');
});

t.test('failures back off per key, doubling (with jitter: half a step at least); success forgets', async (t) => {
  const times: number[] = [];
  const q = new WorkQueue(async () => {
    times.push(Date.now());
    if (times.length < 4) throw new Error('transient');
  }, { concurrency: 1, slotTimeoutMs: 10_000, baseDelayMs: 20, maxDelayMs: 1000, onError: () => undefined });
  q.add('k');
  await until(() => times.length === 4, 3000);
  await q.shutDown();
  const gaps = times.slice(1).map((x, i) => x - times[i]!);
  t.ok(gaps[0]! >= 9 && gaps[1]! >= 19 && gaps[2]! >= 39, `gaps ${gaps.join(', ')} ms: at least 10, 20, 40 (half of 20, 40, 80)`);
});

t.test('one slow key does not hold the others; a hung key gives its slot back', async (t) => {
  const hang = deferred();
  const done: string[] = [];
  const errors: string[] = [];
  const q = new WorkQueue(async (key) => {
    if (key === 'hung') await hang.promise;
    done.push(key);
  }, { concurrency: 1, slotTimeoutMs: 50, baseDelayMs: 10, maxDelayMs: 100, onError: (key, err) => errors.push(`${key}: ${(err as Error).message}`) });
  q.add('hung');
  q.add('b');
  q.add('c');
  await until(() => done.includes('b') && done.includes('c'));
  t.match(errors, [/hung: still working on it after 50 ms/]);
  q.add('hung');
  t.notOk(done.includes('hung'), 'the hung key is still locked');
  hang.resolve();
  await until(() => done.filter((k) => k === 'hung').length === 2);
  await q.shutDown();
});

t.test('addAfter: the earliest schedule wins; requeueAfter comes back on time', async (t) => {
  const seen: [string, number][] = [];
  const start = Date.now();
  let first = true;
  const q = new WorkQueue(async (key) => {
    seen.push([key, Date.now() - start]);
    if (key === 'r' && first) {
      first = false;
      return { requeueAfterMs: 60 };
    }
    return undefined;
  }, { concurrency: 2, slotTimeoutMs: 10_000, baseDelayMs: 10, maxDelayMs: 100, onError: () => undefined });
  q.addAfter('x', 500);
  q.addAfter('x', 40);
  q.add('r');
  await until(() => seen.filter(([k]) => k === 'r').length === 2 && seen.some(([k]) => k === 'x'));
  await q.shutDown();
  const x = seen.find(([k]) => k === 'x')![1];
  t.ok(x >= 35 && x < 400, `x ran at ${x} ms (scheduled at 40 and 500)`);
  const r2 = seen.filter(([k]) => k === 'r')[1]![1];
  t.ok(r2 >= 55, `requeued r ran at ${r2} ms`);
});
