// Wireshark's extcap interface (https://www.wireshark.org/docs/man-pages/extcap.html): kube-pcap
// as capture interfaces in Wireshark's list, one per kubeconfig context, whose options name
// a namespace and a capture (or make a new one from a selector and filters), and whose
// capture is the live pcapng stream written into Wireshark's fifo.
//
// Wireshark lists extcap interfaces at every start: --extcap-interfaces, --extcap-dlts and
// --extcap-config read only the kubeconfig file (no network, no credential plugin, nothing
// that could prompt). Only --capture talks to the cluster.
//
// Names: Wireshark keeps each option as the preference extcap.<interface>.<option>, where
// <interface> has every character outside [a-zA-Z1-9_] made "_" and lower-cased, and
// <option> is the option without its dashes. Interface names are made of [a-z1-9_] here, so
// that the name tshark -i takes is also the one its -o extcap.<interface>.<option>:<value>
// takes; options have one word or dashes only between words (capture-name is capturename).
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { readArgv, type OptionTable, type RawValue } from '../config/options.js';
import { KubeConfig } from '@kubernetes/client-node';
import { KUBE_PCAP_VERSION } from '../version.js';
import { gatewayFailure, kubeFailure, noSuchCapture } from './answers.js';
import { applyCapture, specFromFlags } from './commands/create.js';
import { getPacketCapture } from '../kube/packetcapture.js';
import { DEFAULT_GATEWAY_SERVICE, DEFAULT_TOKEN_AUDIENCE, openGateway } from './gateway-access.js';
import { loadKubeContext } from './kube-context.js';
import { PluginError } from './plugin-error.js';

const HELP_URL = 'https://github.com/kube-pcap/kube-pcap#wireshark';
/** Ethernet: the pods' interfaces; the pcapng stream's own interface blocks say it again. */
const DLT = { number: 1, name: 'EN10MB', display: 'Ethernet (pods\' interfaces, as pcapng)' };

/** Wireshark's extcap calls (its extcap interface) and the configuration this extcap offers it. */
const OPTIONS: OptionTable = {
  'extcap-interfaces': { type: 'boolean', help: 'List the interfaces: one per kubeconfig context.' },
  'extcap-version': { type: 'string', help: 'The calling Wireshark\'s version.' },
  'extcap-interface': { type: 'string', help: 'The interface (kubeconfig context) the call is about.' },
  'extcap-dlts': { type: 'boolean', help: 'List the interface\'s link types.' },
  'extcap-config': { type: 'boolean', help: 'List the interface\'s options.' },
  'extcap-capture-filter': { type: 'string', help: 'Check a capture filter (not used: the capture\'s own filters decide).' },
  'extcap-reload-option': { type: 'string', help: 'Reload one option\'s values.' },
  capture: { type: 'boolean', help: 'Capture: stream the packets into --fifo.' },
  fifo: { type: 'string', help: 'Where Wireshark reads the packets.' },
  namespace: { type: 'string', help: 'The capture\'s namespace.' },
  'capture-name': { type: 'string', help: 'The PacketCapture to stream.' },
  create: { type: 'boolean', help: 'Create the capture first (and delete it at the end).' },
  selector: { type: 'string', help: 'With --create: the pods, as a Calico selector.' },
  filter: { type: 'string', help: 'With --create: PROTO[:PORTS] filters.' },
  duration: { type: 'string', help: 'With --create: how long it captures.' },
  gateway: { type: 'string', help: 'The gateway\'s https:// URL (default: port-forward to its Service).' },
  'gateway-ca-file': { type: 'string', help: 'With --gateway: a CA for its certificate.' },
  'trust-gateway-url': { type: 'boolean', help: 'Send credentials to a --gateway URL the cluster does not publish.' },
  kubeconfig: { type: 'string', help: 'The kubeconfig file.' },
  debug: { type: 'boolean', help: 'Wireshark\'s debug switch.' },
  'debug-file': { type: 'string', help: 'Wireshark\'s debug log file.' },
};

/** Each context's interface name: [a-z1-9_] only, unique (a short digest when two collide). */
export function interfaceNames(contexts: readonly string[]): Map<string, string> {
  const base = (c: string): string => `kubepcap_${c.toLowerCase().replace(/[^a-z1-9_]/g, '_')}`;
  const counts = new Map<string, number>();
  for (const c of contexts) counts.set(base(c), (counts.get(base(c)) ?? 0) + 1);
  const names = new Map<string, string>();
  for (const c of contexts) {
    const b = base(c);
    const digest = createHash('sha256').update(c).digest('hex').replace(/[^a-f1-9]/g, '').slice(0, 6);
    names.set(c, (counts.get(b) ?? 0) > 1 ? `${b}_${digest}` : b);
  }
  return names;
}

