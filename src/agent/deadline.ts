// A bound on waiting (docs/agent.md, "Nothing wedges it"): disk operations and stops that
// may hang are given up on after a deadline; the operation itself may go on in the
// background, but nothing waits for it any more.
export class DeadlineExceeded extends Error {
  constructor(what: string, ms: number) {
    super(`${what} took longer than ${ms} ms`);
    this.name = 'DeadlineExceeded';
  }
}

/** `p`, or a DeadlineExceeded rejection once `ms` have passed. */
export function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new DeadlineExceeded(what, ms)), ms);
    }),
  ]);
}
