// Child processes that cannot outlive the test process that started them.
//
// Every long-running helper (etcd, kube-apiserver, agents, gateways, tcpdump, dnsmasq,
// netns holders) is started through `setpriv --pdeathsig KILL`, so the kernel kills it
// when its parent dies, however the parent dies (test failure, timeout, SIGKILL).
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';

export interface OwnedProcessOptions {
  /** Name used in error messages. */
  name: string;
  /** stdout and stderr are appended here; the tail is shown when the process fails. */
  logFile: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Run inside the network namespace of this process id (see netns.ts). */
  netnsPid?: number;
  /** Run inside the mount namespace of this process id (a test cluster's node, test/cluster). */
  mntnsPid?: number;
  /** Keep stdout as a pipe instead of logging it (e.g. to read pcap data). */
  pipeStdout?: boolean;
  /**
   * setpriv arguments the command runs under (see shipped-privileges.ts), applied after
   * entering the network namespace: nsenter itself needs the privileges these take away.
   */
  privileges?: string[];
}

export class OwnedProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private readonly log: WriteStream;

  constructor(readonly command: string, readonly args: string[], readonly opts: OwnedProcessOptions) {
    const prefix = ['--pdeathsig', 'KILL', '--'];
    const enter = [
      ...(opts.netnsPid !== undefined ? [`--net=/proc/${opts.netnsPid}/ns/net`] : []),
      ...(opts.mntnsPid !== undefined ? [`--mount=/proc/${opts.mntnsPid}/ns/mnt`] : []),
    ];
    const netns = enter.length > 0 ? ['nsenter', ...enter, '--'] : [];
    // Dropping privileges keeps the parent-death signal: the kernel clears it only when
    // credentials change to something that is not a subset of the old ones.
    const privileges = opts.privileges ? ['setpriv', ...opts.privileges, '--'] : [];
    this.log = createWriteStream(opts.logFile, { flags: 'a' });
    this.child = spawn('setpriv', [...prefix, ...netns, ...privileges, command, ...args], {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    if (!opts.pipeStdout) this.child.stdout?.pipe(this.log, { end: false });
    this.child.stderr?.pipe(this.log, { end: false });
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
      });
      this.child.once('error', (err) => {
        this.log.write(`spawn error: ${err.message}\n`);
        this.exitInfo = { code: -1, signal: null };
        resolve(this.exitInfo);
      });
    });
  }

  get pid(): number {
    if (this.child.pid === undefined) throw new Error(`${this.opts.name} has no pid (spawn failed)`);
    return this.child.pid;
  }

  get running(): boolean {
    return this.exitInfo === undefined;
  }

  /** SIGTERM, then SIGKILL after graceMs. Resolves when the process is gone. */
  async stop(graceMs = 5000, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (this.running) {
      this.child.kill(signal);
      const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
      await this.exited;
      clearTimeout(timer);
    }
    await new Promise<void>((resolve) => this.log.end(resolve));
  }

  async kill(): Promise<void> {
    if (this.running) this.child.kill('SIGKILL');
    await this.exited;
  }

  async logTail(lines = 40): Promise<string> {
    const text = await readFile(this.opts.logFile, 'utf8').catch(() => '');
    return text.split('\n').slice(-lines).join('\n');
  }

  /** An error that says what the process printed last. */
  async failure(message: string): Promise<Error> {
    return new Error(`${this.opts.name}: ${message}\n--- last lines of ${this.opts.logFile} ---\n${await this.logTail()}`);
  }
}

/** A process's resident memory now, in bytes (VmRSS of /proc/<pid>/status). */
export async function rssBytes(pid: number): Promise<number> {
  const m = /^VmRSS:\s+(\d+)/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for process ${pid}`);
  return Number(m[1]) * 1024;
}
