// What a subcommand gets: its parsed flags, the capture it names, the user's kube context
// and, when it needs one, a connection to the gateway (opened on first use, closed at exit).
import type { Gateway, GatewayFlags } from './gateway-access.js';
import type { Target } from './answers.js';
import type { KubeContext } from './kube-context.js';
import type { OptionSpec, RawValue } from '../config/options.js';

export type FlagValue = RawValue;

/** kubectl pcap's flags are declared as every command line of kube-pcap is (config/options.ts). */
export type FlagSpec = OptionSpec & { type: 'string' | 'boolean' | 'strings' };

export interface Invocation {
  /** The capture name (positional), when the command takes one. */
  name: string | undefined;
  flags: Record<string, FlagValue>;
  string(flag: string): string | undefined;
  boolean(flag: string): boolean;
  list(flag: string): string[];
  context(): Promise<KubeContext>;
  /** The kube context and the capture NAME names in its namespace (commands that take a NAME). */
  captureTarget(): Promise<{ ctx: KubeContext; target: Target }>;
  gateway(): Promise<Gateway>;
  gatewayFlags: GatewayFlags;
  /** Set when the user interrupts (Ctrl-C): long commands stop and clean up. */
  signal: AbortSignal;
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
}

export interface CommandSpec {
  usage: string;
  short: string;
  long?: string;
  examples: string[];
  flags: Record<string, FlagSpec>;
  /** "name": exactly one capture name; "optional": zero or one; "none". */
  takes: 'name' | 'optional' | 'none';
  run(inv: Invocation): Promise<number>;
}
