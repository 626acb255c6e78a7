// The exporter's part buffers (docs/export.md, "Memory"); apart from s3-upload.ts, which loads
// the AWS SDK, so the exporter can hold its pool without loading the SDK until an export runs.
/**
 * Part buffers shared by every upload of a gateway replica: allocated on first use, up to
 * `max`, and reused, so export memory is a fixed `max x partSize` however many objects go by
 * and whatever the garbage collector's timing (docs/export.md, "Memory"). An upload holds at
 * most queueSize + 1 of them (one filling, the rest in flight).
 */
export class PartPool {
  private readonly free: Buffer[] = [];
  private allocated = 0;
  private readonly waiting: ((b: Buffer) => void)[] = [];

  constructor(readonly partSize: number, readonly max: number) {}

  async take(): Promise<Buffer> {
    const b = this.free.pop();
    if (b) return b;
    if (this.allocated < this.max) {
      this.allocated++;
      return Buffer.allocUnsafe(this.partSize);
    }
    return await new Promise<Buffer>((resolve) => this.waiting.push(resolve));
  }

  give(b: Buffer): void {
    const next = this.waiting.shift();
    if (next) next(b);
    else this.free.push(b);
  }
}

