// The live merge's queue: first in, first out, across the bulk reclaiming of taken slots.
import t from 'tap';
import { Fifo } from '../../src/flow/fifo.js';

t.test('order, length and peek survive many takes and the compaction they cause', async (t) => {
  const q = new Fifo<number>();
  t.equal(q.shift(), undefined, 'empty');
  for (let i = 0; i < 5000; i++) q.push(i);
  const out: number[] = [];
  for (let i = 0; i < 3000; i++) out.push(q.shift()!);
  t.equal(q.length, 2000);
  t.equal(q.peek(), 3000, 'peek is the oldest left');
  for (let i = 5000; i < 5010; i++) q.push(i);
  while (q.length > 0) out.push(q.shift()!);
  t.same(out, Array.from({ length: 5010 }, (_, i) => i), 'every item once, in order');
  t.equal(q.peek(), undefined);
});
