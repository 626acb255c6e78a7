// `kube-pcap agent`: one per node. Serves this node's capture files to the gateway.
import { mkdir } from 'node:fs/promises';
import type { Server } from 'node:https';
import { Registry } from 'prom-client';
import type { AgentConfig } from '../config/agent.js';
import { waitForSignal } from '../gateway/main.js';
import { loadTls, watchTls } from '../http/tls.js';
import { connect } from '../kube/config.js';
import { createLogger } from '../log/logger.js';
import { buildAgentApp } from './app.js';
import { CaptureStore } from './capture-store.js';

export async function runAgent(config: AgentConfig): Promise<void> {
  const log = createLogger(config.logLevel, 'kube-pcap-agent').child({ node: config.nodeName });
  const kube = await connect(config.kubeconfig);
  await mkdir(config.captureDir, { recursive: true, mode: 0o700 });
  const tls = await loadTls(config.tls, 'kube-pcap-agent', log);
  const registry = new Registry();
  const store = new CaptureStore(config.captureDir);
  const app = await buildAgentApp({
    kube, log, tls, registry, store,
    activity: { isCapturing: () => false, filesDeleted: () => undefined },
    authAudience: config.authAudience,
    apiTimeoutMs: config.apiTimeoutMs,
    notReadyReason: async () => {
      try {
        await kube.request({ path: '/version', timeoutMs: 2000 });
        return undefined;
      } catch (err) {
        return `the API server does not answer (${(err as Error).message})`;
      }
    },
  });
  const stopTlsWatch = watchTls(app.server as Server, tls, log);
  await app.listen({ host: config.listen.host, port: config.listen.port });
  await waitForSignal(log);
  stopTlsWatch();
  await app.close();
  await kube.close();
}
