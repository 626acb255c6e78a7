// Connections held at once per source address, counted as they arrive, before TLS and
// before any credential (docs/security.md, "A network peer"): one peer cannot take every
// place of --max-connections. Addresses that stand for many clients (a trusted proxy,
// loopback behind `kubectl port-forward`) are not capped this way; the per-identity limits
// after authentication hold for them.
import type { Server } from 'node:net';
import type { AddressSet } from '../config/address-set.js';

export interface PerAddressCap {
  /** Connections one address may hold; 0: no cap. */
  max: number;
  /** Addresses exempt from the cap. */
  exempt: AddressSet;
  onRefused?: () => void;
}

export function capConnectionsPerAddress(server: Server, cap: PerAddressCap): void {
  if (cap.max <= 0) return;
  const held = new Map<string, number>();
  // 'connection' comes with the TCP socket, before the TLS handshake costs anything.
  server.on('connection', (socket) => {
    const address = socket.remoteAddress;
    if (address === undefined || cap.exempt(address)) return;
    const n = held.get(address) ?? 0;
    if (n >= cap.max) {
      cap.onRefused?.();
      socket.destroy();
      return;
    }
    held.set(address, n + 1);
    socket.once('close', () => {
      const left = (held.get(address) ?? 1) - 1;
      if (left > 0) held.set(address, left);
      else held.delete(address);
    });
  });
}
