// kubectl-pcap: the PacketCapture workflow as a kubectl plugin (`kubectl pcap ...`). Flags
// follow kubectl's conventions: -n/--namespace, -A, --context, --kubeconfig, -o for the
// output format only; exit 0 on success, 1 on failure, 2 on a usage mistake.
import { KUBE_PCAP_VERSION } from '../version.js';
import { cleanCommand, deleteCommand, stopCommand } from './commands/lifecycle.js';
import { isExtcapInvocation } from './extcap-detect.js';
import { createCommand } from './commands/create.js';
import { describeCommand, getCommand, listCommand } from './commands/show.js';
import { downloadCommand } from './commands/download.js';
import { streamCommand } from './commands/stream.js';
import { waitCommand } from './commands/wait.js';
import { exportCommand } from './commands/export.js';
import { DEFAULT_GATEWAY_SERVICE, DEFAULT_TOKEN_AUDIENCE, openGateway, tokenAudience, type Gateway } from './gateway-access.js';
import type { CommandSpec, FlagSpec, FlagValue, Invocation } from './invocation.js';
import { loadKubeContext, type KubeContext } from './kube-context.js';
import { PluginError, PluginUsageError } from './plugin-error.js';
import { readArgv, UsageError } from '../config/options.js';

const COMMANDS: Record<string, CommandSpec> = {
  create: createCommand,
  get: getCommand,
  list: listCommand,
  describe: describeCommand,
  wait: waitCommand,
  download: downloadCommand,
  stream: streamCommand,
  export: exportCommand,
  stop: stopCommand,
  delete: deleteCommand,
  clean: cleanCommand,
};

const GLOBAL_FLAGS: Record<string, FlagSpec> = {
  namespace: { type: 'string', short: 'n', metavar: 'NS', help: 'The namespace (default: the context\'s namespace, else "default").' },
  context: { type: 'string', metavar: 'NAME', help: 'The kubeconfig context to use (default: the current context).' },
  kubeconfig: { type: 'string', metavar: 'FILE', help: 'The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).' },
  gateway: { type: 'string', metavar: 'URL', help: 'The gateway\'s https:// URL, e.g. through an Ingress (default: $KUBE_PCAP_GATEWAY, else kubectl port-forward to the gateway Service).' },
  'gateway-service': { type: 'string', metavar: 'NS/NAME', help: `The gateway Service to port-forward to (default ${DEFAULT_GATEWAY_SERVICE}).` },
  'gateway-ca-file': { type: 'string', metavar: 'FILE', help: 'With --gateway: a CA for its certificate besides the system\'s.' },
  'insecure-skip-tls-verify': { type: 'boolean', help: 'Do not verify the gateway\'s certificate (anyone on the path could read your token). Never the default.' },
  'trust-gateway-url': { type: 'boolean', help: 'Send your credentials to a --gateway URL that the cluster does not publish (ConfigMap kube-pcap-gateway-ca, key urls).' },
  'token-audience': { type: 'string', metavar: 'AUD', help: `A ServiceAccount that may mint tokens for itself presents a one-hour token for this audience only (default ${DEFAULT_TOKEN_AUDIENCE}; "-": the kubeconfig's credential as it is).` },
  help: { type: 'boolean', short: 'h', help: 'Show this help.' },
};

function flagLine(name: string, spec: FlagSpec): string {
  const left = `${spec.short ? `-${spec.short}, ` : '    '}--${name}${spec.type !== 'boolean' ? `=${spec.metavar ?? 'VALUE'}` : ''}`;
  return `  ${left.padEnd(34)} ${spec.help}`;
}

function topHelp(): string {
  const names = Object.keys(COMMANDS);
  return [
    'kubectl pcap: capture pods\' traffic with PacketCaptures (projectcalico.org/v3) and get the packets.',
    '',
    'Usage: kubectl pcap <command> [NAME] [flags]',
    '',
    'Commands:',
    ...names.map((n) => `  ${n.padEnd(10)} ${COMMANDS[n]!.short}`),
    '',
    'Examples:',
    '  kubectl pcap create dns -n storefront -l app=logging --filter udp:53 --duration 10m',
    '  kubectl pcap wait dns -n storefront --for=capturing',
    '  kubectl pcap download dns -n storefront -w dns.pcapng',
    '  kubectl pcap stream dns -n storefront --wireshark',
    '  kubectl pcap export dns -n storefront --to s3://captures/incident-4711 --credentials s3-credentials',
    '',
    'Global flags:',
    ...Object.entries(GLOBAL_FLAGS).map(([n, s]) => flagLine(n, s)),
    '',
    'Run "kubectl pcap <command> --help" for a command\'s flags. Needs Node.js 22.19 or later.',
    '',
  ].join('\n');
}

