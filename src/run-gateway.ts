// `kube-pcap gateway`: wires the configuration to the HTTPS applications (the API and the
// operations listener) and runs them until SIGTERM/SIGINT, then drains. It composes the
// gateway with the exporter (src/export/), which is built on the gateway's reading of
// captures: above both, so neither imports the other's dependents.
import type { GatewayConfig } from './config/gateway.js';
import { exporterWork } from './export/exporter.js';
import { buildGatewayApp } from './gateway/app.js';
import { serveUntilSignal } from './http/serve.js';
import { loadTls, withClientCa } from './http/tls.js';
import { connect } from './kube/config.js';
import { createLogger } from './log/logger.js';

export async function runGateway(config: GatewayConfig): Promise<void> {
  const log = createLogger(config.logLevel, 'kube-pcap-gateway');
  const kube = await connect(config.kubeconfig);
  const tls = await withClientCa(await loadTls(config.tls, 'kube-pcap-gateway', log), config.clientCaFile, '--client-ca-file');
  const { api, ops } = await buildGatewayApp({ config, kube, log, tls, leaderWork: config.exports.enabled ? [exporterWork] : [] });
  try {
    await serveUntilSignal([{ app: api, listen: config.listen }, { app: ops, listen: config.opsListen }], tls, log);
  } finally {
    await kube.close();
  }
}
