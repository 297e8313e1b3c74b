/**
 * The snapshot archive format (docs/snapshots.md): a tar whose first entry is manifest.json, then
 * one payload entry per table and stream and one per file, in the manifest's order. Encoding and
 * checking the manifest and the JSON-lines payloads is pure; the tar itself is read and written
 * with tar-stream, only here.
 */
import { extract as tarExtract, pack as tarPack } from 'tar-stream'
import { z } from 'zod'
import { parseDatasetPath, validateFileName, validateKey, type DatasetKind } from '../catalog/index.ts'
import { FabricError } from '../errors/index.ts'
import { ascending } from './order.ts'

export const ARCHIVE_FORMAT = 'fabric-snapshot-archive'
export const ARCHIVE_VERSION = 1
export const MANIFEST_NAME = 'manifest.json'
/** A manifest is read into memory: this bounds it (about a million files). */
export const MAX_MANIFEST_BYTES = 256 * 1024 * 1024

export interface ManifestDataset {
  /** Path inside the volume, without a leading "/" ("line1/images"). */
  path: string
  kind: DatasetKind
  description: string
  /** Documents, files or events. */
  count: number
}

export interface ManifestEntry {
  name: string
  /** The dataset's path inside the volume. */
  dataset: string
  size: number
  sha256: string
}

export interface Manifest {
  format: typeof ARCHIVE_FORMAT
  version: typeof ARCHIVE_VERSION
  volume: string
  snapshot: string
  seq: number
  /** The snapshot's time (ISO 8601), the time of its record in the log. */
  created: string
  /** DataPlane.contentHash at the snapshot: what `snap show` prints at any site of the source. */
  contentHash: string
  /** The portable hash (hash.ts): what an import of this archive reproduces. */
  portableHash: string
  datasets: ManifestDataset[]
  entries: ManifestEntry[]
}

// ---- entry names ----

/** Every dataset's entries are under its own directory: datasets do not nest, so names never clash. */
export const tableEntry = (ds: string) => `datasets/${ds}/table.jsonl`
export const streamEntry = (ds: string) => `datasets/${ds}/stream.jsonl`
export const fileEntry = (ds: string, name: string) => `datasets/${ds}/files/${name}`
/** The file name in its dataset of a files entry. */
export const fileNameOf = (ds: string, entry: string) => entry.slice(`datasets/${ds}/files/`.length)

/** The manifest as written: fixed key order, two-space indent, a final newline. */
export function encodeManifest(m: Manifest): Uint8Array {
  const ordered: Manifest = {
    format: m.format,
    version: m.version,
    volume: m.volume,
    snapshot: m.snapshot,
    seq: m.seq,
    created: m.created,
    contentHash: m.contentHash,
    portableHash: m.portableHash,
    datasets: m.datasets.map((d) => ({ path: d.path, kind: d.kind, description: d.description, count: d.count })),
    entries: m.entries.map((e) => ({ name: e.name, dataset: e.dataset, size: e.size, sha256: e.sha256 })),
  }
  return new TextEncoder().encode(`${JSON.stringify(ordered, null, 2)}\n`)
}

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lowercase hex digits')
const count = z.number().int().nonnegative()
const ManifestSchema = z.strictObject({
  format: z.literal(ARCHIVE_FORMAT),
  version: z.literal(ARCHIVE_VERSION),
  volume: z.string(),
  snapshot: z.string(),
  seq: count,
  created: z.string(),
  contentHash: sha256Hex,
  portableHash: sha256Hex,
  datasets: z.array(z.strictObject({ path: z.string(), kind: z.enum(['table', 'files', 'stream']), description: z.string().max(1024), count })),
  entries: z.array(z.strictObject({ name: z.string(), dataset: z.string(), size: count, sha256: sha256Hex })),
})

const bad = (message: string, details: Record<string, string> = {}) => FabricError.invalidArgument(`the archive is not a valid snapshot archive: ${message}`, { details })

/**
 * Parses and checks a manifest: its schema, then that its datasets are valid, sorted and do not
 * nest, and that its entries are exactly each dataset's payloads, in order.
 */
