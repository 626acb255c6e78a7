import t from 'tap';
import { ReviewCache, type CacheOutcome } from '../../src/auth/review-cache.js';

function setup(max = 10) {
  let now = 1000;
  const outcomes: CacheOutcome[] = [];
  const cache = new ReviewCache<string>(max, (o) => outcomes.push(o), () => now);
  return { cache, outcomes, advance: (ms: number) => (now += ms) };
}

t.test('hit within the TTL, miss after it', async (t) => {
  const { cache, outcomes, advance } = setup();
  let calls = 0;
  const review = async () => ({ value: `v${++calls}`, ttlMs: 100 });
  t.equal(await cache.get('k', review), 'v1');
  advance(99);
  t.equal(await cache.get('k', review), 'v1');
  advance(1);
  t.equal(await cache.get('k', review), 'v2');
  t.same(outcomes, ['miss', 'hit', 'miss']);
});

t.test('identical concurrent lookups share one review', async (t) => {
  const { cache, outcomes } = setup();
  let calls = 0;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const review = async () => {
    calls++;
    await gate;
    return { value: 'v', ttlMs: 100 };
  };
  const all = Promise.all(Array.from({ length: 20 }, () => cache.get('k', review)));
  release();
  t.same(await all, Array(20).fill('v'));
  t.equal(calls, 1);
  t.equal(outcomes.filter((o) => o === 'coalesced').length, 19);
});

t.test('a failed review is thrown to every waiter and never cached', async (t) => {
  const { cache } = setup();
  let calls = 0;
  const failing = async () => {
    calls++;
    throw new Error('API server down');
  };
  const results = await Promise.allSettled([cache.get('k', failing), cache.get('k', failing)]);
  t.same(results.map((r) => r.status), ['rejected', 'rejected']);
  t.equal(calls, 1, 'coalesced');
  t.equal(cache.size, 0);
  t.equal(await cache.get('k', async () => ({ value: 'back', ttlMs: 10 })), 'back', 'the next lookup asks again');
});

t.test('a zero TTL answers this request only', async (t) => {
  const { cache, outcomes } = setup();
  await cache.get('k', async () => ({ value: 'v', ttlMs: 0 }));
  await cache.get('k', async () => ({ value: 'v', ttlMs: 0 }));
  t.same(outcomes, ['miss', 'miss']);
});

t.test('bounded: the least recently used entry goes first', async (t) => {
  const { cache, outcomes } = setup(2);
  const r = (v: string) => async () => ({ value: v, ttlMs: 1000 });
  await cache.get('a', r('a'));
  await cache.get('b', r('b'));
  await cache.get('a', r('a')); // a is now the most recent
  await cache.get('c', r('c')); // evicts b
  t.equal(cache.size, 2);
  outcomes.length = 0;
  await cache.get('a', r('a'));
  await cache.get('b', r('b'));
  t.same(outcomes, ['hit', 'miss']);
});
