// Digests of tokens that some authenticator has accepted, until the token's expiry (or a
// horizon when it has none): they are never rate-limited and never wait behind a flood of
// unknown ones. A digest is forgotten when the token is later rejected. Only digests are
// kept, never a token.
export class KnownTokens {
  private readonly entries = new Map<string, number>();

  constructor(private readonly maxEntries: number, private readonly horizonMs: number, private readonly now: () => number = Date.now) {}

  remember(digest: string, expiresAtMs?: number): void {
    this.entries.delete(digest);
    this.entries.set(digest, Math.min(expiresAtMs ?? Infinity, this.now() + this.horizonMs));
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.entries.delete(oldest.value);
    }
  }

  forget(digest: string): void {
    this.entries.delete(digest);
  }

  has(digest: string): boolean {
    const until = this.entries.get(digest);
    if (until === undefined) return false;
    if (until <= this.now()) {
      this.entries.delete(digest);
      return false;
    }
    return true;
  }
}