export function parseManifest(bytes: Uint8Array): Manifest {
  let raw: unknown
  try {
    raw = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes))
  } catch (err) {
    throw bad(`${MANIFEST_NAME}: ${(err as Error).message}`, { entry: MANIFEST_NAME })
  }
  const version = (raw as { version?: unknown } | null)?.version
  if (typeof version === 'number' && version > ARCHIVE_VERSION) {
    throw FabricError.invalidArgument(`${MANIFEST_NAME}: archive format version ${version} is newer than this node reads (${ARCHIVE_VERSION}); import it with a newer fabric`, { details: { entry: MANIFEST_NAME } })
  }
  const parsed = ManifestSchema.safeParse(raw)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!
    throw bad(`${MANIFEST_NAME}: ${issue.path.join('.') || '(top)'}: ${issue.message}`, { entry: MANIFEST_NAME })
  }
  const m = parsed.data as Manifest
  const paths = new Set<string>()
  let previous = ''
  for (const d of m.datasets) {
    parseDatasetPath(`/${d.path}`)
    if (previous && !(previous < d.path)) throw bad(`${MANIFEST_NAME}: datasets are not in path order at ${d.path}`)
    previous = d.path
    const segments = d.path.split('/')
    for (let i = 1; i < segments.length; i++) {
      const parent = segments.slice(0, i).join('/')
      if (paths.has(parent)) throw bad(`${MANIFEST_NAME}: dataset ${d.path} is inside dataset ${parent}`)
    }
    paths.add(d.path)
  }
  let i = 0
  const entryAt = (expected: string) => {
    const e = m.entries[i++]
    if (!e || e.name !== expected) throw bad(`${MANIFEST_NAME}: expected entry ${expected}, found ${e ? e.name : 'the end of the entries'}`)
    return e
  }
  for (const d of m.datasets) {
    if (d.kind === 'files') {
      const order = ascending((name, prev) => bad(`${MANIFEST_NAME}: files of ${d.path} are not in name order at ${name} (after ${prev})`))
      let files = 0
      while (i < m.entries.length && m.entries[i]!.dataset === d.path) {
        const e = m.entries[i]!
        if (!e.name.startsWith(`datasets/${d.path}/files/`)) throw bad(`${MANIFEST_NAME}: entry ${e.name} is not a file of ${d.path}`)
        const name = fileNameOf(d.path, e.name)
        validateFileName(name, `/${d.path}/${name}`)
        order(name)
        i++
        files++
      }
      if (files !== d.count) throw bad(`${MANIFEST_NAME}: dataset ${d.path} counts ${d.count} files but has ${files} entries`)
    } else {
      const e = entryAt(d.kind === 'table' ? tableEntry(d.path) : streamEntry(d.path))
      if (e.dataset !== d.path) throw bad(`${MANIFEST_NAME}: entry ${e.name} names dataset ${e.dataset}`)
    }
  }
  if (i !== m.entries.length) throw bad(`${MANIFEST_NAME}: entry ${m.entries[i]!.name} belongs to no dataset`)
  return m
}

// ---- JSON-lines payloads ----

/**
 * A document inside a line: as itself (`"doc":{...}`) when its text has no line break, else as a
 * JSON string (`"json":"..."`). Both keep the document's text byte for byte, which its hash needs;
 * re-serialising would not (number formats, key order, whitespace).
 */
function docLine(head: string, json: string): string {
  return /[\r\n]/.test(json) ? `${head}"json":${JSON.stringify(json)}}\n` : `${head}"doc":${json}}\n`
}

/** A table row: `{"key":K,"doc":DOC}`. Rows are in key order. */
export const tableLine = (key: string, json: string) => docLine(`{"key":${JSON.stringify(key)},`, json)
/** A stream event: `{"doc":DOC}`. Events are in stream order. */
export const eventLine = (json: string) => docLine('{', json)

/** Reads back a line written by docLine after head; throws a message (the caller names where). */
function parseDocLine(line: string, head: string, fields: string[]): string {
  let obj: Record<string, unknown>
  try {
    obj = JSON.parse(line) as Record<string, unknown>
  } catch (err) {
    throw new Error(`invalid JSON: ${(err as Error).message}`)
  }
  const names = obj !== null && typeof obj === 'object' && !Array.isArray(obj) ? Object.keys(obj) : []
  const last = names[names.length - 1]
  if (names.length !== fields.length + 1 || fields.some((f, i) => names[i] !== f) || (last !== 'doc' && last !== 'json')) {
    throw new Error(`expected an object with ${[...fields, 'doc'].map((f) => `"${f}"`).join(', ')}`)
  }
  if (last === 'json') {
    if (typeof obj.json !== 'string') throw new Error('"json" must be a string')
    return obj.json
  }
  const prefix = `${head}"doc":`
  if (!line.startsWith(prefix) || !line.endsWith('}')) throw new Error('not written the way fabric writes archive lines')
  return line.slice(prefix.length, -1)
}

export function parseTableLine(line: string): { key: string; json: string } {
  const key = (() => {
    try {
      return (JSON.parse(line) as { key?: unknown }).key
    } catch {
      return undefined
    }
  })()
  const json = parseDocLine(line, `{"key":${JSON.stringify(key)},`, ['key'])
  if (typeof key !== 'string') throw new Error('"key" must be a string')
  validateKey(key)
  return { key, json }
}

export function parseEventLine(line: string): string {
  return parseDocLine(line, '{', [])
}

/**
 * Splits bytes into lines (without their "\n"), as they arrive; a last line without a "\n" counts
 * too. Bytes that are not UTF-8 throw.
 */
export class LineSplitter {
  private readonly decoder = new TextDecoder('utf-8', { fatal: true })
  private rest = ''

  push(piece: Uint8Array): string[] {
    const parts = (this.rest + this.decoder.decode(piece, { stream: true })).split('\n')
    this.rest = parts.pop()!
    return parts
  }

  end(): string[] {
    const last = this.rest + this.decoder.decode()
    this.rest = ''
    return last ? [last] : []
  }
}

