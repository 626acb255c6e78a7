// The tcpdumps an earlier agent left running (docs/agent.md, "Restarts"). tcpdump runs in a
// process group of its own (so that a stop reaches it whole), so it outlives an agent that
// is killed outright: a quiet capture's tcpdump never writes to its closed channel, never
// gets SIGPIPE, and would capture on for as long as the node runs. Inside a container the
// runtime ends every process of the old container; outside one (an agent run as a plain
// process, or with hostPID) nothing does. So each tcpdump is recorded by pid and start
// time in the capture directory while it runs, and a starting agent ends every recorded
// process that is still the one recorded (same pid and start time: a pid the kernel gave to
// something else since is left alone).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { readdir, readFile, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';

/** Field 22 of /proc/<pid>/stat, the process's start time in clock ticks since boot. */
export function startTimeOf(stat: string): string | undefined {
  // The command name is in parentheses and may hold spaces or parentheses: fields follow the last ')'.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}

export async function startTime(pid: number): Promise<string | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  return stat === undefined ? undefined : startTimeOf(stat);
}

/** Records are `tcpdump-<pid>` files, beside tcpdump's output channels (RUN_DIR). */
const PREFIX = 'tcpdump-';

export class ProcessRecords {
  constructor(readonly dir: string) {}

  /**
   * Records a process the agent has just started; its start time makes the record exact.
   * Synchronous on purpose: called right after the spawn, it leaves no turn of the event
   * loop in which the agent could die with the process running and unrecorded.
   */
  add(pid: number): void {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      return; // already gone
    }
    const started = startTimeOf(stat);
    if (started === undefined) return;
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    writeFileSync(join(this.dir, `${PREFIX}${pid}`), started);
  }

  async remove(pid: number): Promise<void> {
    await unlink(join(this.dir, `${PREFIX}${pid}`)).catch(() => undefined);
  }

  /**
   * Ends (SIGKILL, with its process group) every recorded process that is still the one
   * recorded, and forgets every record. Returns the pids it ended.
   */
  async endLeftovers(): Promise<number[]> {
    const ended: number[] = [];
    const names = await readdir(this.dir).catch(() => [] as string[]);
    for (const name of names) {
      if (!name.startsWith(PREFIX) || !/^\d+$/.test(name.slice(PREFIX.length))) continue;
      const pid = Number(name.slice(PREFIX.length));
      const recorded = (await readFile(join(this.dir, name), 'utf8').catch(() => '')).trim();
      if (recorded !== '' && recorded === (await startTime(pid))) {
        for (const target of [-pid, pid]) {
          try {
            process.kill(target, 'SIGKILL');
          } catch {
            // the group or the process is gone already
          }
        }
        ended.push(pid);
      }
      await rm(join(this.dir, name), { force: true });
    }
    return ended;
  }
}
