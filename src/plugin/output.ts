// -o: the output format only (kubectl's convention): a table by default, "wide" for more
// columns, "yaml" or "json" for the objects themselves.
import { stringify } from 'yaml';
import { PluginUsageError } from './plugin-error.js';

export type OutputFormat = 'table' | 'wide' | 'yaml' | 'json';

export function outputFormat(value: string | undefined): OutputFormat {
  if (value === undefined) return 'table';
  if (value === 'wide' || value === 'yaml' || value === 'json') return value;
  throw new PluginUsageError(`-o must be one of yaml, json or wide, not "${value}"`);
}

/** Objects as kubectl -o yaml|json prints them: one object, or a v1 List of several. */
export function printObjects(out: NodeJS.WritableStream, format: 'yaml' | 'json', objects: unknown[], single: boolean): void {
  // kubectl leaves managedFields out unless asked (--show-managed-fields): noise for people.
  const shown = objects.map((o) => {
    const meta = (o as { metadata?: Record<string, unknown> }).metadata;
    if (!meta || !('managedFields' in meta)) return o;
    const { managedFields: _omitted, ...rest } = meta;
    return { ...(o as object), metadata: rest };
  });
  const doc = single ? shown[0] : { apiVersion: 'v1', kind: 'List', items: shown, metadata: { resourceVersion: '' } };
  out.write(format === 'json' ? `${JSON.stringify(doc, null, 4)}\n` : stringify(doc));
}

/** Left-aligned columns separated by three spaces, as kubectl prints them. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('   ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}
