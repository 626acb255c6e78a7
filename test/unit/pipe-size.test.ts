// A busy capture's pipe grows (src/agent/pipe-size.ts): the kernel's own measure of a pipe is
// how much a non-blocking writer can put in before EAGAIN, checked before and after; the
// node's budget for grown pipes; and a refusal that says why.
import { closeSync, constants, openSync, writeSync } from 'node:fs';
import { mkdtemp, readFile, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { PipeBudget } from '../../src/agent/node-budget.js';
import { busyForPipe, PipeResizeError, resizePipe } from '../../src/agent/pipe-size.js';
import { run } from '../harness/http.js';
import type { TapTest } from '../harness/tap.js';

/** A FIFO opened at both ends, non-blocking, and already unlinked (as the capture worker makes it). */
async function pipe(t: TapTest): Promise<{ readFd: number; writeFd: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'pipe-size-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'p.fifo');
  await run('mkfifo', ['-m', '600', path]);
  const readFd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const writeFd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
  await unlink(path);
  t.teardown(() => {
    closeSync(readFd);
    closeSync(writeFd);
  });
  return { readFd, writeFd };
}

/** O_NONBLOCK on the open file `fd` refers to, as /proc says. */
async function nonBlocking(fd: number): Promise<boolean> {
  const flags = /^flags:\s+([0-7]+)$/m.exec(await readFile(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]!;
  return (parseInt(flags, 8) & constants.O_NONBLOCK) !== 0;
}

/** Bytes a non-blocking writer puts into the empty pipe before it is full. */
function capacity(writeFd: number): number {
  const page = Buffer.alloc(4096, 7);
  let n = 0;
  for (;;) {
    try {
      n += writeSync(writeFd, page);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return n;
      throw err;
    }
  }
}

t.test('the pipe takes 1 MiB at once after the resize, 64 KiB before', async (t) => {
  const before = await pipe(t);
  t.equal(capacity(before.writeFd), 65_536, 'a fresh pipe holds 64 KiB');
  const p = await pipe(t);
  t.equal(await resizePipe(p.readFd, 1024 * 1024), 1024 * 1024, 'the size the kernel reports');
  t.equal(capacity(p.writeFd), 1024 * 1024, 'a writer now puts 1 MiB in without waiting for a reader');
  // Had perl been given the pipe as stdin, libuv would have made the shared open file
  // blocking, and the agent's next read of an empty pipe would stop its event loop.
  t.ok(await nonBlocking(p.readFd), 'the agent\'s end is still non-blocking');
});

t.test('the kernel rounds a size up to a power of two of pages', async (t) => {
  const p = await pipe(t);
  t.equal(await resizePipe(p.readFd, 200_000), 256 * 1024);
});

t.test('something that is not a pipe is refused, with the kernel\'s reason', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pipe-size-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const fd = openSync(join(dir, 'file'), constants.O_RDWR | constants.O_CREAT, 0o600);
  t.teardown(() => closeSync(fd));
  const err = await resizePipe(fd, 1024 * 1024).catch((e: unknown) => e);
  t.type(err, PipeResizeError);
  t.match((err as Error).message, /F_SETPIPE_SZ: Bad file descriptor/);
});

t.test('the node budget: reservations up to the limit, then none until one is released', async (t) => {
  const b = new PipeBudget(2 * 1024 * 1024);
  t.ok(b.reserve(1024 * 1024));
  t.ok(b.reserve(1024 * 1024));
  t.notOk(b.reserve(1024 * 1024), 'a third busy capture keeps its 64 KiB pipe');
  t.equal(b.bytes, 2 * 1024 * 1024);
  b.release(1024 * 1024);
  t.ok(b.reserve(1024 * 1024), 'room again once a capture ended');
  t.notOk(new PipeBudget(0).reserve(1024 * 1024), '--max-pipe-bytes=0 grows none');
  const rounded = new PipeBudget(1024 * 1024);
  t.ok(rounded.reserve(200_000));
  rounded.settle(200_000, 256 * 1024);
  t.equal(rounded.bytes, 256 * 1024, 'what the kernel gave counts, not what was asked');
});

t.test('a pipe grows for a rate of a full buffer per tick, not for a tick that came late', async (t) => {
  const KiB = 1024;
  t.ok(busyForPipe(300 * KiB, 250, 250, 256 * KiB), '300 KiB in one 250 ms tick: busy');
  t.ok(busyForPipe(300 * KiB, 100, 250, 256 * KiB), 'an early tick counts as a whole one');
  t.notOk(busyForPipe(300 * KiB, 1500, 250, 256 * KiB), 'the same 300 KiB over 1.5 s (timers behind on a loaded node): 50 KiB a tick, quiet');
  t.notOk(busyForPipe(50 * KiB, 250, 250, 256 * KiB), 'about 2 000 DNS packets a second: quiet');
});
