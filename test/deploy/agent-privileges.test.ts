// The agent captures with exactly the privileges deploy/ gives its container, and needs
// every one of them. The capability set, user and no_new_privs are read from the rendered
// manifest (test/harness/shipped-privileges.ts) — every agent the tests start runs under
// them — and this file checks that the processes really run so, that a capture works
// (real tcpdump, real packets in a network namespace, read back with tshark), and that
// without any single one of the capabilities it does not.
import { readFile, readdir } from 'node:fs/promises';
import t from 'tap';
import { cluster } from '../harness/cluster.js';
import { allPackets, captureWorld, dig, readCaptureDir } from '../harness/capture-fixture.js';
import { agentPrivileges, type ContainerPrivileges } from '../harness/shipped-privileges.js';
import type { TapTest } from '../harness/tap.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const shipped = await agentPrivileges();
const w = await captureWorld(t, c, { nodes: 1, agents: false });
const node = w.nodes[0]!;
const pod = await w.addPod(node, 'logging-a', { app: 'logging' });

// capabilities(7) numbers, for reading /proc/<pid>/status masks.
const CAP_NUMBERS: Record<string, number> = {
  CHOWN: 0, DAC_OVERRIDE: 1, DAC_READ_SEARCH: 2, FOWNER: 3, FSETID: 4, KILL: 5, SETGID: 6, SETUID: 7, SETPCAP: 8,
  LINUX_IMMUTABLE: 9, NET_BIND_SERVICE: 10, NET_BROADCAST: 11, NET_ADMIN: 12, NET_RAW: 13, IPC_LOCK: 14, IPC_OWNER: 15,
  SYS_MODULE: 16, SYS_RAWIO: 17, SYS_CHROOT: 18, SYS_PTRACE: 19, SYS_PACCT: 20, SYS_ADMIN: 21, SYS_BOOT: 22, SYS_NICE: 23,
  SYS_RESOURCE: 24, SYS_TIME: 25, SYS_TTY_CONFIG: 26, MKNOD: 27, LEASE: 28, AUDIT_WRITE: 29, AUDIT_CONTROL: 30, SETFCAP: 31,
  MAC_OVERRIDE: 32, MAC_ADMIN: 33, SYSLOG: 34, WAKE_ALARM: 35, BLOCK_SUSPEND: 36, AUDIT_READ: 37, PERFMON: 38, BPF: 39, CHECKPOINT_RESTORE: 40,
};

function capNames(mask: bigint): string[] {
  return Object.entries(CAP_NUMBERS).filter(([, n]) => (mask >> BigInt(n)) & 1n).map(([name]) => name).sort();
}

interface ProcCreds { uid: string; effective: string[]; bounding: string[]; noNewPrivs: boolean }

async function creds(pid: number): Promise<ProcCreds> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const field = (k: string): string => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(status)?.[1] ?? '';
  return {
    uid: field('Uid').split(/\s+/)[0]!,
    effective: capNames(BigInt(`0x${field('CapEff')}`)),
    bounding: capNames(BigInt(`0x${field('CapBnd')}`)),
    noNewPrivs: field('NoNewPrivs') === '1',
  };
}

async function childrenNamed(pid: number, comm: string): Promise<number[]> {
  const out: number[] = [];
  for (const task of await readdir(`/proc/${pid}/task`).catch(() => [] as string[])) {
    const kids = (await readFile(`/proc/${pid}/task/${task}/children`, 'utf8').catch(() => '')).trim().split(/\s+/).filter(Boolean).map(Number);
    for (const k of kids) if ((await readFile(`/proc/${k}/comm`, 'utf8').catch(() => '')).trim() === comm) out.push(k);
  }
  return out;
}

async function capture(t: TapTest, name: string): Promise<void> {
  await w.applyCapture(name, '  selector: app == "logging"\n  filters: [{protocol: UDP, ports: [53]}]');
  t.teardown(() => c.custom.deleteNamespacedCustomObject({ group: 'projectcalico.org', version: 'v3', namespace: w.ns, plural: 'packetcaptures', name }));
}

t.test('the manifest asks for the least that capture needs', async (t) => {
  t.same(shipped.capabilities, ['NET_RAW', 'SETGID'], `${shipped.source}: capabilities`);
  t.equal(shipped.runAsUser, 0, 'root, to write the node\'s capture directory');
  t.equal(shipped.noNewPrivs, true, 'allowPrivilegeEscalation: false');
});

t.test('under exactly those privileges the agent and its tcpdump capture real packets', async (t) => {
  const agent = await w.startAgent(node);
  t.teardown(() => agent.proc.stop());
  await capture(t, 'shipped');
  await w.waitForState('shipped', 'node-1', 'WaitingForTraffic');

  const want = { uid: String(shipped.runAsUser), effective: shipped.capabilities, bounding: shipped.capabilities, noNewPrivs: shipped.noNewPrivs };
  t.same(await creds(agent.proc.pid), want, 'the agent process');
  const [tcpdump] = await waitFor(async () => {
    const pids = await childrenNamed(agent.proc.pid, 'tcpdump');
    return pids.length > 0 ? pids : undefined;
  }, { what: 'the agent\'s tcpdump', timeoutMs: 10_000 });
  t.same(await creds(tcpdump!), want, 'its tcpdump, still able to take the agent\'s signals (stats, stop)');

  // Promiscuous mode, which tcpdump asks for through its packet socket, needs no NET_ADMIN.
  const [link] = JSON.parse(await node.ns.exec('ip', ['-j', '-d', 'link', 'show', 'dev', pod.hostIface])) as { promiscuity?: number }[];
  t.ok((link?.promiscuity ?? 0) >= 1, `the pod's interface ${pod.hostIface} is in promiscuous mode (promiscuity ${link?.promiscuity})`);

  for (let i = 0; i < 3; i++) await dig(pod, w.dns.ip, `shipped-${i}.storefront.example`);
  await w.waitForState('shipped', 'node-1', 'Capturing');
  const queries = await waitFor(async () => {
    const q = allPackets(await readCaptureDir(w.captureDir('node-1', 'shipped'))).map((p) => p.query).filter((x) => x.startsWith('shipped-'));
    return q.length >= 6 ? q : undefined;
  }, { what: 'queries and answers in the files', timeoutMs: 15_000 });
  t.same([...new Set(queries)].sort(), [0, 1, 2].map((i) => `shipped-${i}.storefront.example`), 'tshark reads every query from the files');
});

t.test('without any one of those capabilities, capture fails with tcpdump\'s reason and a hint', async (t) => {
  for (const missing of shipped.capabilities) {
    await t.test(`without ${missing}`, async (t) => {
      const less: ContainerPrivileges = { ...shipped, capabilities: shipped.capabilities.filter((x) => x !== missing) };
      const agent = await w.startAgent(node, [], undefined, less);
      t.teardown(() => agent.proc.stop());
      const name = `without-${missing.toLowerCase().replace(/_/g, '-')}`;
      await capture(t, name);
      const e = await w.waitForState(name, 'node-1', 'Error');
      t.match(e.message, /tcpdump: .*(Operation not permitted|permission)/i, `${missing}: tcpdump says why`);
      t.match(e.message, /needs the capabilities NET_RAW and SETGID/, 'and the agent says what its container needs');
    });
  }
});
