/**
 * Per-version serving figures kept by each node: requests, errors, a latency histogram (for the
 * p50 and p99 that `fabric model status` shows, from heartbeats) and, for a shadow, how often its
 * answer differed from the primary's. Prometheus gets the same through node/metrics.
 */

/** Bucket upper bounds in ms: 4 per doubling from 10 us to ~84 s. */
const BOUNDS_MS: number[] = Array.from({ length: 93 }, (_, i) => 0.01 * 2 ** (i / 4))

export class VersionStats {
  requests = 0
  errors = 0
  /** For a shadow: runs whose answer differed from the primary's. */
  differed = 0
  private readonly counts = new Uint32Array(BOUNDS_MS.length + 1)

  observe(ms: number, failed: boolean): void {
    this.requests++
    if (failed) this.errors++
    let lo = 0
    let hi = BOUNDS_MS.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (BOUNDS_MS[mid]! < ms) lo = mid + 1
      else hi = mid
    }
    this.counts[lo]!++
  }

  /** The q-quantile of observed latencies in ms (a bucket's upper bound, within 19 %), 0 if none. */
  quantileMs(q: number): number {
    const total = this.counts.reduce((a, b) => a + b, 0)
    if (total === 0) return 0
    const rank = Math.max(1, Math.ceil(q * total))
    let seen = 0
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i]!
      if (seen >= rank) return BOUNDS_MS[Math.min(i, BOUNDS_MS.length - 1)]!
    }
    return BOUNDS_MS[BOUNDS_MS.length - 1]!
  }
}
