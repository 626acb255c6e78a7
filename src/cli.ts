#!/usr/bin/env node
// kube-pcap: one binary, one subcommand per component.
import './threadpool.js'; // first: sizes libuv's pool before anything uses it
import { KUBE_PCAP_VERSION } from './version.js';
import { agentConfig, agentOptions } from './config/agent.js';
import { gatewayConfig, gatewayOptions } from './config/gateway.js';
import { helpText, parseOptions, UsageError, type OptionTable, type OptionValues } from './config/options.js';

interface Command {
  short: string;
  summary: string;
  options: OptionTable;
  run(values: OptionValues): Promise<void>;
}

const commands: Record<string, Command> = {
  gateway: {
    short: 'Serve captured files to the users Kubernetes RBAC allows (files.zip over HTTPS).',
    summary: 'Serve captured packets over HTTPS to the users Kubernetes RBAC allows: authenticates bearer tokens (TokenReview, optionally OIDC), authorizes with SubjectAccessReview on packetcaptures/files, and streams every node\'s files as files.zip.',
    options: gatewayOptions,
    async run(values) {
      const config = gatewayConfig(values);
      const { runGateway } = await import('./run-gateway.js');
      await runGateway(config);
    },
  },
  agent: {
    short: 'Capture the selected pods on this node and serve the pcap files (one per node).',
    summary: 'Capture the traffic of the pods on this node that PacketCaptures select, rotate the pcap files, report status, and serve the files to the gateway.',
    options: agentOptions,
    async run(values) {
      const config = agentConfig(values);
      const { runAgent } = await import('./agent/main.js');
      await runAgent(config);
    },
  },
};

function version(): string {
  return KUBE_PCAP_VERSION;
}

function topHelp(): string {
  const names = Object.keys(commands);
  const width = Math.max(...names.map((n) => n.length)) + 2;
  return [
    'Usage: kube-pcap <command> [options]',
    '',
    'Dynamic packet capture for Kubernetes (PacketCapture, projectcalico.org/v3).',
    '',
    'Commands:',
    ...names.map((n) => `  ${n.padEnd(width)}${commands[n]!.short}`),
    '',
    'Run "kube-pcap <command> --help" for the options of a command.',
    '',
  ].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(topHelp());
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === 'version') {
    process.stdout.write(`kube-pcap ${version()}\n`);
    return 0;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`kube-pcap: unknown command "${name}" (commands: ${Object.keys(commands).join(', ')}; see kube-pcap --help)\n`);
    return 2;
  }
  try {
    const parsed = parseOptions(`kube-pcap ${name}`, command.options, rest);
    if (parsed.help) {
      process.stdout.write(helpText(`kube-pcap ${name} [options]`, command.summary, command.options));
      return 0;
    }
    await command.run(parsed.values);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`${err.message}\nRun "kube-pcap ${name} --help" for usage.\n`);
      return 2;
    }
    throw err;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`kube-pcap: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
