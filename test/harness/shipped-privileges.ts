// The privileges kube-pcap's workloads ship with, read from the rendered deploy/ manifests
// (`kubectl kustomize deploy/`), turned into the setpriv arguments that give a process on
// this machine the same user, group, capability bounding set and no_new_privs as the
// container runtime gives the container's process.
//
// Tests run as root with every capability; the agent does not. So the harness starts every
// agent through these arguments: a capture the shipped manifest cannot do fails in the tests
// too, and when the manifest and the agent's commands drift apart, the tests see it.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { loadAllYaml } from '@kubernetes/client-node';
import { controlPlaneBinDir, REPO_ROOT } from './control-plane.js';

const execFileP = promisify(execFile);

export interface ContainerPrivileges {
  /** The workload and container they were read from, for messages. */
  source: string;
  runAsUser: number;
  runAsGroup: number;
  /** Capabilities the container keeps (upper case, without CAP_), after drop and add. */
  capabilities: string[];
  /** allowPrivilegeEscalation: false sets no_new_privs. */
  noNewPrivs: boolean;
}

// What containerd and Docker give a container that drops nothing.
const RUNTIME_DEFAULT = ['CHOWN', 'DAC_OVERRIDE', 'FSETID', 'FOWNER', 'MKNOD', 'NET_RAW', 'SETGID', 'SETUID', 'SETFCAP', 'SETPCAP', 'NET_BIND_SERVICE', 'SYS_CHROOT', 'KILL', 'AUDIT_WRITE'];

// Manifests are free-form YAML; these are the few paths this module walks.
interface SecurityContext {
  runAsUser?: number;
  runAsGroup?: number;
  allowPrivilegeEscalation?: boolean;
  privileged?: boolean;
  capabilities?: { add?: string[]; drop?: string[] };
}
interface Workload {
  kind: string;
  metadata: { name: string };
  spec?: { template?: { spec?: { securityContext?: SecurityContext; containers?: { name: string; securityContext?: SecurityContext; resources?: { limits?: { memory?: string } } }[] } } };
}

let rendered: Promise<Workload[]> | undefined;

/** deploy/ as `kubectl apply -k deploy/` would send it (rendered once per process). */
export async function renderedDeploy(): Promise<Workload[]> {
  rendered ??= (async () => {
    const kubectl = join(controlPlaneBinDir(), 'kubectl');
    const { stdout } = await execFileP(kubectl, ['kustomize', join(REPO_ROOT, 'deploy')], { maxBuffer: 16 << 20 });
    return loadAllYaml(stdout) as Workload[];
  })();
  return await rendered;
}

/** The privileges of one container of a workload in the rendered manifests. */
export async function shippedPrivileges(kind: string, name: string, container: string): Promise<ContainerPrivileges> {
  const source = `${kind}/${name} container ${container}`;
  const w = (await renderedDeploy()).find((o) => o.kind === kind && o.metadata.name === name);
  const pod = w?.spec?.template?.spec;
  const c = pod?.containers?.find((x) => x.name === container);
  if (!pod || !c) throw new Error(`no ${source} in the rendered deploy/`);
  const sc: SecurityContext = { ...pod.securityContext, ...c.securityContext };
  if (sc.privileged) throw new Error(`${source} is privileged: this harness models capabilities, not privileged containers`);
  const runAsUser = sc.runAsUser;
  if (runAsUser === undefined) throw new Error(`${source} sets no runAsUser: the user would come from the image; set it in the manifest`);
  const drop = (sc.capabilities?.drop ?? []).map((x) => x.toUpperCase());
  const add = (sc.capabilities?.add ?? []).map((x) => x.toUpperCase());
  const base = drop.includes('ALL') ? [] : RUNTIME_DEFAULT.filter((x) => !drop.includes(x));
  const capabilities = [...new Set([...base, ...add])].sort();
  return { source, runAsUser, runAsGroup: sc.runAsGroup ?? 0, capabilities, noNewPrivs: sc.allowPrivilegeEscalation === false };
}

/** A container's memory limit in MiB, from the rendered manifests ("384Mi", "1Gi", bytes). */
export async function shippedMemoryLimitMiB(kind: string, name: string, container: string): Promise<number> {
  const w = (await renderedDeploy()).find((o) => o.kind === kind && o.metadata.name === name);
  const limit = w?.spec?.template?.spec?.containers?.find((x) => x.name === container)?.resources?.limits?.memory;
  const m = /^(\d+)(Mi|Gi|M|G)?$/.exec(limit ?? '');
  if (!m) throw new Error(`${kind}/${name} container ${container} has no memory limit this harness reads (${limit ?? 'none'})`);
  const n = Number(m[1]);
  return m[2] === 'Gi' ? n * 1024 : m[2] === 'G' ? (n * 1e9) / 2 ** 20 : m[2] === 'M' ? (n * 1e6) / 2 ** 20 : m[2] === 'Mi' ? n : n / 2 ** 20;
}

/** The agent container of the DaemonSet. */
export async function agentPrivileges(): Promise<ContainerPrivileges> {
  return await shippedPrivileges('DaemonSet', 'kube-pcap-agent', 'agent');
}

/**
 * setpriv arguments (before its `--`) that run a command as the container's process runs:
 * its user and group, no other groups, only its capabilities in the bounding set (for
 * uid 0 that is also what it gets as permitted and effective at exec; for another uid,
 * nothing, as under a container runtime without ambient capabilities), none inheritable
 * or ambient, and no_new_privs when the manifest asks for it.
 */
export function setprivArgs(p: ContainerPrivileges): string[] {
  const caps = p.capabilities.map((x) => `+${x.toLowerCase()}`);
  return [
    `--reuid=${p.runAsUser}`, `--regid=${p.runAsGroup}`, '--clear-groups',
    `--bounding-set=${['-all', ...caps].join(',')}`,
    '--inh-caps=-all', '--ambient-caps=-all',
    ...(p.noNewPrivs ? ['--no-new-privs'] : []),
  ];
}
