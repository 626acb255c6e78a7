// kubectl pcap export: a PacketCaptureExport from flags (docs/export.md), created with the
// user's own credentials (the API server's admission policy decides whether they may export
// this capture), then followed until it Succeeds or Fails, with its progress on a terminal.
import { KubeApiError } from '../../kube/client.js';
import { exportsPath, PACKETCAPTUREEXPORT, type ExportCompression, type ExportFormat, type ExportWhen, type PacketCaptureExport } from '../../export/packetcapture-export.js';
import { kubeFailure, readCapture } from '../answers.js';
import { formatBytes, parseDuration, pause } from '../durations.js';
import type { CommandSpec } from '../invocation.js';
import { outputFormat, printObjects } from '../output.js';
import { PluginError, PluginUsageError } from '../plugin-error.js';

const FORMATS: readonly ExportFormat[] = ['zip', 'pcapng', 'files'];
const COMPRESSIONS: readonly ExportCompression[] = ['none', 'zstd', 'gzip'];
const WHENS: Record<string, ExportWhen> = { now: 'Now', onfinish: 'OnFinish', 'on-finish': 'OnFinish', continuous: 'Continuous' };
const POLL_MS = 1000;

/** s3://bucket[/prefix] as the destination's bucket and key prefix (a prefix given ends in /). */
export function parseS3Url(url: string): { bucket: string; keyPrefix?: string } {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(url);
  if (!m) throw new PluginUsageError(`--to must be s3://BUCKET[/PREFIX], with an S3 bucket name, not "${url}"`);
  const prefix = m[2];
  if (!prefix) return { bucket: m[1]! };
  if (prefix.startsWith('/') || prefix.includes('//') || prefix.includes('../')) throw new PluginUsageError(`--to: the prefix "${prefix}" must not start with /, nor hold // or ../`);
  return { bucket: m[1]!, keyPrefix: prefix.endsWith('/') ? prefix : `${prefix}/` };
}

function oneOf<T extends string>(flag: string, value: string | undefined, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(value)) throw new PluginUsageError(`--${flag} must be one of ${allowed.join(', ')}, not "${value}"`);
  return value as T;
}

/** A name of its own for each export: the capture's, and the time to the second. */
function exportName(capture: string, now: Date): string {
  const stamp = now.toISOString().replace(/[-:T]/g, '').slice(0, 14);
  return `${capture.slice(0, 253 - 15)}-${stamp}`;
}

