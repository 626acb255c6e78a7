// Downloads through an Ingress, for real: nginx configured from deploy/examples/ingress.yaml
// the way ingress-nginx would configure itself (an IMITATION of the controller, named as
// such: test/harness/ingress-nginx.ts). A files.zip of several hundred MiB arrives intact
// with nginx's memory flat, the live stream is not held back, 401 and 403 come through
// unchanged, and kubectl pcap downloads through it.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { request } from 'node:https';
import { join } from 'node:path';
import t from 'tap';
import { BlockType, PcapngBlockReader } from '../../src/pcap/pcapng-reader.js';
import { issueCertificate } from '../../src/tls/certificates.js';
import { cluster } from '../harness/cluster.js';
import { freePort, REPO_ROOT } from '../harness/control-plane.js';
import { CAPTURE, storefrontWorld } from '../harness/gateway-fixture.js';
import { startIngressNginx } from '../harness/ingress-nginx.js';
import { scratchDir } from '../harness/kube-pcap.js';
import { writeLargePcap } from '../harness/pcap-fixtures.js';
import { pcapRecordCount, runPlugin, writeKubeconfig } from '../harness/plugin.js';
import { waitFor } from '../harness/wait.js';

const c = await cluster(t);
const w = await storefrontWorld(t, c);
const dir = await scratchDir(t, 'ingress');
// The Ingress's certificate (Secret kube-pcap-ingress-tls) for its host, from the test CA.
const ingressCert = await issueCertificate(dir, 'ingress', w.pki.ca, { commonName: 'pcap.example.com', usage: 'server', dnsNames: ['pcap.example.com'], ipAddresses: ['127.0.0.1'] });
const nginx = await startIngressNginx(t, {
  manifest: join(REPO_ROOT, 'deploy', 'examples', 'ingress.yaml'),
  backend: { host: '127.0.0.1', port: w.gateway.port },
  tls: ingressCert,
  // The Secret kube-pcap-gateway-ca: the CA of the gateway's serving certificate.
  proxySslCaFile: w.pki.ca.certFile,
  port: await freePort('127.0.0.1'),
});
const ca = await readFile(w.pki.ca.certFile);

interface Got { status: number; headers: Record<string, string | string[] | undefined>; sha256: string; bytes: number; body: Buffer }

