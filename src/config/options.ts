// Command-line options declared once: the parser, the defaults, the environment fallbacks
// and the --help text all come from the same table, so they cannot disagree. The one reader
// of command lines: the servers (kube-pcap gateway|agent), kubectl pcap and its Wireshark
// extcap all declare their flags as an OptionTable and read argv with readArgv.
import { parseArgs } from 'node:util';

/** `list`: one flag, comma-separated values; `strings`: a flag that may be given more than once. */
export type OptionType = 'string' | 'boolean' | 'integer' | 'list' | 'strings';

export interface OptionSpec {
  type: OptionType;
  help: string;
  /** Placeholder in --help, e.g. FILE. */
  metavar?: string;
  default?: string | number | boolean | string[];
  /** Environment variable read when the flag is absent. */
  env?: string;
  /** A one-letter alias (-n for --namespace). */
  short?: string;
  /** Inclusive bounds for integers. */
  min?: number;
  max?: number;
}

export type OptionTable = Record<string, OptionSpec>;

export type OptionValues = Record<string, string | number | boolean | string[] | undefined>;

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export interface ParsedCommand {
  help: boolean;
  values: OptionValues;
}

/** A flag's value as given on the command line, before types and defaults. */
export type RawValue = string | boolean | string[] | undefined;

/**
 * The flags and positionals of `argv` as given. Unknown flags, a value missing or given to a
 * boolean, and (unless `positionals`) any argument that is not a flag are UsageErrors that
 * start with `command`; `noun` is what the command's users call a flag.
 */
export function readArgv(command: string, table: OptionTable, argv: string[], o: { positionals?: boolean; noun?: string } = {}): { values: Record<string, RawValue>; positionals: string[] } {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {};
  for (const [name, spec] of Object.entries(table)) {
    options[name] = { type: spec.type === 'boolean' ? 'boolean' : 'string', ...(spec.short ? { short: spec.short } : {}), ...(spec.type === 'strings' ? { multiple: true } : {}) };
  }
  try {
    const parsed = parseArgs({ args: argv, options, strict: true, allowPositionals: o.positionals === true });
    return { values: parsed.values as Record<string, RawValue>, positionals: parsed.positionals };
  } catch (err) {
    const msg = (err as Error).message;
    const unknown = /Unknown option '([^']+)'/.exec(msg);
    const positional = /Unexpected argument '([^']+)'/.exec(msg);
    if (unknown) throw new UsageError(`${command}: unknown ${o.noun ?? 'option'} ${unknown[1]}`);
    if (positional) throw new UsageError(`${command}: unexpected argument ${positional[1]}`);
    throw new UsageError(`${command}: ${msg.split('. ')[0]}`);
  }
}

/** Parses argv against the table; unknown options, stray arguments and bad values are UsageErrors. */
export function parseOptions(command: string, table: OptionTable, argv: string[], env: NodeJS.ProcessEnv = process.env): ParsedCommand {
  const parsed = readArgv(command, { help: { type: 'boolean', short: 'h', help: 'Show this help.' }, ...table }, argv);
  if (parsed.values.help) return { help: true, values: {} };

  const values: OptionValues = {};
  for (const [name, spec] of Object.entries(table)) {
    const given = parsed.values[name];
    const fromEnv = spec.env !== undefined ? env[spec.env] : undefined;
    const raw = given ?? (fromEnv !== undefined && fromEnv !== '' ? fromEnv : undefined);
    if (raw === undefined) {
      values[name] = spec.default;
      continue;
    }
    values[name] = convert(command, name, spec, raw);
  }
  return { help: false, values };
}

function convert(command: string, name: string, spec: OptionSpec, raw: string | boolean | string[]): string | number | boolean | string[] {
  switch (spec.type) {
    case 'boolean':
      if (typeof raw === 'boolean') return raw;
      if (/^(1|true|yes)$/i.test(String(raw))) return true;
      if (/^(0|false|no)$/i.test(String(raw))) return false;
      throw new UsageError(`${command}: --${name} must be true or false, not "${raw}"`);
    case 'integer': {
      const text = String(raw);
      if (!/^-?\d+$/.test(text)) throw new UsageError(`${command}: --${name} must be an integer, not "${text}"`);
      const n = Number(text);
      if (!Number.isSafeInteger(n) || (spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max)) {
        throw new UsageError(`${command}: --${name} must be between ${spec.min ?? '-∞'} and ${spec.max ?? '∞'}, not ${text}`);
      }
      return n;
    }
    case 'strings':
      return Array.isArray(raw) ? raw : [String(raw)];
    case 'list':
      return String(raw).split(',').map((s) => s.trim()).filter((s) => s !== '');
    case 'string':
      if (String(raw) === '') throw new UsageError(`${command}: --${name} must not be empty`);
      return String(raw);
  }
}

export function helpText(usage: string, summary: string, table: OptionTable): string {
  const rows = Object.entries(table).map(([name, spec]) => {
    const flag = `--${name}${spec.type === 'boolean' ? '' : `=${spec.metavar ?? (spec.type === 'integer' ? 'N' : spec.type === 'list' ? 'A,B' : 'VALUE')}`}`;
    const extras = [
      spec.default !== undefined && spec.default !== false && !(Array.isArray(spec.default) && spec.default.length === 0)
        ? `default ${Array.isArray(spec.default) ? spec.default.join(',') : String(spec.default)}`
        : undefined,
      spec.env ? `env ${spec.env}` : undefined,
    ].filter(Boolean);
    return { flag, text: `${spec.help}${extras.length ? ` (${extras.join('; ')})` : ''}` };
  });
  const width = Math.min(40, Math.max(...rows.map((r) => r.flag.length)) + 2);
  const lines = rows.map((r) => (r.flag.length + 2 > width ? `  ${r.flag}\n  ${' '.repeat(width)}${r.text}` : `  ${r.flag.padEnd(width)}${r.text}`));
  return `Usage: ${usage}\n\n${summary}\n\nOptions:\n${lines.join('\n')}\n  ${'-h, --help'.padEnd(width)}Show this help.\n`;
}

/** host:port, with IPv6 hosts in brackets; port 0 picks a free port (tests, development). */
export function parseListen(command: string, value: string, flag = '--listen'): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new UsageError(`${command}: ${flag} must be HOST:PORT (e.g. 0.0.0.0:9443), not "${value}"`);
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}
