// `kube-pcap gateway`: wires the configuration to the HTTPS applications (the API and the
// operations listener) and runs them until SIGTERM/SIGINT, then drains.
import type { GatewayConfig } from '../config/gateway.js';
import { serveUntilSignal } from '../http/serve.js';
import { loadTls, withClientCa } from '../http/tls.js';
import { connect } from '../kube/config.js';
import { createLogger } from '../log/logger.js';
import { buildGatewayApp } from './app.js';

export async function runGateway(config: GatewayConfig): Promise<void> {
  const log = createLogger(config.logLevel, 'kube-pcap-gateway');
  const kube = await connect(config.kubeconfig);
  const tls = await withClientCa(await loadTls(config.tls, 'kube-pcap-gateway', log), config.clientCaFile, '--client-ca-file');
  const { api, ops } = await buildGatewayApp({ config, kube, log, tls });
  try {
    await serveUntilSignal([{ app: api, listen: config.listen }, { app: ops, listen: config.opsListen }], tls, log);
  } finally {
    await kube.close();
  }
}
