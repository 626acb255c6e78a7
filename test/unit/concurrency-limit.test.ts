// The bound on unknown-token reviews: never more in flight than allowed, a bounded queue,
// a slot passed straight to the next waiter; and the memory of tokens once accepted.
import t from 'tap';
import { KnownTokens } from '../../src/auth/authentication/known-tokens.js';
import { ConcurrencyLimit, QueueFullError } from '../../src/flow/concurrency-limit.js';

t.test('at most maxInFlight run, maxQueued wait, the rest are refused at once', async (t) => {
  const seen: number[] = [];
  const lane = new ConcurrencyLimit({ maxInFlight: 2, maxQueued: 3, what: 'tests', onInFlight: (n) => seen.push(n) });
  const gates: (() => void)[] = [];
  const work = () => new Promise<string>((resolve) => gates.push(() => resolve('done')));
  const runs = Array.from({ length: 8 }, () => lane.run(work).then((v) => v, (e: unknown) => e));
  const refused = await Promise.all(runs.slice(5));
  t.ok(refused.every((e) => e instanceof QueueFullError), 'the 6th to 8th are refused without waiting');
  t.equal(lane.current, 2);
  t.equal(gates.length, 2, 'only two started');
  while (gates.length > 0) {
    gates.shift()!();
    await new Promise((r) => setImmediate(r));
  }
  t.same(await Promise.all(runs.slice(0, 5)), ['done', 'done', 'done', 'done', 'done'], 'the queued ones ran in turn');
  t.equal(lane.peak, 2, 'never more than two at once');
  t.ok(Math.max(...seen) <= 2);
  t.equal(lane.current, 0);
});

t.test('a failing job frees its place', async (t) => {
  const lane = new ConcurrencyLimit({ maxInFlight: 1, maxQueued: 0, what: 'tests' });
  await t.rejects(lane.run(async () => { throw new Error('boom'); }), /boom/);
  t.equal(await lane.run(async () => 'next'), 'next');
});

t.test('known tokens: remembered until their expiry or the horizon, forgotten on rejection, bounded', async (t) => {
  let now = 1_000;
  const known = new KnownTokens(2, 500, () => now);
  known.remember('a', 1_200);
  known.remember('b');
  t.ok(known.has('a') && known.has('b'));
  now = 1_200;
  t.notOk(known.has('a'), 'a token\'s own expiry');
  t.ok(known.has('b'));
  now = 1_500;
  t.notOk(known.has('b'), 'the horizon for a token without one');
  known.remember('c');
  known.forget('c');
  t.notOk(known.has('c'), 'forgotten when rejected');
  known.remember('d');
  known.remember('e');
  known.remember('f');
  t.notOk(known.has('d'), 'the oldest goes beyond the bound');
  t.ok(known.has('e') && known.has('f'));
});
