// What tests get from the control plane: an admin client, YAML apply, namespaces,
// ServiceAccounts and real tokens.
//
// One control plane serves the whole run (`npm test` starts it and passes its address in
// KUBE_PCAP_TEST_CLUSTER). A test file run on its own starts a private one. Tests that stop
// the API server ask for a private one explicitly, so they never disturb their neighbours.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AuthenticationV1Api,
  AuthorizationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  DiscoveryV1Api,
  KubeConfig,
  KubernetesObjectApi,
  loadAllYaml,
  PatchStrategy,
  RbacAuthorizationV1Api,
  type KubernetesObject,
  type V1ResourceAttributes,
} from '@kubernetes/client-node';
import type { KubeClient } from '../../src/kube/client.js';
import { connect } from '../../src/kube/config.js';
import { ControlPlane, type ControlPlaneInfo, type ControlPlaneOptions } from './control-plane.js';

export interface Teardown {
  teardown(fn: () => unknown): void;
}

export interface ApplyOptions {
  /** Put namespaced objects (and ServiceAccount subjects) of namespace `from` into `to`. */
  renameNamespace?: { from: string; to: string };
  /** Run as this bearer token instead of the admin. */
  token?: string;
}

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

export class TestCluster {
  readonly kc: KubeConfig;
  readonly core: CoreV1Api;
  readonly rbac: RbacAuthorizationV1Api;
  readonly custom: CustomObjectsApi;
  readonly authn: AuthenticationV1Api;
  readonly authz: AuthorizationV1Api;
  readonly discovery: DiscoveryV1Api;
  readonly objects: KubernetesObjectApi;

  constructor(readonly info: ControlPlaneInfo, readonly controlPlane?: ControlPlane) {
    this.kc = new KubeConfig();
    this.kc.loadFromFile(info.kubeconfig);
    this.core = this.kc.makeApiClient(CoreV1Api);
    this.rbac = this.kc.makeApiClient(RbacAuthorizationV1Api);
    this.custom = this.kc.makeApiClient(CustomObjectsApi);
    this.authn = this.kc.makeApiClient(AuthenticationV1Api);
    this.authz = this.kc.makeApiClient(AuthorizationV1Api);
    this.discovery = this.kc.makeApiClient(DiscoveryV1Api);
    this.objects = KubernetesObjectApi.makeApiClient(this.kc);
  }

  private restClient: Promise<KubeClient> | undefined;

  /** kube-pcap's own REST client, as the admin (for subresources such as pods/status). */
  async rest(): Promise<KubeClient> {
    this.restClient ??= connect(this.info.kubeconfig);
    return await this.restClient;
  }

