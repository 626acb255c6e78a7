// A pass-through stage that shows each chunk to a callback on its way (counting bytes on the
// wire, hashing an upload), without holding or copying it.
import { Transform } from 'node:stream';

export function chunkTap(onChunk: (chunk: Buffer) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      onChunk(chunk);
      cb(null, chunk);
    },
  });
}
