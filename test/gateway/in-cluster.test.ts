// The gateway as it runs in a pod: no --kubeconfig, the API server from
// KUBERNETES_SERVICE_HOST/PORT, its ServiceAccount's token and CA from the standard mount
// /var/run/secrets/kubernetes.io/serviceaccount (given here by a private mount namespace
// of its own, like the kubelet's volume).
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { NODE_FLAGS } from '../../src/node-flags.js';
import { cluster } from '../harness/cluster.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { https } from '../harness/http.js';
import { AGENT_SERVER_NAME, AGENTS_NAMESPACE, CLI, scratchDir, SYSTEM_NAMESPACE } from '../harness/kube-pcap.js';
import { OwnedProcess } from '../harness/processes.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await storefrontWorld(t, c);
await w.grantFiles();

t.test('in-cluster configuration: the pod\'s ServiceAccount, no kubeconfig', async (t) => {
  const dir = await scratchDir(t, 'in-cluster');
  await writeFile(join(dir, 'token'), await c.tokenFor(SYSTEM_NAMESPACE, 'kube-pcap-gateway', { expirationSeconds: 3600 }));
  await copyFile(c.info.caFile, join(dir, 'ca.crt'));
  await writeFile(join(dir, 'agent-token'), await c.tokenFor(SYSTEM_NAMESPACE, 'kube-pcap-gateway', { audience: 'kube-pcap-agent' }));
  const sa = '/var/run/secrets/kubernetes.io/serviceaccount';
  const script = [
    'set -e',
    'mount -t tmpfs kube-pcap-run /run',
    `mkdir -p ${sa}`,
    `cp ${join(dir, 'token')} ${join(dir, 'ca.crt')} ${sa}/`,
    `exec ${process.execPath} ${NODE_FLAGS.join(' ')} ${CLI} gateway --listen=127.0.0.1:0 --ops-listen=127.0.0.1:0 --tls-cert-file=${w.pki.gateway.certFile} --tls-key-file=${w.pki.gateway.keyFile} --agent-service=${AGENTS_NAMESPACE}/${w.agentService} --agent-ca-file=${w.pki.ca.certFile} --agent-server-name=${AGENT_SERVER_NAME} --agent-token-file=${join(dir, 'agent-token')} --agent-client-cert-file=${w.pki.gatewayClient.certFile} --agent-client-key-file=${w.pki.gatewayClient.keyFile}`,
  ].join('\n');
  const logFile = join(dir, 'gateway.log');
  const env: NodeJS.ProcessEnv = { ...process.env, KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(c.info.port) };
  delete env.KUBECONFIG;
  const gw = new OwnedProcess('unshare', ['--mount', '--propagation', 'private', '--', 'bash', '-c', script], { name: 'in-cluster gateway', logFile, env });
  t.teardown(() => gw.stop());
  const [port, opsPort] = await waitFor(async () => {
    if (!gw.running) throw await gw.failure('exited');
    const lines = (await readFile(logFile, 'utf8')).split('\n').filter((l) => l.includes('Server listening at'));
    const portOf = (ops: boolean) => /https:\/\/127\.0\.0\.1:(\d+)/.exec(lines.find((l) => l.includes('"listener":"ops"') === ops) ?? '')?.[1];
    const api = portOf(false);
    const o = portOf(true);
    return api && o ? [Number(api), Number(o)] : undefined;
  }, { what: 'the in-cluster gateway to listen', timeoutMs: 20_000 });
  const url = `https://127.0.0.1:${port}`;
  await waitFor(async () => (await https(`https://127.0.0.1:${opsPort}/readyz`, { caFile: w.pki.ca.certFile })).status === 200, { what: 'ready: the API server answers its ServiceAccount', timeoutMs: 20_000 });
  const res = await waitFor(async () => {
    const r = await https(`${url}/packet-capture/files/${w.ns}/${CAPTURE}`, { caFile: w.pki.ca.certFile, token: w.devopsToken });
    return r.status === 200 ? r : undefined;
  }, { what: 'an authorized listing through the in-cluster gateway', timeoutMs: 15_000 });
  t.equal(res.json<{ files: unknown[] }>().files.length, w.files.size, 'reviews and lookups made with the pod\'s ServiceAccount');
});
