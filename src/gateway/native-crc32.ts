// archiver computes zip CRC-32s with the crc-32 package, a pure-JavaScript implementation
// (about 1.6 GB/s here, a third of the gateway's CPU at full speed); Node's zlib.crc32 is
// native (about 6.6 GB/s). Both compute the same function, so the shared crc-32 module
// object gets the native one, after checking on a probe that they agree. If the module
// cannot be found or disagrees, nothing changes and zips are only slower.
import { createRequire } from 'node:module';
import { crc32 } from 'node:zlib';

interface Crc32Module {
  buf(data: Uint8Array, seed?: number): number;
}

let applied: boolean | undefined;

export function useNativeCrc32(): boolean {
  if (applied !== undefined) return applied;
  applied = false;
  try {
    const mod = createRequire(import.meta.url)('crc-32') as Crc32Module;
    const probe = Buffer.from('kube-pcap: 123456789');
    const native = (data: Uint8Array, seed?: number): number => crc32(data, (seed ?? 0) >>> 0) | 0;
    if (mod.buf(probe, 0) !== native(probe, 0) || mod.buf(probe, 0x1234567) !== native(probe, 0x1234567)) return false;
    mod.buf = native;
    applied = true;
  } catch {
    // crc-32 not where archiver's dependency would be: leave archiver as it is.
  }
  return applied;
}
