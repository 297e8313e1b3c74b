/** Parsers for the units config values carry. Each returns undefined for text it does not accept. */

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/** "250ms", "10s", "5m", "1h" -> milliseconds. */
export function parseDurationMs(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text.trim())
  if (!m) return undefined
  return Math.round(Number(m[1]) * DURATION_UNITS_MS[m[2]!]!)
}
