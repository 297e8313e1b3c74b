/** Small helpers shared by the data commands. */
import { once } from 'node:events'
import { createWriteStream } from 'node:fs'
import { rename, rm } from 'node:fs/promises'
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

/**
 * Writes a download to `local` ("-": stdout). A file is written as `<local>.fabric-partial` and
 * renamed into place only once `fill` resolves, so LOCAL is never left half written; when `fill`
 * throws the partial file is removed.
 */
export async function downloadTo(local: string, fill: (write: (chunk: Uint8Array) => Promise<void>) => Promise<void>): Promise<void> {
  const toStdout = local === '-'
  const tmp = `${local}.fabric-partial`
  const out = toStdout ? process.stdout : createWriteStream(tmp)
  const write = async (chunk: Uint8Array) => {
    if (!out.write(chunk)) await once(out, 'drain')
  }
  try {
    await fill(write)
    if (toStdout) return
    out.end()
    await once(out, 'finish')
    await rename(tmp, local)
  } catch (err) {
    if (!toStdout) {
      out.destroy()
      await rm(tmp, { force: true })
    }
    throw err
  }
}
