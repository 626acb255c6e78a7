// TEST DOUBLE, named as such: a stand-in for `kubectl port-forward service/<name> :<port>`.
// The harness has no kubelet, so a real port-forward cannot run; this stub accepts the same
// command line, records it, listens on 127.0.0.1 like kubectl does, prints kubectl's
// "Forwarding from" line, and relays each connection to KUBECTL_STUB_TARGET (the gateway).
// Anything but port-forward fails, so a test cannot lean on it by accident.
import { appendFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';

const args = process.argv.slice(2);
const log = process.env.KUBECTL_STUB_LOG;
if (log) appendFileSync(log, `${JSON.stringify({ pid: process.pid, args })}\n`);
const target = process.env.KUBECTL_STUB_TARGET;
if (!args.includes('port-forward') || !target) {
  process.stderr.write(`kubectl stub: only port-forward is implemented (args: ${args.join(' ')})\n`);
  process.exit(1);
}
const remote = args.find((a) => /^:?\d+$/.test(a) || /^\d+:\d+$/.test(a)) ?? '';
const [host, port] = target.split(':') as [string, string];
const server = createServer((client) => {
  const upstream = createConnection({ host, port: Number(port) });
  client.pipe(upstream).pipe(client);
  const close = (): void => {
    client.destroy();
    upstream.destroy();
  };
  client.on('error', close);
  upstream.on('error', close);
});
server.listen(0, '127.0.0.1', () => {
  const addr = server.address();
  if (typeof addr !== 'object' || !addr) process.exit(1);
  process.stdout.write(`Forwarding from 127.0.0.1:${addr.port} -> ${remote.split(':').pop()}\n`);
});
process.on('SIGTERM', () => process.exit(0));
