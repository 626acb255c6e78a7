// `kube-pcap gateway`: wires the configuration to the HTTPS application and runs it until
// SIGTERM/SIGINT, then drains.
import type { Server } from 'node:https';
import type { GatewayConfig } from '../config/gateway.js';
import { loadTls, watchTls } from '../http/tls.js';
import { connect } from '../kube/config.js';
import { createLogger } from '../log/logger.js';
import { buildGatewayApp } from './app.js';

export async function runGateway(config: GatewayConfig): Promise<void> {
  const log = createLogger(config.logLevel, 'kube-pcap-gateway');
  const kube = await connect(config.kubeconfig);
  const tls = await loadTls(config.tls, 'kube-pcap-gateway', log);
  const app = await buildGatewayApp({ config, kube, log, tls });
  const stopTlsWatch = watchTls(app.server as Server, tls, log);
  await app.listen({ host: config.listen.host, port: config.listen.port });
  await waitForSignal(log);
  stopTlsWatch();
  await app.close();
  await kube.close();
}

export async function waitForSignal(log: { info(obj: object, msg: string): void }): Promise<void> {
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  log.info({ signal }, 'shutting down');
}
