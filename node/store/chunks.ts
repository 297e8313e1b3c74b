/**
 * Content-addressed chunk bytes in append-only pack files, indexed in LevelDB.
 *
 * Why not keep the bytes in LevelDB: compaction rewrites every value several times, so 256 KiB
 * chunks go in at ~40 MB/s, and its mmapped table files inflate the node's RSS. Here the bytes
 * are written once, to `<dir>/%08d.pack`, and LevelDB only holds `chunk/<sha256>` -> where they
 * are (pack, offset, length). stage() appends and fsyncs but returns the index entries instead of
 * writing them: the caller commits them in its own batch, atomically with the state that refers
 * to the chunks. Until then the bytes are unreferenced, as are bytes a crash leaves at the end of
 * a pack; both are harmless and never read.
 */
import { mkdir, open, readdir, stat, unlink, type FileHandle } from 'node:fs/promises'
import path from 'node:path'
import { FabricError } from '../errors/index.ts'
import { Lifecycle, type Service } from '../lifecycle/index.ts'
import type { Logger } from '../log/index.ts'
import type { BatchOp, Store } from './index.ts'
import * as keys from './keys.ts'

const DEFAULT_PACK_BYTES = 256 * 1024 * 1024
const PACK_NAME = /^(\d{8,})\.pack$/
const SHA256_HEX = /^[0-9a-f]{64}$/
/** u32 pack, u64 offset, u32 length, then (since chunk GC) f64 time staged in ms. */
const LOCATION_BYTES = 24
const LEGACY_LOCATION_BYTES = 16
/** Packs written to within this long are not compacted (uploads index their chunks sooner). */
const COMPACT_MIN_AGE_MS = 3_600_000
/** A pack is compacted once less than this share of its bytes is still indexed. */
const COMPACT_LIVE_RATIO = 0.5
const MAX_CHUNK_BYTES = 0xffffffff

export const packName = (pack: number): string => `${String(pack).padStart(8, '0')}.pack`

interface Location {
  pack: number
  offset: number
  length: number
  /** When the chunk was staged (0 for entries written before this was kept). */
  stagedMs: number
}

function encodeLocation(at: Location): Uint8Array {
  const bytes = new Uint8Array(LOCATION_BYTES)
  const view = new DataView(bytes.buffer)
  view.setUint32(0, at.pack)
  view.setBigUint64(4, BigInt(at.offset))
  view.setUint32(12, at.length)
  view.setFloat64(16, at.stagedMs)
  return bytes
}

