// Options every kube-pcap server shares: where it listens, its TLS, its API server, its logs.
import { type OptionTable, type OptionValues, UsageError, parseListen } from './options.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export function serverOptions(defaultPort: number, defaultPerAddress: number): OptionTable {
  return {
    listen: { type: 'string', metavar: 'HOST:PORT', default: `0.0.0.0:${defaultPort}`, help: 'Address and port to serve HTTPS on.' },
    'tls-cert-file': { type: 'string', metavar: 'FILE', help: 'Serving certificate (PEM); reloaded when the file changes.' },
    'tls-key-file': { type: 'string', metavar: 'FILE', help: 'Private key of the serving certificate (PEM); reloaded when the file changes.' },
    'dev-self-signed': { type: 'boolean', default: false, help: 'Development only: serve a throwaway self-signed certificate instead of --tls-cert-file/--tls-key-file.' },
    kubeconfig: { type: 'string', metavar: 'FILE', env: 'KUBECONFIG', help: 'kubeconfig to reach the API server; in a pod the ServiceAccount is used.' },
    'log-level': { type: 'string', metavar: 'LEVEL', default: 'info', help: `Log level: ${LOG_LEVELS.join(', ')}.` },
    'max-connections': { type: 'integer', default: 1024, min: 1, max: 1_000_000, help: 'Connections served at once; more are closed on arrival.' },
    'max-connections-per-address': { type: 'integer', default: defaultPerAddress, min: 0, max: 1_000_000, help: 'Connections one source address may hold at once, counted before TLS; more are closed on arrival (0: no cap). Loopback and trusted proxies stand for many clients and are not capped this way.' },
    'tls-handshake-timeout-seconds': { type: 'integer', default: 10, min: 1, max: 120, help: 'A connection that has not completed its TLS handshake by then is closed (the idle timeout starts after).' },
    'idle-timeout-seconds': { type: 'integer', default: 120, min: 5, max: 3600, help: 'A connection on which nothing moves for this long is closed (a client that stops reading a download; the gateway also gives up on an agent\'s answer that pauses this long). Live streams send something every 10 s.' },
  };
}

export interface ConnectionLimits {
  maxConnections: number;
  /** Connections per source address (0: no cap), except `sharedAddresses` and `trustedProxies`. */
  maxConnectionsPerAddress: number;
  /** Addresses that stand for many clients (the gateway's --shared-client-addresses). */
  sharedAddresses?: string[];
  /** Counts connections closed by the per-address cap (a metric). */
  onRefusedPerAddress?: () => void;
  handshakeTimeoutMs: number;
  /** Nothing moving on a connection this long closes it. */
  idleTimeoutMs: number;
  /** Proxies whose X-Forwarded-For names the client (the gateway's --trusted-proxies). */
  trustedProxies?: string[];
}

export interface ServerConfig {
  listen: { host: string; port: number };
  limits: ConnectionLimits;
  tls: { certFile: string; keyFile: string } | { selfSigned: true };
  kubeconfig: string | undefined;
  logLevel: LogLevel;
}

export function serverConfig(command: string, v: OptionValues): ServerConfig {
  const level = v['log-level'] as string;
  if (!(LOG_LEVELS as readonly string[]).includes(level)) throw new UsageError(`${command}: --log-level must be one of ${LOG_LEVELS.join(', ')}`);
  const listen = parseListen(command, v.listen as string);
  const cert = v['tls-cert-file'] as string | undefined;
  const key = v['tls-key-file'] as string | undefined;
  let tls: ServerConfig['tls'];
  if (v['dev-self-signed']) {
    if (cert || key) throw new UsageError(`${command}: --dev-self-signed and --tls-cert-file/--tls-key-file exclude each other`);
    tls = { selfSigned: true };
  } else if (cert && key) {
    tls = { certFile: cert, keyFile: key };
  } else {
    throw new UsageError(`${command}: TLS is required: give --tls-cert-file and --tls-key-file (or --dev-self-signed for development)`);
  }
  return {
    listen,
    limits: { maxConnections: v['max-connections'] as number, maxConnectionsPerAddress: v['max-connections-per-address'] as number, handshakeTimeoutMs: (v['tls-handshake-timeout-seconds'] as number) * 1000, idleTimeoutMs: (v['idle-timeout-seconds'] as number) * 1000 },
    tls,
    kubeconfig: v.kubeconfig as string | undefined,
    logLevel: level as LogLevel,
  };
}
