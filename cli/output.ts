/** Output helpers shared by commands: `-o json` prints one JSON document, `-o table` aligned text. */
import { Option } from 'commander'

export type OutputFormat = 'table' | 'json'

export const outputOption = () => new Option('-o, --output <format>', 'output format').choices(['table', 'json']).default('table')

/** JSON with bigints as numbers when they fit, strings otherwise. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? (v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString()) : v), 2)
}

/** "key  value" lines with the values aligned. */
export function keyValues(rows: ReadonlyArray<readonly [string, string]>): string {
  const width = Math.max(0, ...rows.map(([k]) => k.length))
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n')
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB']

export function formatBytes(bytes: number | bigint): string {
  let n = Number(bytes)
  let i = 0
  while (n >= 1024 && i < UNITS.length - 1) {
    n /= 1024
    i++
  }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${UNITS[i]}`
}

export function formatDuration(ms: number | bigint): string {
  let s = Math.floor(Number(ms) / 1000)
  const d = Math.floor(s / 86400)
  s -= d * 86400
  const h = Math.floor(s / 3600)
  s -= h * 3600
  const m = Math.floor(s / 60)
  s -= m * 60
  return [d && `${d}d`, (d || h) && `${h}h`, (d || h || m) && `${m}m`, `${s}s`].filter(Boolean).join(' ')
}
