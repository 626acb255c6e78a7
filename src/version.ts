// kube-pcap's version, from package.json: what `kube-pcap --version` prints and what pcapng
// files name as the application that wrote them (shb_userappl).
import { readFileSync } from 'node:fs';

export const KUBE_PCAP_VERSION: string = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
