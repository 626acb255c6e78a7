// Listeners put on emitters that outlive their listener: a leader's work listens to the
// gateway's shared caches (capture-cache.ts), which stay when that work stops, so everything
// it put on them is taken off together when it stops.
type Emitter<A extends unknown[]> = { on(e: string, l: (...a: A) => void): unknown; off(e: string, l: (...a: A) => void): unknown };

export class Listeners {
  private readonly offs: (() => void)[] = [];

  on<A extends unknown[]>(target: Emitter<A>, event: string, listener: (...a: A) => void): void {
    target.on(event, listener);
    this.offs.push(() => target.off(event, listener));
  }

  offAll(): void {
    for (const off of this.offs.splice(0)) off();
  }
}
