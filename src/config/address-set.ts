// A set of client addresses given as addresses or CIDRs (--trusted-proxies,
// --shared-client-addresses). IPv4 clients of a dual-stack socket arrive as ::ffff:a.b.c.d;
// they are matched as the IPv4 address they are.
import { BlockList, isIP } from 'node:net';

export type AddressSet = (address: string | undefined) => boolean;

/** Parses each entry; a malformed one is an error naming the flag, never silently skipped. */
export function addressSet(entries: string[], flag: string): AddressSet {
  const list = new BlockList();
  for (const entry of entries) {
    const [addr, bits, extra] = entry.split('/');
    const family = isIP(addr ?? '');
    if (family === 0 || extra !== undefined) throw new Error(`${flag}: "${entry}" is not an address or CIDR`);
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (bits === undefined) {
      list.addAddress(addr!, type);
      continue;
    }
    const prefix = /^\d{1,3}$/.test(bits) ? Number(bits) : NaN;
    if (!(prefix >= 0 && prefix <= (family === 4 ? 32 : 128))) throw new Error(`${flag}: "${entry}" has no valid prefix length`);
    list.addSubnet(addr!, prefix, type);
  }
  if (entries.length === 0) return () => false;
  return (address) => {
    if (!address) return false;
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
    const plain = mapped ? mapped[1]! : address;
    const family = isIP(plain);
    if (family === 0) return false;
    return list.check(plain, family === 4 ? 'ipv4' : 'ipv6');
  };
}

/** What stands for many clients unless configured otherwise: loopback (kubectl port-forward). */
export const LOOPBACK = ['127.0.0.0/8', '::1'];
