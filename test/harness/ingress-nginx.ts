// IMITATION, named as such: nginx configured the way ingress-nginx configures itself for an
// Ingress, without the controller (which needs a cluster's Services, Endpoints and its own
// image). The Ingress manifest drives it: its TLS host, path and the annotations it uses
// become the directives ingress-nginx's template writes for them, so the example and the
// test cannot drift apart. An annotation it does not know is an error, not ignored.
import { readFile, writeFile } from 'node:fs/promises';
import { portOpen } from './http.js';
import { join } from 'node:path';
import { parse } from 'yaml';
import type { Teardown } from './cluster.js';
import { scratchDir } from './kube-pcap.js';
import { OwnedProcess } from './processes.js';
import { waitFor } from './wait.js';

interface Ingress {
  metadata: { annotations?: Record<string, string> };
  spec: { tls?: { hosts: string[] }[]; rules: { host?: string; http: { paths: { path: string; pathType: string; backend: { service: { name: string; port: { name?: string; number?: number } } } }[] } }[] };
}

export interface IngressNginx {
  url: string;
  host: string;
  port: number;
  pid: number;
  proc: OwnedProcess;
  /** Where nginx would spool a response it buffers (proxy_temp_path). */
  proxyTempDir: string;
}

export interface IngressNginxOptions {
  manifest: string;
  /** Where the Service's endpoint is (the gateway): ingress-nginx sends to pod IPs. */
  backend: { host: string; port: number };
  /** The Ingress's TLS Secret (tls.crt/tls.key). */
  tls: { certFile: string; keyFile: string };
  /** What the Secret named by proxy-ssl-secret holds (ca.crt). */
  proxySslCaFile?: string;
  port: number;
}

const PREFIX = 'nginx.ingress.kubernetes.io/';

/** The location directives ingress-nginx's template writes for these annotations. */
function annotationDirectives(annotations: Record<string, string>, o: IngressNginxOptions): { scheme: string; lines: string[] } {
  let scheme = 'http';
  // ingress-nginx's defaults for every location (its ConfigMap's defaults).
  const d = new Map<string, string>([
    ['proxy_connect_timeout', '5s'], ['proxy_send_timeout', '60s'], ['proxy_read_timeout', '60s'],
    ['proxy_buffering', 'off'], ['proxy_buffer_size', '4k'], ['proxy_buffers', '4 4k'],
    ['proxy_request_buffering', 'on'], ['client_max_body_size', '1m'], ['proxy_http_version', '1.1'],
    ['proxy_next_upstream', 'error timeout'], ['proxy_redirect', 'off'],
  ]);
  for (const [key, value] of Object.entries(annotations)) {
    if (!key.startsWith(PREFIX)) continue;
    const name = key.slice(PREFIX.length);
    switch (name) {
      case 'backend-protocol': scheme = value.toLowerCase(); break;
      case 'proxy-buffering': d.set('proxy_buffering', value); break;
      case 'proxy-request-buffering': d.set('proxy_request_buffering', value); break;
      case 'proxy-read-timeout': d.set('proxy_read_timeout', `${value}s`); break;
      case 'proxy-send-timeout': d.set('proxy_send_timeout', `${value}s`); break;
      case 'proxy-body-size': d.set('client_max_body_size', value); break;
      case 'proxy-ssl-verify': d.set('proxy_ssl_verify', value); break;
      case 'proxy-ssl-name': d.set('proxy_ssl_name', value); break;
      case 'proxy-ssl-server-name': d.set('proxy_ssl_server_name', value); break;
      case 'proxy-ssl-secret':
        if (!o.proxySslCaFile) throw new Error(`the Ingress names the Secret ${value} for proxy-ssl-secret: give its ca.crt`);
        d.set('proxy_ssl_trusted_certificate', o.proxySslCaFile);
        break;
      default: throw new Error(`the ingress-nginx imitation does not know the annotation ${key}`);
    }
  }
  return { scheme, lines: [...d].map(([k, v]) => `      ${k} ${v};`) };
}

export async function startIngressNginx(t: Teardown, o: IngressNginxOptions): Promise<IngressNginx> {
  const ingress = parse(await readFile(o.manifest, 'utf8')) as Ingress;
  const rule = ingress.spec.rules[0]!;
  const host = ingress.spec.tls?.[0]?.hosts[0] ?? rule.host ?? 'localhost';
  const { scheme, lines } = annotationDirectives(ingress.metadata.annotations ?? {}, o);
  const dir = await scratchDir(t, 'ingress-nginx');
  const locations = rule.http.paths.map((p) => {
    if (p.pathType !== 'Prefix') throw new Error(`pathType ${p.pathType} is not imitated`);
    return `    location ${p.path} {
      proxy_set_header Host $host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header Connection "";
${lines.join('\n')}
      proxy_pass ${scheme}://backend;
    }`;
  });
  const conf = join(dir, 'nginx.conf');
  await writeFile(conf, `worker_processes 1;
master_process off;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} warn;
events { worker_connections 256; }
http {
  access_log ${join(dir, 'access.log')};
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream backend { server ${o.backend.host}:${o.backend.port}; keepalive 32; }
  server {
    listen 127.0.0.1:${o.port} ssl;
    server_name ${host};
    ssl_certificate ${o.tls.certFile};
    ssl_certificate_key ${o.tls.keyFile};
    ssl_protocols TLSv1.2 TLSv1.3;
${locations.join('\n')}
  }
}
`);
  const proc = new OwnedProcess('nginx', ['-c', conf, '-p', dir, '-g', 'daemon off;'], { name: 'ingress-nginx-imitation', logFile: join(dir, 'nginx.out') });
  t.teardown(() => proc.stop());
  await waitFor(async () => {
    if (!proc.running) throw await proc.failure('exited before listening');
    return await portOpen('127.0.0.1', o.port);
  }, { what: 'the ingress-nginx imitation to listen', timeoutMs: 10_000, intervalMs: 50 });
  return { url: `https://127.0.0.1:${o.port}`, host, port: o.port, pid: proc.pid, proc, proxyTempDir: join(dir, 'proxy') };
}
