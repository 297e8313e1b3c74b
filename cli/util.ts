/** Small helpers shared by the data commands. */
import { InvalidArgumentError, Option } from 'commander'
import { FabricError } from '../node/errors/index.ts'

/** Commander parser for non-negative integers (positions, counts). */
export function parseCount(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError(`expected a whole number, got ${JSON.stringify(value)}`)
  const n = Number(value)
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(`${value} is too large`)
  return n
}

/** Checks JSON text given on the command line before anything is sent. */
export function checkJsonArg(text: string, what: string): string {
  try {
    JSON.parse(text)
  } catch (err) {
    throw FabricError.invalidArgument(`${what} is not valid JSON: ${(err as Error).message}`)
  }
  return text
}

/** Pretty-prints JSON text for people (2-space indent); leaves invalid text as is. */
export function prettyJson(text: string): string {
  try {
    return JSON.stringify(JSON.parse(text), null, 2)
  } catch {
    return text
  }
}

export function writeLine(line: string): void {
  process.stdout.write(`${line}\n`)
}

/** Protobuf timestamp -> ISO string. */
export function iso(ts: { seconds: bigint; nanos: number } | undefined): string {
  if (!ts) return ''
  return new Date(Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6)).toISOString()
}

/** Renders rows as aligned columns with a header. */
export function columns(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')
  return [line(header), ...rows.map(line)].join('\n')
}

/** `--at NAME`: read as of a snapshot of the path's volume. */
export const atOption = () => new Option('--at <snapshot>', "read as of this snapshot of the path's volume").conflicts('seq')