/** The lines of a byte stream. */
export async function* lines(body: AsyncIterable<Uint8Array>): AsyncGenerator<string> {
  const splitter = new LineSplitter()
  for await (const piece of body) yield* splitter.push(piece)
  yield* splitter.end()
}

/** Groups lines into pieces of about `bytes` (fewer, larger writes). */
export async function* pieces(lineSource: AsyncIterable<string>, bytes = 64 * 1024): AsyncGenerator<Uint8Array> {
  let buffered: string[] = []
  let size = 0
  for await (const line of lineSource) {
    buffered.push(line)
    size += line.length
    if (size >= bytes) {
      yield Buffer.from(buffered.join(''))
      buffered = []
      size = 0
    }
  }
  if (buffered.length) yield Buffer.from(buffered.join(''))
}

// ---- tar ----

export type AddEntry = (name: string, size: number, body: Uint8Array | AsyncIterable<Uint8Array>) => Promise<void>

interface Emitter {
  once(event: string, fn: () => void): unknown
  off?(event: string, fn: () => void): unknown
}

/** Resolves when a stream can take more ('drain') or will never take any ('close'). */
function drained(s: Emitter): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      s.off?.('drain', done)
      s.off?.('close', done)
      resolve()
    }
    s.once('drain', done)
    s.once('close', done)
  })
}

/** What a tar yields in one piece at least, so that small headers do not each become a message. */
const MIN_PIECE = 64 * 1024

/**
 * A tar of the entries `produce` adds, as a stream of bytes. Every header is the same but for
 * name and size (mode 0644, owner 0, the given mtime), so the same entries give the same bytes.
 * Entries are written as they are produced, with backpressure: nothing is held beyond a piece.
 */
export async function* writeTar(mtime: Date, produce: (add: AddEntry) => Promise<void>): AsyncGenerator<Uint8Array> {
  const pack = tarPack()
  pack.on('error', () => undefined) // the iteration below throws it
  const add: AddEntry = async (name, size, body) => {
    let finished!: (err?: Error | null) => void
    const done = new Promise<void>((resolve, reject) => (finished = (err) => (err ? reject(err) : resolve())))
    done.catch(() => undefined) // awaited below; a body that fails first must not leave it unhandled
    const sink = pack.entry({ name, size, mtime, mode: 0o644, uid: 0, gid: 0, uname: '', gname: '', type: 'file' }, (err) => finished(err))
    sink.on('error', () => undefined) // reported through the entry's callback
    if (body instanceof Uint8Array) {
      sink.write(body)
    } else {
      for await (const piece of body) {
        if (sink.destroyed) break
        if (!sink.write(piece)) await drained(sink)
      }
    }
    sink.end(undefined)
    await done
  }
  let failure: unknown
  const producing = produce(add).then(
    () => pack.finalize(),
    (err: unknown) => {
      failure = err
      pack.destroy(err instanceof Error ? err : new Error(String(err)))
    },
  )
  let buffered: Uint8Array[] = []
  let size = 0
  try {
    for await (const piece of pack as AsyncIterable<Uint8Array>) {
      if (size === 0 && piece.length >= MIN_PIECE) {
        yield piece
        continue
      }
      buffered.push(piece)
      size += piece.length
      if (size >= MIN_PIECE) {
        yield Buffer.concat(buffered)
        buffered = []
        size = 0
      }
    }
  } catch (err) {
    throw failure ?? err
  } finally {
    pack.destroy()
    await producing
  }
  if (failure) throw failure
  if (size) yield Buffer.concat(buffered)
}

export interface TarEntry {
  name: string
  size: number
  /** Must be read to its end before the next entry is asked for. */
  body: AsyncIterable<Uint8Array>
}

/** The entries of a tar, in order. Anything but regular files is refused. */
export async function* readTar(source: AsyncIterable<Uint8Array>): AsyncGenerator<TarEntry> {
  const ex = tarExtract()
  ex.on('error', () => undefined) // the iteration below throws it
  let feedError: unknown
  const feeding = (async () => {
    try {
      for await (const piece of source) {
        if (ex.destroyed) return
        if (!ex.write(piece)) await drained(ex)
      }
      ex.end(undefined)
    } catch (err) {
      feedError = err
      ex.destroy(err instanceof Error ? err : new Error(String(err)))
    }
  })()
  try {
    for await (const entry of ex) {
      const h = entry.header
      if (h.type !== 'file' && h.type !== 'contiguous-file') {
        throw bad(`entry ${h.name} is a ${h.type}; an archive holds only files`, { entry: h.name })
      }
      const body = async function* () {
        try {
          for await (const piece of entry as AsyncIterable<Uint8Array>) yield piece
        } catch (err) {
          throw feedError ?? unreadable(err)
        }
      }
      yield { name: h.name, size: h.size, body: body() }
      // Whatever the consumer left of the body is skipped.
      if (!entry.destroyed) for await (const _ of entry as AsyncIterable<Uint8Array>) void _
    }
  } catch (err) {
    if (feedError) throw feedError
    throw unreadable(err)
  } finally {
    ex.destroy()
    await feeding
  }
}

function unreadable(err: unknown): FabricError {
  return err instanceof FabricError ? err : bad(`not a readable tar: ${(err as Error).message}`)
}