function decodeLocation(sha256: string, bytes: Uint8Array): Location {
  if (bytes.byteLength !== LOCATION_BYTES && bytes.byteLength !== LEGACY_LOCATION_BYTES) {
    throw FabricError.internal(`the index entry of chunk ${sha256} is ${bytes.byteLength} bytes, not a location`, { details: { chunk: sha256 } })
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  return { pack: view.getUint32(0), offset: Number(view.getBigUint64(4)), length: view.getUint32(12), stagedMs: bytes.byteLength === LOCATION_BYTES ? view.getFloat64(16) : 0 }
}

/** The pack appended to; position is where the next byte goes (our own count, writes are positional). */
interface Writer {
  pack: number
  fh: FileHandle
  position: number
}

export interface ChunkStoreOptions {
  /** Directory of the pack files (created if missing). */
  dir: string
  /** The index. Started and stopped by the caller. */
  store: Store
  log: Logger
  /** A new pack starts when the next chunk would take the current one past this. Default 256 MiB. */
  packBytes?: number
  /** compact() leaves packs written to within this long alone. Default 1 hour. */
  compactMinAgeMs?: number
}

export class ChunkStore implements Service {
  readonly name = 'chunks'
  private readonly lifecycle = new Lifecycle(() => this.doStart(), () => this.doStop())
  private readonly packBytes: number
  private writer: Writer | undefined
  /** Highest pack number created or tried: numbers are never reused, so a failed pack is never appended to again. */
  private lastPack = 0
  /** Stage calls waiting for the next append; the running drain loop, if any. */
  private queue: Array<{ chunks: Map<string, Uint8Array>; resolve: (ops: BatchOp[]) => void; reject: (err: unknown) => void }> = []
  private draining: Promise<void> | undefined
  /** Read handles, opened on first use; promises so concurrent first reads share one open. */
  private readonly readers = new Map<number, Promise<FileHandle>>()
  private closed = false

  constructor(private readonly o: ChunkStoreOptions) {
    this.packBytes = o.packBytes ?? DEFAULT_PACK_BYTES
    if (!Number.isSafeInteger(this.packBytes) || this.packBytes < 1) {
      throw FabricError.invalidArgument(`packBytes: expected a positive integer, got ${o.packBytes}`)
    }
  }

  start(): Promise<void> {
    return this.lifecycle.start()
  }

  stop(): Promise<void> {
    return this.lifecycle.stop()
  }

  /**
   * Appends the chunks (each sha once, however often it is passed), makes them durable, and
   * returns the ops that index them, for the caller to commit. It does not look at the index:
   * deduplication against chunks already held is the caller's choice. Throws when the bytes
   * cannot be written or synced; nothing is indexed then and the call can be retried.
   */
  async stage(chunks: Array<{ sha256: string; data: Uint8Array }>): Promise<BatchOp[]> {
    const unique = new Map<string, Uint8Array>()
    for (const { sha256, data } of chunks) {
      if (!SHA256_HEX.test(sha256)) throw FabricError.invalidArgument(`chunk hash: expected 64 lowercase hex digits, got "${sha256}"`)
      if (data.byteLength > MAX_CHUNK_BYTES) throw FabricError.invalidArgument(`chunk ${sha256} is ${data.byteLength} bytes, more than ${MAX_CHUNK_BYTES}`)
      if (!unique.has(sha256)) unique.set(sha256, data)
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ chunks: unique, resolve, reject })
      if (!this.draining) this.draining = this.drain()
    })
  }

  /**
   * Group commit: calls queued while an append runs share the next append and its fsync, so
   * many small stage calls (one per chunk of an upload) cost one datasync per group.
   */
  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const group = this.queue
      this.queue = []
      const merged = new Map<string, Uint8Array>()
      for (const g of group) for (const [sha, data] of g.chunks) if (!merged.has(sha)) merged.set(sha, data)
      try {
        const ops = await this.append(merged)
        const bySha = new Map(ops.map((op) => [op.key, op]))
        for (const g of group) g.resolve([...g.chunks.keys()].map((sha) => bySha.get(keys.chunk(sha))!))
      } catch (err) {
        for (const g of group) g.reject(err)
      }
    }
    this.draining = undefined
  }

  /** Whether the chunk is indexed here (a synchronous point read: it is on upload hot paths). */
  has(sha256: string): boolean {
    return this.o.store.getSync(keys.chunk(sha256)) !== undefined
  }

  /** The chunk's bytes, or undefined if it is not indexed. The hash is not checked here. */
  async read(sha256: string): Promise<Uint8Array | undefined> {
    try {
      return await this.readOnce(sha256)
    } catch (err) {
      // compact() may have moved the chunk (and removed its pack) between reading the index and
      // reading the pack: the index says where it is now.
      if (this.closed) throw err
      return this.readOnce(sha256)
    }
  }

  private async readOnce(sha256: string): Promise<Uint8Array | undefined> {
    // The index entry is small and hot: read it off the thread pool, which the reads use.
    const value = this.o.store.getSync(keys.chunk(sha256))
    if (value === undefined) return undefined
    const at = decodeLocation(sha256, value)
    const data = new Uint8Array(at.length)
    if (at.length === 0) return data
    const fh = await this.reader(at.pack, sha256)
    for (let done = 0; done < at.length; ) {
      const { bytesRead } = await fh.read(data, done, at.length - done, at.offset + done)
      if (bytesRead === 0) {
        throw FabricError.internal(`chunk ${sha256} is indexed at bytes ${at.offset}..${at.offset + at.length} of pack ${packName(at.pack)}, past its end`, {
          details: { chunk: sha256, pack: packName(at.pack) },
        })
      }
      done += bytesRead
    }
    return data
  }

  /** Bytes in pack files, including unreferenced ones. */
  async bytes(): Promise<number> {
    let total = 0
    for (const name of await readdir(this.o.dir)) {
      if (PACK_NAME.test(name)) total += await stat(path.join(this.o.dir, name)).then((s) => s.size, () => 0)
    }
    return total
  }

  /**
   * Drops the index entry of every chunk `keep` says no: its bytes become dead space in their
   * pack, which compact() gives back. Resolves with how many entries went.
   */
  async sweep(keep: (sha256: string, stagedMs: number) => boolean): Promise<number> {
    let ops: BatchOp[] = []
    let removed = 0
    for await (const [k, v] of this.o.store.entries({ gte: keys.chunkPrefix, lt: keys.prefixEnd(keys.chunkPrefix) })) {
      const sha256 = k.slice(keys.chunkPrefix.length)
      if (keep(sha256, decodeLocation(sha256, v).stagedMs)) continue
      ops.push({ type: 'del', key: k })
      removed++
      if (ops.length >= 1000) {
        await this.o.store.batch(ops)
        ops = []
      }
    }
    await this.o.store.batch(ops)
    if (removed > 0) this.o.log.info({ chunks: removed }, 'chunks no volume needs dropped from the index')
    return removed
  }

  /**
   * Gives back the space of dead bytes (chunks dropped by sweep, or staged and never indexed):
   * every pack but the one being appended to, not written to for compactMinAgeMs, with less
   * than half its bytes indexed, has its live chunks appended anew (stage), re-indexed, and is
   * then deleted. Must not run concurrently with sweep (DataPlane runs both in one queue); reads
   * that raced the move retry at the new place (read).
   */
  async compact(): Promise<{ packs: number; bytesReclaimed: number }> {
    const live = new Map<number, Array<{ sha256: string; at: Location }>>()
    for await (const [k, v] of this.o.store.entries({ gte: keys.chunkPrefix, lt: keys.prefixEnd(keys.chunkPrefix) })) {
      const sha256 = k.slice(keys.chunkPrefix.length)
      const at = decodeLocation(sha256, v)
      let list = live.get(at.pack)
      if (!list) live.set(at.pack, (list = []))
      list.push({ sha256, at })
    }
    const minAgeMs = this.o.compactMinAgeMs ?? COMPACT_MIN_AGE_MS
    let packs = 0
    let bytesReclaimed = 0
    for (const name of await readdir(this.o.dir)) {
      const pack = Number(PACK_NAME.exec(name)?.[1] ?? NaN)
      if (!Number.isFinite(pack) || pack === this.writer?.pack || this.closed) continue
      const file = path.join(this.o.dir, name)
      const info = await stat(file).catch(() => undefined)
      if (!info || Date.now() - info.mtimeMs < minAgeMs) continue
      const chunks = live.get(pack) ?? []
      const liveBytes = chunks.reduce((n, c) => n + c.at.length, 0)
      if (info.size === 0 || liveBytes >= info.size * COMPACT_LIVE_RATIO) continue
      for (let i = 0; i < chunks.length; i += 64) {
        const group: Array<{ sha256: string; data: Uint8Array }> = []
        for (const c of chunks.slice(i, i + 64)) {
          const data = await this.read(c.sha256)
          if (data) group.push({ sha256: c.sha256, data })
        }
        // Re-indexed only if still where they were read from (not dropped meanwhile), keeping
        // the time each was first staged.
        const ops = (await this.stage(group)).filter((op) => {
          if (op.type !== 'put') return false
          const sha256 = op.key.slice(keys.chunkPrefix.length)
          const now = this.o.store.getSync(op.key)
          const before = chunks.find((c) => c.sha256 === sha256)!.at
          if (!now || decodeLocation(sha256, now).pack !== pack) return false
          op.value = encodeLocation({ ...decodeLocation(sha256, op.value), stagedMs: before.stagedMs })
          return true
        })
        await this.o.store.batch(ops, { sync: true })
      }
      const reader = this.readers.get(pack)
      this.readers.delete(pack)
      await reader?.then((fh) => fh.close(), () => undefined)
      await unlink(file)
      packs++
      bytesReclaimed += info.size - liveBytes
      this.o.log.info({ pack: name, bytes: info.size, liveBytes, moved: chunks.length }, 'chunk pack compacted')
    }
    if (packs > 0) await syncDir(this.o.dir)
    return { packs, bytesReclaimed }
  }

  private async append(chunks: Map<string, Uint8Array>): Promise<BatchOp[]> {
    if (this.closed) throw FabricError.unavailable('the chunk store is stopped')
    if (chunks.size === 0) return []
    const ops: BatchOp[] = []
    // Chunks bound for the same pack go out in one writev, then the pack gets one datasync.
    let pending: Uint8Array[] = []
    let pendingBytes = 0
    try {
      let w = (this.writer ??= await this.createPack())
      for (const [sha256, data] of chunks) {
        const length = data.byteLength
        const offset = w.position + pendingBytes
        if (offset >= this.packBytes || (offset > 0 && offset + length > this.packBytes)) {
          await this.flush(w, pending, pendingBytes)
          pending = []
          pendingBytes = 0
          await w.fh.datasync()
          await w.fh.close()
          this.writer = undefined
          w = this.writer = await this.createPack()
        }
        ops.push({ type: 'put', key: keys.chunk(sha256), value: encodeLocation({ pack: w.pack, offset: w.position + pendingBytes, length, stagedMs: Date.now() }) })
        if (length > 0) pending.push(data)
        pendingBytes += length
      }
      await this.flush(w, pending, pendingBytes)
      await w.fh.datasync()
      return ops
    } catch (cause) {
      // After a failed write or fsync the file's unsynced tail cannot be trusted (Linux may drop
      // the dirty pages and report the error once: https://lwn.net/Articles/752063/), so the next
      // call starts a new pack.
      const pack = this.writer?.pack ?? this.lastPack
      await this.writer?.fh.close().catch(() => undefined)
      this.writer = undefined
      const code = (cause as NodeJS.ErrnoException).code
      this.o.log.warn({ pack: packName(pack), err: (cause as Error).message }, 'appending chunks failed; the next append starts a new pack')
      const message = `cannot append chunks to pack ${packName(pack)} in ${this.o.dir}`
      const options = { cause, details: { dir: this.o.dir, pack: packName(pack) } }
      throw code === 'ENOSPC' || code === 'EDQUOT' ? FabricError.resourceExhausted(message, options) : FabricError.internal(message, options)
    }
  }

  private async flush(w: Writer, buffers: Uint8Array[], bytes: number): Promise<void> {
    if (bytes === 0) return
    const { bytesWritten } = await w.fh.writev(buffers, w.position)
    if (bytesWritten !== bytes) throw new Error(`short write: ${bytesWritten} of ${bytes} bytes`)
    w.position += bytes
  }

  /** Creates the next pack and makes its name durable before anything in it can be indexed. */
  private async createPack(): Promise<Writer> {
    const pack = ++this.lastPack
    const fh = await open(path.join(this.o.dir, packName(pack)), 'wx')
    try {
      await syncDir(this.o.dir)
    } catch (err) {
      await fh.close().catch(() => undefined)
      throw err
    }
    this.o.log.debug({ pack: packName(pack) }, 'new chunk pack')
    return { pack, fh, position: 0 }
  }

  private reader(pack: number, sha256: string): Promise<FileHandle> {
    if (this.closed) return Promise.reject(FabricError.unavailable('the chunk store is stopped'))
    let fh = this.readers.get(pack)
    if (!fh) {
      fh = open(path.join(this.o.dir, packName(pack)), 'r').catch((cause: unknown) => {
        this.readers.delete(pack)
        throw FabricError.internal(`chunk ${sha256} is indexed in pack ${packName(pack)}, which cannot be opened`, {
          cause,
          details: { chunk: sha256, pack: packName(pack) },
        })
      })
      this.readers.set(pack, fh)
    }
    return fh
  }

  private async doStart(): Promise<void> {
    const dir = path.resolve(this.o.dir)
    const created = await mkdir(dir, { recursive: true })
    // A directory just made is only durable once its parent is synced, and so on up to the
    // first directory that existed.
    if (created !== undefined) {
      for (let d = dir; d !== path.dirname(d); d = path.dirname(d)) {
        await syncDir(path.dirname(d))
        if (d === path.resolve(created)) break
      }
    }
    const packs = (await readdir(this.o.dir)).map((name) => PACK_NAME.exec(name)?.[1]).filter((n) => n !== undefined).map(Number)
    this.lastPack = Math.max(0, ...packs)
    if (this.lastPack === 0) {
      this.writer = await this.createPack()
    } else {
      const fh = await open(path.join(this.o.dir, packName(this.lastPack)), 'r+')
      // Appends go after whatever the file holds, including a torn tail nothing indexes.
      this.writer = { pack: this.lastPack, fh, position: (await fh.stat()).size }
    }
    this.o.log.info({ dir: this.o.dir, pack: packName(this.lastPack), offset: this.writer.position }, 'chunk store open')
  }

  private async doStop(): Promise<void> {
    this.closed = true
    await this.draining
    await this.writer?.fh.close()
    this.writer = undefined
    const readers = [...this.readers.values()]
    this.readers.clear()
    // FileHandle.close waits for reads in flight on that handle.
    await Promise.all(readers.map((fh) => fh.then((h) => h.close(), () => undefined)))
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}
