/** Parsers for the units config values carry. Each returns undefined for text it does not accept. */

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/** "250ms", "10s", "5m", "1h" -> milliseconds. */
export function parseDurationMs(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text.trim())
  if (!m) return undefined
  return Math.round(Number(m[1]) * DURATION_UNITS_MS[m[2]!]!)
}

const SIZE_UNITS: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12 }

/** "512MiB", "2GiB", "100MB", "4096B" -> bytes (binary and decimal units, as written). */
export function parseBytes(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)$/.exec(text.trim())
  if (!m) return undefined
  return Math.round(Number(m[1]) * SIZE_UNITS[m[2]!]!)
}