/** A GET, hashed as it streams (bodies of hundreds of MiB are never held), calling onChunk. */
async function get(base: string, path: string, o: { token?: string; keep?: boolean; servername?: string; onChunk?: (n: number, res: IncomingMessage) => void } = {}): Promise<Got> {
  return await new Promise((resolve, reject) => {
    const req = request(`${base}${path}`, { ca, servername: o.servername, headers: o.token ? { authorization: `Bearer ${o.token}` } : {} }, (res) => {
      const hash = createHash('sha256');
      const kept: Buffer[] = [];
      let bytes = 0;
      res.on('data', (d: Buffer) => {
        hash.update(d);
        bytes += d.length;
        if (o.keep) kept.push(d);
        o.onChunk?.(bytes, res);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, sha256: hash.digest('hex'), bytes, body: Buffer.concat(kept) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

const download = `/packet-capture/download/${w.ns}/${CAPTURE}/files.zip`;

t.test('401 and 403 pass through unchanged: status, WWW-Authenticate and the Status body', async (t) => {
  for (const [what, token, status] of [['no token', undefined, 401], ['a token without the files Role', w.devopsToken, 403]] as const) {
    const direct = await get(w.gateway.url, download, { token, keep: true });
    const through = await get(nginx.url, download, { token, keep: true, servername: nginx.host });
    t.equal(through.status, status, `${what}: ${status}`);
    t.equal(through.status, direct.status);
    t.same(JSON.parse(through.body.toString()), JSON.parse(direct.body.toString()), `${what}: the same Status object`);
    t.equal(through.headers['www-authenticate'], direct.headers['www-authenticate']);
  }
});

t.test('the live stream is delivered as it is written, not held until it ends', async (t) => {
  await w.grantFiles();
  await waitFor(async () => (await get(nginx.url, `/packet-capture/files/${w.ns}/${CAPTURE}`, { token: w.devopsToken, servername: nginx.host })).status === 200, { what: 'the files Role to take effect', timeoutMs: 20_000 });
  const total = [...w.files.values()].reduce((n, b) => n + pcapRecordCount(b), 0);
  // The capture is still Capturing: the stream stays open after what is on disk.
  const packets = await new Promise<number>((resolve, reject) => {
    const req = request(`${nginx.url}/packet-capture/stream/${w.ns}/${CAPTURE}?since=2000-01-01T00:00:00Z`, { ca, servername: nginx.host, headers: { authorization: `Bearer ${w.devopsToken}` } }, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`stream: ${res.statusCode}`));
      const reader = new PcapngBlockReader(res, 'stream through the ingress');
      let n = 0;
      let ended = false;
      res.on('end', () => (ended = true));
      void (async () => {
        while (await reader.next()) {
          if (reader.type === BlockType.EPB && ++n === total) {
            // Every packet on disk has come through while the response is still open.
            t.notOk(ended, 'the response is still open');
            req.destroy();
            return resolve(n);
          }
        }
        reject(new Error(`the stream ended after ${n} of ${total} packets`));
      })().catch((err: unknown) => (req.destroyed ? undefined : reject(err)));
    });
    req.on('error', (err) => (req.destroyed ? undefined : reject(err)));
    req.end();
  });
  t.equal(packets, total);
});

t.test('a files.zip of hundreds of MiB arrives intact, with nginx\'s memory flat', async (t) => {
  await w.addFileOnFirstNode('logging-0_cali0-1700000000000099.pcap', (p) => writeLargePcap(p, 320 << 20));
  const direct = await get(w.gateway.url, download, { token: w.devopsToken });
  t.equal(direct.status, 200);
  t.ok(direct.bytes > 320 << 20, `${direct.bytes} bytes`);
  const rss = (): number => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSyncSafe(`/proc/${nginx.pid}/status`))?.[1] ?? 0) * 1024;
  // A buffering proxy holds a response in memory and then in temporary files, which nginx
  // unlinks as soon as it opens them: their sizes are read through its descriptors.
  const spooled = (): number => {
    let n = 0;
    for (const fd of readdirSafe(`/proc/${nginx.pid}/fd`)) {
      try {
        if (readlinkSync(`/proc/${nginx.pid}/fd/${fd}`).startsWith(nginx.proxyTempDir)) n += statSync(`/proc/${nginx.pid}/fd/${fd}`).size;
      } catch {
        // closed meanwhile
      }
    }
    return n;
  };
  const before = rss();
  let peak = before;
  let peakSpooled = 0;
  let sampled = 0;
  let slowed = false;
  const through = await get(nginx.url, download, {
    token: w.devopsToken, servername: nginx.host,
    onChunk: (bytes, res) => {
      peak = Math.max(peak, rss());
      if (bytes - sampled >= 8 << 20) {
        sampled = bytes;
        peakSpooled = Math.max(peakSpooled, spooled());
      }
      // A slow client (a laptop on hotel Wi-Fi): the reader stops for up to 3 s at 64 MiB.
      // A buffering proxy keeps reading from the gateway meanwhile, into memory and temporary
      // files; one that streams stops reading too.
      if (!slowed && bytes >= 64 << 20) {
        slowed = true;
        res.pause();
        void waitFor(() => {
          peak = Math.max(peak, rss());
          peakSpooled = Math.max(peakSpooled, spooled());
          return peakSpooled > 32 << 20 ? true : undefined;
        }, { what: 'nginx to spool while the client is slow', timeoutMs: 3000, intervalMs: 100 }).catch(() => undefined).finally(() => res.resume());
      }
    },
  });
  t.equal(through.status, 200);
  t.equal(through.headers['content-length'], direct.headers['content-length'], 'the exact length passes through');
  t.equal(through.bytes, direct.bytes);
  t.equal(through.sha256, direct.sha256, 'the same bytes');
  t.equal(peakSpooled, 0, 'nothing spooled to disk on the way, even while the client was slow');
  t.ok(peak - before < 16 << 20, `nginx's RSS grew ${((peak - before) / 2 ** 20).toFixed(1)} MiB while ${(through.bytes / 2 ** 20).toFixed(0)} MiB went through (from ${(before / 2 ** 20).toFixed(1)} MiB)`);
});

t.test('kubectl pcap downloads through the Ingress (--gateway)', async (t) => {
  const kubeconfig = await writeKubeconfig(c, dir, 'devops', { token: w.devopsToken }, w.ns);
  const r = await runPlugin(['download', CAPTURE, '-w', 'via-ingress.zip', '--gateway', nginx.url, '--gateway-ca-file', w.pki.ca.certFile, '--trust-gateway-url'], { kubeconfig, cwd: dir, timeoutMs: 300_000 });
  t.equal(r.code, 0, r.stderr);
});

function readdirSafe(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}

function readFileSyncSafe(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}
