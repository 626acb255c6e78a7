// For agents played by a raw socket (test doubles that write their answers byte for byte):
// the paths of the requests that arrive on a connection, one call per request head. GETs
// only: a request has no body, so a head ends each one.
import type { Socket } from 'node:net';

export function onRequestPaths(sock: Socket, onRequest: (path: string) => void): void {
  let head = '';
  sock.on('data', (d: Buffer) => {
    head += d.toString('latin1');
    for (let end = head.indexOf('\r\n\r\n'); end >= 0 && !sock.destroyed; end = head.indexOf('\r\n\r\n')) {
      const path = head.slice(0, end).split(' ')[1]!;
      head = head.slice(end + 4);
      onRequest(path);
    }
  });
}