export const exportCommand: CommandSpec = {
  usage: 'export NAME --to s3://BUCKET[/PREFIX] [--endpoint URL] [--format zip|pcapng|files] [--when now|on-finish|continuous] [--credentials SECRET] [--no-wait]',
  short: 'Export a capture\'s packets to S3-compatible storage (a PacketCaptureExport), and follow it.',
  long: [
    'Create a PacketCaptureExport for the capture NAME and follow it until it Succeeds or Fails.',
    '',
    'Exporting needs what downloading needs ("get" on packetcaptures/files for the capture); a',
    '--credentials Secret needs "use" on exportcredentials of that name, given by the namespace\'s',
    'owner, who also lets kube-pcap read it. Without --credentials the gateway\'s own cloud',
    'identity (IRSA, workload identity) writes. A manifest.json beside the data lists every',
    'object with its size and SHA-256.',
  ].join('\n'),
  examples: [
    'kubectl pcap export dns -n storefront --to s3://captures/incident-4711 --credentials s3-credentials',
    'kubectl pcap export dns -n storefront --to s3://captures --endpoint https://minio.example:9000 --path-style --format pcapng --compress zstd',
    'kubectl pcap export dns -n storefront --to s3://captures/long --format files --when continuous --no-wait',
  ],
  takes: 'name',
  flags: {
    to: { type: 'string', metavar: 's3://BUCKET[/PREFIX]', help: 'Where: a bucket, and a key prefix (default <namespace>/<capture>/<export>/).' },
    endpoint: { type: 'string', metavar: 'URL', help: 'The S3 API\'s URL (MinIO, Ceph, R2...); default AWS\'s for the region.' },
    'insecure-endpoint': { type: 'boolean', help: 'Allow an http:// --endpoint (credentials and packets unencrypted on the way).' },
    region: { type: 'string', metavar: 'REGION', help: 'The bucket\'s region (default us-east-1).' },
    'path-style': { type: 'boolean', help: 'Address the bucket in the path, as MinIO and Ceph usually want.' },
    credentials: { type: 'string', metavar: 'SECRET', help: 'A Secret of the namespace with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.' },
    sse: { type: 'string', metavar: 'AES256|aws:kms', help: 'Server-side encryption of the objects.' },
    'sse-kms-key-id': { type: 'string', metavar: 'ID', help: 'With --sse aws:kms: the key.' },
    format: { type: 'string', metavar: 'zip|pcapng|files', help: 'One files.zip (default), one merged files.pcapng, or one object per node file.' },
    compress: { type: 'string', metavar: 'none|zstd|gzip', help: 'Compress each object (a zip deflates its entries instead). Default none.' },
    when: { type: 'string', metavar: 'now|on-finish|continuous', help: 'What the nodes hold now (default), once the capture finishes, or each file as it closes (format files).' },
    delay: { type: 'string', metavar: 'D', help: 'With --when continuous: the longest a closed file waits for its upload (default 60s).' },
    partial: { type: 'boolean', help: 'Export what is reachable; the manifest names the nodes left out.' },
    'export-name': { type: 'string', metavar: 'NAME', help: 'The PacketCaptureExport\'s name (default <capture>-<UTC time>).' },
    'no-wait': { type: 'boolean', help: 'Create it and return.' },
    timeout: { type: 'string', metavar: 'D', help: 'Stop following after this long (the export goes on); default none.' },
    output: { type: 'string', short: 'o', metavar: 'yaml|json', help: 'Print the export as it ended in this format.' },
  },
  async run(inv) {
    const format = outputFormat(inv.string('output'));
    if (format === 'wide') throw new PluginUsageError('export prints -o yaml or -o json');
    const to = inv.string('to');
    if (!to) throw new PluginUsageError('--to s3://BUCKET[/PREFIX] is required');
    const { bucket, keyPrefix } = parseS3Url(to);
    const fmt = oneOf('format', inv.string('format'), FORMATS, 'zip');
    const compression = oneOf('compress', inv.string('compress'), COMPRESSIONS, 'none');
    const whenText = (inv.string('when') ?? 'now').toLowerCase();
    const when = WHENS[whenText];
    if (!when) throw new PluginUsageError(`--when must be now, on-finish or continuous, not "${inv.string('when')}"`);
    if (when === 'Continuous' && fmt !== 'files') throw new PluginUsageError('--when continuous uploads each file as it closes: it needs --format files');
    const delay = inv.string('delay');
    if (delay !== undefined && when !== 'Continuous') throw new PluginUsageError('--delay goes with --when continuous');
    const delaySeconds = delay !== undefined ? Math.round(parseDuration('--delay', delay) / 1000) : undefined;
    if (delaySeconds !== undefined && (delaySeconds < 5 || delaySeconds > 3600)) throw new PluginUsageError('--delay must be from 5s to 1h');
    const endpoint = inv.string('endpoint');
    if (endpoint !== undefined && !/^https?:\/\/[^/?#\s]+(\/[^?#\s]*)?$/.test(endpoint)) throw new PluginUsageError(`--endpoint must be an http(s):// URL, not "${endpoint}"`);
    if (endpoint?.startsWith('http://') && !inv.boolean('insecure-endpoint')) throw new PluginUsageError('--endpoint is http://: the credentials and packets would travel unencrypted; say --insecure-endpoint if that is meant');
    const sse = inv.string('sse');
    if (sse !== undefined && sse !== 'AES256' && sse !== 'aws:kms') throw new PluginUsageError(`--sse must be AES256 or aws:kms, not "${sse}"`);
    if (inv.string('sse-kms-key-id') !== undefined && sse !== 'aws:kms') throw new PluginUsageError('--sse-kms-key-id goes with --sse aws:kms');
    const timeoutMs = inv.string('timeout') !== undefined ? parseDuration('--timeout', inv.string('timeout')!) : undefined;

    const { ctx, target } = await inv.captureTarget();
    // A capture that is not there is said now, not after the exporter's grace period.
    await readCapture(ctx, target);
    const name = inv.string('export-name') ?? exportName(target.name, new Date());
    const body: PacketCaptureExport = {
      apiVersion: `${PACKETCAPTUREEXPORT.group}/${PACKETCAPTUREEXPORT.version}`,
      kind: PACKETCAPTUREEXPORT.kind,
      metadata: { name, namespace: target.namespace },
      spec: {
        captureName: target.name,
        format: fmt,
        compression,
        when,
        ...(delaySeconds !== undefined ? { continuousDelaySeconds: delaySeconds } : {}),
        partial: inv.boolean('partial'),
        destination: {
          s3: {
            bucket,
            ...(keyPrefix ? { keyPrefix } : {}),
            ...(endpoint ? { endpoint } : {}),
            ...(inv.boolean('insecure-endpoint') ? { insecureEndpoint: true } : {}),
            region: inv.string('region') ?? 'us-east-1',
            ...(inv.boolean('path-style') ? { forcePathStyle: true } : {}),
            ...(sse ? { serverSideEncryption: { type: sse, ...(inv.string('sse-kms-key-id') ? { kmsKeyId: inv.string('sse-kms-key-id')! } : {}) } } : {}),
            ...(inv.string('credentials') ? { credentials: { secretRef: { name: inv.string('credentials')! } } } : {}),
          },
        },
      },
    };
    try {
      await ctx.kube.request({ method: 'POST', path: exportsPath(target.namespace), body });
    } catch (err) {
      // The admission policy's refusal says what is missing, in the API server's words.
      if (err instanceof KubeApiError && err.status === 403) {
        throw new PluginError(`cannot create the export ${name}: ${err.body.message ?? err.message}\nExporting needs "create" on packetcaptureexports (kube-pcap.io; rbac-examples/export-role.yaml) and what downloading needs, "get" on packetcaptures/files (files-role.yaml); a --credentials Secret needs "use" on exportcredentials of its name.`);
      }
      if (err instanceof KubeApiError && (err.status === 422 || err.status === 409)) throw new PluginError(`cannot create the export ${name}: ${err.body.message ?? err.message}`);
      if (err instanceof KubeApiError && err.status === 404) throw new PluginError(`this cluster does not serve PacketCaptureExports (kube-pcap.io/v1alpha1): install kube-pcap's export CRD (deploy/export/)`);
      return await kubeFailure(ctx, err, 'create', target);
    }
    inv.stderr.write(`packetcaptureexport.kube-pcap.io/${name} created\n`);
    if (inv.boolean('no-wait')) return 0;

    const tty = inv.stderr.isTTY === true;
    const deadline = timeoutMs !== undefined ? Date.now() + timeoutMs : Infinity;
    const started = Date.now();
    let shown = '';
    for (;;) {
      let e: PacketCaptureExport;
      try {
        e = await ctx.kube.request<PacketCaptureExport>({ path: `${exportsPath(target.namespace)}/${encodeURIComponent(name)}` });
      } catch (err) {
        if (err instanceof KubeApiError && err.status === 404) throw new PluginError(`the export ${name} was deleted while it was followed`);
        return await kubeFailure(ctx, err, 'get', target);
      }
      const st = e.status ?? {};
      const line = `${name}: ${st.phase ?? 'Pending'}  ${formatBytes(st.bytes ?? 0)}  ${st.objectCount ?? 0} object(s)  ${Math.round((Date.now() - started) / 1000)}s${st.phase === 'Pending' && st.message ? `  (${st.message})` : ''}`;
      if (tty) inv.stderr.write(`\r\x1b[K${line}`);
      else if (line.replace(/\s+\d+s(\s|$)/, '$1') !== shown) inv.stderr.write(`${line}\n`);
      shown = line.replace(/\s+\d+s(\s|$)/, '$1');
      if (st.phase === 'Succeeded' || st.phase === 'Failed') {
        if (tty) inv.stderr.write('\n');
        if (format === 'yaml' || format === 'json') printObjects(inv.stdout, format, [e], true);
        if (st.phase === 'Failed') throw new PluginError(`export ${name} failed: ${st.message ?? 'no message'}`);
        if (format !== 'yaml' && format !== 'json') {
          for (const o of st.objects ?? []) inv.stdout.write(`s3://${bucket}/${o.key}\t${o.size}\t${o.sha256}\n`);
          inv.stdout.write(`s3://${bucket}/${st.manifestKey}\tmanifest\n`);
        }
        return 0;
      }
      if (Date.now() >= deadline) {
        if (tty) inv.stderr.write('\n');
        throw new PluginError(`stopped following ${name} after ${inv.string('timeout')} (it goes on: kubectl get packetcaptureexport ${name} -n ${target.namespace})`);
      }
      await pause(POLL_MS, inv.signal);
      if (inv.signal.aborted) {
        if (tty) inv.stderr.write('\n');
        inv.stderr.write(`stopped following; the export goes on: kubectl get packetcaptureexport ${name} -n ${target.namespace}\n`);
        return 130;
      }
    }
  },
};