function loadKubeconfigOnly(path: string | undefined): KubeConfig | undefined {
  const kc = new KubeConfig();
  try {
    if (path) kc.loadFromFile(path);
    else kc.loadFromDefault();
  } catch {
    return undefined;
  }
  // client-node's stand-in when there is no kubeconfig at all: no interface for it.
  if (kc.getCurrentContext() === 'loaded-context' && kc.getCurrentCluster()?.server === 'http://localhost:8080') return undefined;
  return kc;
}

/** Formats one extcap line: `kind {k=v}{k=v}`, with braces in values escaped away. */
function line(kind: string, fields: Record<string, string | number | boolean | undefined>): string {
  const parts = Object.entries(fields).filter(([, v]) => v !== undefined).map(([k, v]) => `{${k}=${String(v).replace(/[{}\n]/g, ' ')}}`);
  return `${kind} ${parts.join('')}\n`;
}

function configLines(defaultNamespace: string): string {
  let n = 0;
  const arg = (fields: Record<string, string | number | boolean | undefined>): string => line('arg', { number: n++, ...fields });
  return [
    arg({ call: '--namespace', display: 'Namespace', type: 'string', default: defaultNamespace, required: 'true', tooltip: 'The namespace of the capture', group: 'Capture' }),
    arg({ call: '--capture-name', display: 'Capture', type: 'string', required: 'true', tooltip: 'An existing PacketCapture, or the name of the new one', group: 'Capture' }),
    arg({ call: '--create', display: 'New capture (from the selector and filters below)', type: 'boolflag', default: 'false', tooltip: 'Create (or update) the capture before streaming it', group: 'New capture' }),
    arg({ call: '--selector', display: 'Pods (selector)', type: 'string', tooltip: 'Calico\'s selector, e.g. app == "web"; or Kubernetes\' app=web', group: 'New capture' }),
    arg({ call: '--filter', display: 'Filters', type: 'string', tooltip: 'Space-separated: udp:53 tcp:80-90,443 icmp', group: 'New capture' }),
    arg({ call: '--duration', display: 'Duration', type: 'string', default: '10m', tooltip: 'How long the new capture runs, e.g. 10m, 1h', group: 'New capture' }),
    arg({ call: '--gateway', display: 'Gateway URL (empty: kubectl port-forward)', type: 'string', tooltip: 'The gateway\'s https:// URL when it is reached through an Ingress', group: 'Connection' }),
    arg({ call: '--gateway-ca-file', display: 'Gateway CA file', type: 'fileselect', mustexist: 'true', tooltip: 'A CA for the gateway\'s certificate besides the system\'s (with a gateway URL)', group: 'Connection' }),
    arg({ call: '--trust-gateway-url', display: 'Trust this gateway URL', type: 'boolflag', default: 'false', tooltip: 'Send your credentials to a gateway URL the cluster does not publish (ConfigMap kube-pcap-gateway-ca, key urls)', group: 'Connection' }),
  ].join('');
}

