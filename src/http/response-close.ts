// What ends with a response (docs/downloads.md, "Lifetime"): places given back, pins released,
// access watches stopped, aborts signalled. Each part of a request registers here instead of
// adding its own 'close' listener to the response: one listener per response, the hooks run
// in the order they were added, and one that throws cannot keep the others from running.
import type { FastifyReply } from 'fastify';

const hooks = new WeakMap<object, (() => void)[]>();

/** Runs `fn` once, when the response's connection closes (finished or cut). */
export function onResponseClose(reply: FastifyReply, fn: () => void): void {
  const raw = reply.raw;
  let list = hooks.get(raw);
  if (!list) {
    const added: (() => void)[] = [];
    list = added;
    hooks.set(raw, added);
    raw.once('close', () => {
      for (const hook of added.splice(0)) {
        try {
          hook();
        } catch (err) {
          reply.log.error({ err: (err as Error).message }, 'a hook run when the response closed failed');
        }
      }
    });
  }
  list.push(fn);
}
