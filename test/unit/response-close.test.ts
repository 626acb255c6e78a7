import Fastify from 'fastify';
import t from 'tap';
import { onResponseClose } from '../../src/http/response-close.js';

t.test('hooks run once when the response closes: in order, past one that throws, with one listener', async (t) => {
  const app = Fastify({ logger: false });
  t.teardown(() => app.close());
  const ran: number[] = [];
  let listeners = -1;
  app.get('/', async (_request, reply) => {
    const before = reply.raw.listenerCount('close');
    for (let i = 0; i < 20; i++) {
      onResponseClose(reply, () => {
        if (i === 3) throw new Error('a failing hook');
        ran.push(i);
      });
    }
    listeners = reply.raw.listenerCount('close') - before;
    return 'ok';
  });
  const warnings: string[] = [];
  const onWarning = (w: Error): void => void warnings.push(w.name);
  process.on('warning', onWarning);
  t.teardown(() => process.off('warning', onWarning));
  const res = await app.inject({ method: 'GET', url: '/' });
  t.equal(res.statusCode, 200);
  t.equal(listeners, 1, 'twenty hooks, one close listener');
  t.same(ran, Array.from({ length: 20 }, (_, i) => i).filter((i) => i !== 3), 'every other hook ran, in order');
  await new Promise((r) => setImmediate(r));
  t.notOk(warnings.includes('MaxListenersExceededWarning'), 'no listener leak warning');
});
