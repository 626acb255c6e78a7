// Installs the PacketCapture CRD (idempotent) and waits until the API server serves it.
import { join } from 'node:path';
import { REPO_ROOT } from './control-plane.js';
import type { TestCluster } from './cluster.js';
import { waitFor } from './wait.js';

export const CRD_FILE = join(REPO_ROOT, 'deploy', 'crd', 'packetcaptures.projectcalico.org.yaml');
export const REPORT_CRD_FILE = join(REPO_ROOT, 'deploy', 'crd', 'packetcapturenodereports.kube-pcap.io.yaml');
export const PC = { group: 'projectcalico.org', version: 'v3', plural: 'packetcaptures' } as const;
export const PCNR = { group: 'kube-pcap.io', version: 'v1alpha1', plural: 'packetcapturenodereports' } as const;

/** deploy/crd's PacketCapture and PacketCaptureNodeReport CRDs (idempotent), once served. */
export async function installCrd(c: TestCluster): Promise<void> {
  await c.applyYaml(CRD_FILE);
  await c.applyYaml(REPORT_CRD_FILE);
  await waitFor(async () => {
    // Established alone is not enough: discovery must list the resource before clients use it.
    await c.custom.listClusterCustomObject({ ...PC });
    await c.custom.listClusterCustomObject({ ...PCNR });
    return true;
  }, { what: 'the PacketCapture and PacketCaptureNodeReport CRDs to be served', timeoutMs: 30_000 });
}