/** A Calico selector as given, or Kubernetes' label syntax (recognised by its "=" without "=="). */
function selectorFlags(text: string | undefined): { selector?: string; labels?: string } {
  if (!text || !text.trim()) return {};
  const calico = /==|!=|\bhas\(|\ball\(|\bin\s*\{|&&|\|\||\bstarts\s*with\b|\bends\s*with\b|\bcontains\b/.test(text);
  return calico ? { selector: text } : { labels: text };
}

async function capture(values: Record<string, RawValue>, contexts: Map<string, string>, kubeconfig: string | undefined): Promise<number> {
  const iface = values['extcap-interface'] as string | undefined;
  const context = [...contexts].find(([, name]) => name === iface)?.[0];
  if (!context) throw new PluginError(`no kubeconfig context for the interface ${iface ?? '(none)'}`);
  const fifo = values.fifo as string | undefined;
  if (!fifo) throw new PluginError('--capture needs --fifo');
  const name = values['capture-name'] as string | undefined;
  if (!name) throw new PluginError('no capture named: set the "Capture" option of this interface');
  const ctx = await loadKubeContext({ kubeconfig, context, namespace: (values.namespace as string | undefined) || undefined });
  const abort = new AbortController();
  const stop = (): void => abort.abort();
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  const target = { namespace: ctx.namespace, name };
  let gateway;
  try {
    if (values.create) {
      const spec = specFromFlags({ ...selectorFlags(values.selector as string | undefined), filters: ((values.filter as string | undefined) ?? '').split(/\s+/).filter(Boolean), duration: (values.duration as string | undefined) || undefined });
      await applyCapture(ctx, target, spec, false);
    } else if (!(await getPacketCapture(ctx.kube, target.namespace, name).catch((e: unknown) => kubeFailure(ctx, e, 'get', target)))) {
      throw noSuchCapture(target, 'tick "New capture" to create it');
    }
    gateway = await openGateway(ctx, {
      gateway: (values.gateway as string | undefined) || process.env.KUBE_PCAP_GATEWAY || undefined,
      gatewayService: DEFAULT_GATEWAY_SERVICE,
      gatewayCaFile: (values['gateway-ca-file'] as string | undefined) || undefined,
      insecureSkipTlsVerify: false,
      trustGatewayUrl: values['trust-gateway-url'] === true,
      tokenAudience: DEFAULT_TOKEN_AUDIENCE,
    });
    const res = await gateway.request('GET', `/stream/${encodeURIComponent(target.namespace)}/${encodeURIComponent(name)}`, abort.signal);
    if (res.status !== 200) throw await gatewayFailure(ctx, res, 'get', target);
    try {
      await pipeline(res.body, createWriteStream(fifo), { signal: abort.signal });
    } catch (e) {
      // Wireshark stopping the capture (SIGTERM, or its end of the fifo closed) is the normal end.
      if (!abort.signal.aborted && (e as NodeJS.ErrnoException).code !== 'EPIPE') throw new PluginError(`the stream of ${name} was cut: ${(e as Error).message}`);
    }
    return 0;
  } finally {
    process.off('SIGTERM', stop);
    process.off('SIGINT', stop);
    await gateway?.close();
    await ctx.close();
  }
}

/** Runs one extcap call from Wireshark or tshark; returns the exit code. */
export async function extcapMain(argv: string[], io: { stdout: NodeJS.WriteStream; stderr: NodeJS.WriteStream } = process): Promise<number> {
  let values: Record<string, RawValue>;
  try {
    values = readArgv('kube-pcap extcap', OPTIONS, argv).values;
  } catch (e) {
    io.stderr.write(`${(e as Error).message}\n`);
    return 2;
  }
  const kubeconfig = values.kubeconfig as string | undefined;
  const kc = loadKubeconfigOnly(kubeconfig);
  const contexts = interfaceNames(kc?.getContexts().map((c) => c.name) ?? []);
  try {
    if (values['extcap-interfaces']) {
      io.stdout.write(line('extcap', { version: KUBE_PCAP_VERSION, help: HELP_URL, display: 'kube-pcap: Kubernetes pods (PacketCapture)' }));
      for (const [context, name] of contexts) io.stdout.write(line('interface', { value: name, display: `Kubernetes pods: ${context} (kube-pcap)` }));
      return 0;
    }
    const iface = values['extcap-interface'] as string | undefined;
    if (values['extcap-dlts']) {
      io.stdout.write(line('dlt', DLT));
      return 0;
    }
    if (values['extcap-config']) {
      const context = [...contexts].find(([, n]) => n === iface)?.[0];
      const ns = context ? kc?.getContextObject(context)?.namespace : undefined;
      io.stdout.write(configLines(ns ?? 'default'));
      return 0;
    }
    if (values['extcap-capture-filter'] !== undefined) {
      // A capture filter is BPF on a live interface; here the capture's own filters decide.
      if ((values['extcap-capture-filter'] as string).trim() !== '') io.stdout.write('capture filters are not used: set the capture\'s Filters option instead\n');
      return 0;
    }
    if (values.capture) return await capture(values, contexts, kubeconfig);
    io.stderr.write('kube-pcap extcap: nothing to do (Wireshark calls this with --extcap-interfaces, --extcap-config or --capture)\n');
    return 2;
  } catch (e) {
    if (e instanceof PluginError) {
      io.stderr.write(`${e.message}\n`);
      return 1;
    }
    throw e;
  }
}