function commandHelp(name: string, c: CommandSpec): string {
  return [
    c.long ?? c.short,
    '',
    `Usage: kubectl pcap ${c.usage}`,
    '',
    'Examples:',
    ...c.examples.map((e) => `  ${e}`),
    '',
    ...(Object.keys(c.flags).length ? ['Flags:', ...Object.entries(c.flags).map(([n, s]) => flagLine(n, s)), ''] : []),
    'Global flags:',
    ...Object.entries(GLOBAL_FLAGS).map(([n, s]) => flagLine(n, s)),
    '',
  ].join('\n');
}

function parseCommandLine(name: string, c: CommandSpec, argv: string[]): { positionals: string[]; values: Record<string, FlagValue> } {
  try {
    return readArgv(`kubectl pcap ${name}`, { ...GLOBAL_FLAGS, ...c.flags }, argv, { positionals: true, noun: 'flag' });
  } catch (err) {
    if (err instanceof UsageError) throw new PluginUsageError(err.message);
    throw err;
  }
}

/** Runs one command line; returns the exit code. */
export async function main(argv: string[], io: { stdout: NodeJS.WriteStream; stderr: NodeJS.WriteStream } = process): Promise<number> {
  // Wireshark's extcap calls (docs/plugin.md, "Wireshark"): its own command line, no subcommand.
  if (isExtcapInvocation(argv)) {
    const { extcapMain } = await import('./extcap.js');
    return await extcapMain(argv, io);
  }
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    io.stdout.write(topHelp());
    return name === undefined ? 2 : 0;
  }
  if (name === 'version' || name === '--version') {
    io.stdout.write(`kubectl-pcap ${KUBE_PCAP_VERSION} (node ${process.versions.node})\n`);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    io.stderr.write(`error: unknown command "${name}" (commands: ${Object.keys(COMMANDS).join(', ')}); see "kubectl pcap --help"\n`);
    return 2;
  }
  let ctx: Promise<KubeContext> | undefined;
  let gateway: Promise<Gateway> | undefined;
  const abort = new AbortController();
  const onSignal = (): void => abort.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const { positionals, values } = parseCommandLine(name, command, rest);
    if (values.help) {
      io.stdout.write(commandHelp(name, command));
      return 0;
    }
    if (command.takes === 'none' && positionals.length > 0) throw new PluginUsageError(`kubectl pcap ${name} takes no arguments (got ${positionals.join(' ')})`);
    if (command.takes === 'name' && positionals.length !== 1) throw new PluginUsageError(`kubectl pcap ${name} needs exactly one capture NAME${positionals.length ? ` (got ${positionals.join(' ')})` : ''}`);
    if (command.takes === 'optional' && positionals.length > 1) throw new PluginUsageError(`kubectl pcap ${name} takes at most one capture NAME (got ${positionals.join(' ')})`);
    const captureName = positionals[0];
    if (captureName !== undefined && !/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(captureName)) {
      throw new PluginUsageError(`"${captureName}" is not a valid capture name (lower-case letters, digits, "-" and ".", at most 253)`);
    }
    const str = (f: string): string | undefined => (typeof values[f] === 'string' ? (values[f] as string) : undefined);
    const inv: Invocation = {
      name: captureName,
      flags: values,
      string: str,
      boolean: (f) => values[f] === true,
      list: (f) => (Array.isArray(values[f]) ? (values[f] as string[]) : []),
      gatewayFlags: {
        gateway: str('gateway') ?? (process.env.KUBE_PCAP_GATEWAY || undefined),
        gatewayService: str('gateway-service') ?? DEFAULT_GATEWAY_SERVICE,
        gatewayCaFile: str('gateway-ca-file'),
        insecureSkipTlsVerify: values['insecure-skip-tls-verify'] === true,
        trustGatewayUrl: values['trust-gateway-url'] === true,
        tokenAudience: tokenAudience(str('token-audience')),
      },
      context: () => (ctx ??= loadKubeContext({ kubeconfig: str('kubeconfig'), context: str('context'), namespace: str('namespace') })),
      captureTarget: async () => {
        const c = await inv.context();
        return { ctx: c, target: { namespace: c.namespace, name: captureName! } };
      },
      gateway: async () => (gateway ??= openGateway(await inv.context(), inv.gatewayFlags)),
      signal: abort.signal,
      stdout: io.stdout,
      stderr: io.stderr,
    };
    return await command.run(inv);
  } catch (err) {
    if (err instanceof PluginError) {
      io.stderr.write(`error: ${err.message}\n${err instanceof PluginUsageError ? `See "kubectl pcap ${name} --help".\n` : ''}`);
      return err.exitCode;
    }
    throw err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await (await gateway?.catch(() => undefined))?.close();
    await (await ctx?.catch(() => undefined))?.close();
  }
}
