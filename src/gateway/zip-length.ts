// The exact size of a stored (not deflated) files.zip before its first byte
// (docs/downloads.md, "Exact length"). With every entry's size pinned, the archive's layout is
// fixed: per entry a local header, the bytes, a data descriptor (entries are streamed, so
// their CRC follows them) and a central directory header; then the end records. The sizes
// below are those zip-writer.ts writes (archiver's layout, field for field), zip64 included; the
// stream counts what it sends against this figure and cuts the connection rather than send
// a byte more or end a byte short (zip-stream.ts), and test/unit/zip-length.test.ts holds
// the two together for ordinary, many-entry and zip64 archives.

/** Past this, a 32-bit zip field cannot hold a size or an offset. */
export const MAX32 = 0xffffffff;
/** Past this many entries the classic end record cannot count them. */
export const MAX16 = 0xffff;

/** Local file header: 30 bytes and the name (no extra field for a streamed entry). */
const LOCAL_HEADER = 30;
/** Data descriptor: signature, CRC, two sizes of 4 bytes, or of 8 for an entry over 4 GiB. */
const DESCRIPTOR = 16;
const DESCRIPTOR_ZIP64 = 24;
/** Central directory header: 46 bytes, the name, and a 28-byte zip64 extra field when needed. */
const CENTRAL_HEADER = 46;
const ZIP64_EXTRA = 28;
/** End of central directory record; zip64's end record and its locator before it. */
const END = 22;
const ZIP64_END = 56 + 20;

/** Zip64 end records from this total on: classic zip's 32-bit offsets end at 4 GiB. */
export const ZIP64_FROM_BYTES = MAX32 - 64 * 1024 * 1024;

export interface ZipEntrySize {
  name: string;
  size: number;
}

/** Whether the archive is written with zip64 end records whatever its entries need. */
export function forceZip64(entries: ZipEntrySize[]): boolean {
  return entries.reduce((n, e) => n + e.size, 0) >= ZIP64_FROM_BYTES;
}

/** Bytes of the stored zip of these entries, in this order. */
export function storedZipLength(entries: ZipEntrySize[]): number {
  let offset = 0;
  let central = 0;
  for (const e of entries) {
    const name = Buffer.byteLength(e.name);
    const big = e.size > MAX32;
    central += CENTRAL_HEADER + name + (big || offset > MAX32 ? ZIP64_EXTRA : 0);
    offset += LOCAL_HEADER + name + e.size + (big ? DESCRIPTOR_ZIP64 : DESCRIPTOR);
  }
  const zip64 = forceZip64(entries) || entries.length > MAX16 || central > MAX32 || offset > MAX32;
  return offset + central + (zip64 ? ZIP64_END : 0) + END;
}
