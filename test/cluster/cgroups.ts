// The cgroups of the test cluster's nodes. This machine mounts cgroup v1, one hierarchy
// per controller, shared with everything else on it: each node's kubelet gets its own
// root (`cgroupRoot: /kube-pcap-<node>`), made here in every hierarchy before kubelet
// starts, and removed (deepest first) once nothing runs in it. The sandbox that runs the
// tests removes every `kube-pcap-*` root again when it ends (scripts/sandbox.sh), so a run
// that is killed leaves no cgroup behind either.
import { readdir, readFile, rmdir, mkdir, writeFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

const CGROUP_FS = '/sys/fs/cgroup';

/** The mounted v1 hierarchies (cpu, memory, pids, name=systemd, ...), as directories. */
export async function hierarchies(): Promise<string[]> {
  const mounts = await readFile('/proc/self/mounts', 'utf8');
  return mounts.split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[2] === 'cgroup' && f[1]?.startsWith(`${CGROUP_FS}/`))
    .map((f) => f[1]!);
}

/** Makes `/<name>` in every hierarchy; cpuset's needs its cpus and mems before use. */
export async function createRoot(name: string): Promise<void> {
  for (const h of await hierarchies()) {
    const dir = join(h, name);
    await mkdir(dir, { recursive: true });
    if (h.endsWith('/cpuset')) {
      for (const f of ['cpuset.cpus', 'cpuset.mems']) {
        const current = (await readFile(join(dir, f), 'utf8')).trim();
        if (current === '') await writeFile(join(dir, f), (await readFile(join(h, f), 'utf8')).trim());
      }
    }
  }
}

/** Every process in `/<name>` and below, in any hierarchy. */
export async function processesIn(name: string): Promise<number[]> {
  const pids = new Set<number>();
  const walk = async (dir: string): Promise<void> => {
    const text = await readFile(join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
    for (const l of text.split('\n')) if (l.trim() !== '') pids.add(Number(l));
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    for (const e of entries) if (e.isDirectory()) await walk(join(dir, e.name));
  };
  for (const h of await hierarchies()) await walk(join(h, name));
  return [...pids];
}

/** Removes `/<name>` in every hierarchy, children first. Fails while a process is in it. */
export async function removeRoot(name: string): Promise<void> {
  const remove = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    for (const e of entries) if (e.isDirectory()) await remove(join(dir, e.name));
    await rmdir(dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw new Error(`rmdir ${dir}: ${err.message}`);
    });
  };
  for (const h of await hierarchies()) {
    if (await stat(join(h, name)).catch(() => undefined)) await remove(join(h, name));
  }
}

/** The names of the roots this project made, found in any hierarchy. */
export async function ourRoots(prefix = 'kube-pcap-'): Promise<string[]> {
  const names = new Set<string>();
  for (const h of await hierarchies()) {
    for (const e of await readdir(h, { withFileTypes: true }).catch(() => [])) if (e.isDirectory() && e.name.startsWith(prefix)) names.add(e.name);
  }
  return [...names];
}
