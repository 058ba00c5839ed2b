// A token bucket per key (the calling node): `burst` calls at once, then `perSecond` on average.
// Keys are authenticated node names, so the map is bounded by the nodes the CA vouched for; buckets
// that have refilled completely are dropped when the map grows, as they carry no state.

export interface RateLimit {
  /** Calls allowed at once from one key. */
  burst: number;
  /** Tokens added per second, up to `burst`. */
  perSecond: number;
}

/**
 * CSRs per node. A node with a few hundred service accounts that starts (or reconnects after the
 * controller was away) asks for all of them at once; after that it renews each at half-life and
 * retries failures with backoff starting at a second, far below 10 a second.
 */
export const DEFAULT_CSR_RATE_LIMIT: Readonly<RateLimit> = { burst: 500, perSecond: 10 };

const PRUNE_ABOVE = 1024;

export class KeyedTokenBucket {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    readonly limit: Readonly<RateLimit>,
    private readonly now: () => number = () => performance.now(),
  ) {
    if (!(limit.burst >= 1) || !(limit.perSecond > 0) || !Number.isFinite(limit.burst) || !Number.isFinite(limit.perSecond)) {
      throw new RangeError(`rate limit needs burst >= 1 and perSecond > 0, got ${JSON.stringify(limit)}`);
    }
  }

  /** Takes one token for `key`; false when its bucket is empty. */
  take(key: string): boolean {
    const t = this.now();
    const b = this.buckets.get(key) ?? { tokens: this.limit.burst, at: t };
    b.tokens = Math.min(this.limit.burst, b.tokens + ((t - b.at) / 1000) * this.limit.perSecond);
    b.at = t;
    if (this.buckets.size >= PRUNE_ABOVE && !this.buckets.has(key)) this.prune(t);
    this.buckets.set(key, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Seconds until `key` has a token again (0 when it has one). */
  retryAfterSeconds(key: string): number {
    const b = this.buckets.get(key);
    if (!b) return 0;
    const tokens = Math.min(this.limit.burst, b.tokens + ((this.now() - b.at) / 1000) * this.limit.perSecond);
    return tokens >= 1 ? 0 : Math.ceil((1 - tokens) / this.limit.perSecond);
  }

  private prune(t: number): void {
    for (const [k, b] of this.buckets) {
      if (b.tokens + ((t - b.at) / 1000) * this.limit.perSecond >= this.limit.burst) this.buckets.delete(k);
    }
  }
}
