// Files re-read when they change: certificates, keys and CA bundles mounted from Secrets,
// which the kubelet updates in place by swapping a symlink, and cert-manager rotates. They
// are polled and compared by content, and handed over only together and only once every
// one of them reads; a consumer that refuses them (a half-written pair, a bad PEM) keeps
// what it had, and is offered the files again when they change once more.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';

export interface FileWatchOptions {
  /** What the files are, for log lines ("serving certificate", "OIDC CA bundle"). */
  what: string;
  log: Logger;
  /** The contents the consumer already has; without them the first poll delivers. */
  initial?: readonly Buffer[];
  intervalMs?: number;
}

function digest(contents: readonly Buffer[]): string {
  const h = createHash('sha256');
  for (const c of contents) h.update(createHash('sha256').update(c).digest());
  return h.digest('hex');
}

/**
 * Polls `files`; calls `apply` with all their contents whenever any changed. `apply` throws
 * to refuse them. Returns a function that stops the watch.
 */
export function watchFiles(files: readonly string[], apply: (contents: Buffer[]) => void | Promise<void>, opts: FileWatchOptions): () => void {
  let installed = opts.initial ? digest(opts.initial) : '';
  let refused = '';
  let busy = false;
  const poll = async (): Promise<void> => {
    const contents = await Promise.all(files.map((f) => readFile(f)));
    const id = digest(contents);
    if (id === installed || id === refused) return;
    try {
      await apply(contents);
      installed = id;
      refused = '';
      opts.log.info({ files }, `${opts.what} reloaded`);
    } catch (err) {
      refused = id;
      opts.log.warn({ files, err: (err as Error).message }, `${opts.what} changed but is not usable; keeping the previous one`);
    }
  };
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    poll()
      .catch((err: unknown) => opts.log.warn({ files, err: (err as Error).message }, `${opts.what} cannot be read; keeping the previous one`))
      .finally(() => {
        busy = false;
      });
  }, opts.intervalMs ?? 2000);
  timer.unref();
  return () => clearInterval(timer);
}