  /** A KubeConfig that authenticates with a bearer token (e.g. a ServiceAccount's). */
  kubeConfigForToken(token: string): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'test', server: this.info.server, caFile: this.info.caFile }],
      users: [{ name: 'token', token }],
      contexts: [{ name: 'test', cluster: 'test', user: 'token' }],
      currentContext: 'test',
    });
    return kc;
  }

  /** kubectl from the same build as the API server, as the admin unless a token is given. */
  async kubectl(args: string[], opts: { input?: string; token?: string; cwd?: string } = {}): Promise<KubectlResult> {
    const auth = opts.token
      ? ['--server', this.info.server, '--certificate-authority', this.info.caFile, '--token', opts.token, '--kubeconfig', '/dev/null']
      : ['--kubeconfig', this.info.kubeconfig];
    return await new Promise((resolve) => {
      const child = execFile(join(this.info.binDir, 'kubectl'), [...auth, ...args], { cwd: opts.cwd, maxBuffer: 32 << 20 }, (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
        resolve({ code, stdout, stderr });
      });
      child.stdin?.end(opts.input ?? '');
    });
  }

  /** Server-side applies every object of a YAML file, in order. */
  async applyYaml(file: string, opts: ApplyOptions = {}): Promise<KubernetesObject[]> {
    return await this.applyManifest(await readFile(file, 'utf8'), opts);
  }

  /** Server-side applies every object of YAML text, in order. */
  async applyManifest(yaml: string, opts: ApplyOptions = {}): Promise<KubernetesObject[]> {
    const objects = (loadAllYaml(yaml) as (KubernetesObject | null)[]).filter((o): o is KubernetesObject => o !== null);
    const api = opts.token ? KubernetesObjectApi.makeApiClient(this.kubeConfigForToken(opts.token)) : this.objects;
    const applied: KubernetesObject[] = [];
    for (const obj of objects) {
      if (opts.renameNamespace) renameNamespace(obj, opts.renameNamespace.from, opts.renameNamespace.to);
      applied.push(await api.patch(obj, undefined, undefined, 'kube-pcap-test', true, PatchStrategy.ServerSideApply));
    }
    return applied;
  }

  /** A fresh namespace (with the "default" ServiceAccount a controller-manager would add). */
  async createNamespace(prefix = 'test', exactName?: string): Promise<string> {
    const name = exactName ?? uniqueName(prefix);
    await this.core.createNamespace({ body: { metadata: { name } } });
    await this.createServiceAccount(name, 'default');
    return name;
  }

  async createServiceAccount(namespace: string, name: string): Promise<void> {
    await this.core.createNamespacedServiceAccount({ namespace, body: { metadata: { name } } });
  }

  /**
   * A real bound token from the TokenRequest API. With `boundNode`, bound to that Node object
   * as a kubelet's Pod-bound token is to its Pod's node: the API server then names the node
   * in the user's extra `authentication.kubernetes.io/node-name`.
   */
  async tokenFor(namespace: string, serviceAccount: string, opts: { audience?: string; expirationSeconds?: number; boundNode?: string } = {}): Promise<string> {
    const bound = opts.boundNode === undefined ? undefined : await this.core.readNode({ name: opts.boundNode });
    const res = await this.core.createNamespacedServiceAccountToken({
      name: serviceAccount,
      namespace,
      body: {
        spec: {
          audiences: opts.audience ? [opts.audience] : [],
          expirationSeconds: opts.expirationSeconds ?? 3600,
          ...(bound ? { boundObjectRef: { apiVersion: 'v1', kind: 'Node', name: bound.metadata!.name!, uid: bound.metadata!.uid! } } : {}),
        },
      },
    });
    const token = res.status?.token;
    if (!token) throw new Error(`TokenRequest for ${namespace}/${serviceAccount} returned no token`);
    return token;
  }

  /** SubjectAccessReview for a ServiceAccount, as the API server's authorizer answers it. */
  async serviceAccountCan(namespace: string, serviceAccount: string, attrs: V1ResourceAttributes): Promise<boolean> {
    const res = await this.authz.createSubjectAccessReview({
      body: {
        spec: {
          user: `system:serviceaccount:${namespace}:${serviceAccount}`,
          groups: ['system:serviceaccounts', `system:serviceaccounts:${namespace}`, 'system:authenticated'],
          resourceAttributes: attrs,
        },
      },
    });
    return res.status?.allowed === true;
  }
}

export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(3).toString('hex')}`;
}

function renameNamespace(obj: KubernetesObject, from: string, to: string): void {
  if (obj.metadata?.namespace === from) obj.metadata.namespace = to;
  if (obj.kind === 'Namespace' && obj.metadata?.name === from) obj.metadata.name = to;
  const subjects = (obj as { subjects?: { kind: string; namespace?: string; name: string }[] }).subjects;
  for (const s of subjects ?? []) if (s.namespace === from) s.namespace = to;
}

let shared: Promise<TestCluster> | undefined;

/**
 * The run's shared control plane, or a private one when the file runs on its own.
 * CRD and other cluster-wide setup are the caller's (idempotent applies).
 */
export async function cluster(t: Teardown): Promise<TestCluster> {
  const infoFile = process.env.KUBE_PCAP_TEST_CLUSTER;
  if (infoFile) {
    shared ??= readFile(infoFile, 'utf8').then((text) => new TestCluster(JSON.parse(text) as ControlPlaneInfo));
    return await shared;
  }
  return await privateCluster(t);
}

/** A control plane of one's own, for tests that stop or restart the API server. */
export async function privateCluster(t: Teardown, opts: ControlPlaneOptions = {}): Promise<TestCluster> {
  const sandboxed = process.env.KUBE_PCAP_SANDBOX === '1';
  const cp = await ControlPlane.start({
    bindAddress: sandboxed ? '0.0.0.0' : '127.0.0.1',
    extraAddresses: sandboxed && process.env.KUBE_PCAP_BRIDGE_IP ? [process.env.KUBE_PCAP_BRIDGE_IP] : [],
    ...opts,
  });
  t.teardown(() => cp.stop());
  return new TestCluster(cp.info, cp);
}
