import t from 'tap';
import { parseRange } from '../../src/http/range.js';

t.test('one byte range', async (t) => {
  t.same(parseRange(undefined, 100), { kind: 'full' });
  t.same(parseRange('bytes=0-9', 100), { kind: 'partial', start: 0, end: 9 });
  t.same(parseRange('bytes=90-', 100), { kind: 'partial', start: 90, end: 99 });
  t.same(parseRange('bytes=-10', 100), { kind: 'partial', start: 90, end: 99 });
  t.same(parseRange('bytes=-1000', 100), { kind: 'partial', start: 0, end: 99 });
  t.same(parseRange('bytes=50-5000', 100), { kind: 'partial', start: 50, end: 99 }, 'an end past the file is clamped');
  t.same(parseRange('bytes=0-1,5-6', 100), { kind: 'full' }, 'several ranges: the whole file');
  for (const bad of ['bytes=100-', 'bytes=9-1', 'bytes=-0', 'bytes=-', 'bytes=a-b', 'items=0-1', 'bytes 0-1']) t.same(parseRange(bad, 100), { kind: 'unsatisfiable' }, bad);
});
