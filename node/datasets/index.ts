/**
 * The data plane of a site: tables, files and streams in volumes. Writes go through the volume's
 * log (LogWriter: durable, idempotent) and are acknowledged once applied on this node, so a read
 * here right after sees them; reads come from the local store, at the latest applied position or
 * at any earlier one.
 */
import { createHash } from 'node:crypto'
import { Catalog, validateFileName, validateKey, type DatasetEntry, type VolumeEntry } from '../catalog/index.ts'
import { FabricError } from '../errors/index.ts'
import type { Logger } from '../log/index.ts'
import { MAX_RECORD_BYTES, type Logs } from '../nats/index.ts'
import { chunkStream, chunkSubject, chunkSubjects, Follower, LogWriter, unpack, volumeStream, volumeSubject, type Outcome, type TableOp } from '../replication/index.ts'
import { keys, type BatchOp, type ChunkStore, type Store } from '../store/index.ts'
import { decodeHead, VolumeApplier, type DatasetStat, type StoredDoc, type StoredEvent, type StoredFile } from './apply.ts'
import { CHUNK_BYTES, MAX_BATCH_BYTES, MAX_BATCH_OPS, MAX_DOC_BYTES, MAX_EVENT_BYTES, UPLOAD_WINDOW } from './limits.ts'

export * from './limits.ts'
export type { DatasetStat } from './apply.ts'

export interface Row {
  key: string
  json: string
  version: number
  timeMs: number
}

export interface FileMeta {
  path: string
  dataset: string
  size: number
  sha256: string
  version: number
  timeMs: number
  chunks: string[]
}

export interface StreamEvent {
  seq: number
  json: string
  timeMs: number
}

export interface DataPlaneOptions {
  store: Store
  catalog: Catalog
  logs: () => Logs
  writerId: string
  log: Logger
  /** Where chunk bytes are kept (pack files outside LevelDB). */
  chunks: ChunkStore
  retainAfterAckMs?: number
}

/** Chunks read ahead of the consumer when a file is read. */
const READ_AHEAD = 4

interface VolumeRuntime {
  follower: Follower
  applier: VolumeApplier
}

const decoder = new TextDecoder()
const encoder = new TextEncoder()

export class DataPlane {
  private readonly volumes = new Map<string, VolumeRuntime>()
  readonly writer: LogWriter
  /** Wakes stream subscribers: dataset id -> callbacks with the new last event position. */
  private readonly eventListeners = new Map<string, Set<(seq: number) => void>>()
  private readonly onAdded = (v: VolumeEntry) => void this.openVolume(v).catch((err: unknown) => this.o.log.error({ err, volume: v.path }, 'cannot follow volume'))
  private readonly onRemoved = (v: VolumeEntry) => void this.closeVolume(v.id)

  constructor(private readonly o: DataPlaneOptions) {
    this.writer = new LogWriter({ writerId: o.writerId, store: o.store, logs: o.logs, log: o.log, readChunk: (h) => o.chunks.read(h), retainAfterAckMs: o.retainAfterAckMs })
  }

  private readonly stopping = new AbortController()
  private recovering: Promise<number> | undefined

  async start(): Promise<void> {
    try {
      await this.writer.start()
      for (const v of this.o.catalog.listVolumes()) await this.openVolume(v)
      this.o.catalog.on('volume-added', this.onAdded)
      this.o.catalog.on('volume-removed', this.onRemoved)
    } catch (err) {
      await this.stop()
      throw err
    }
    // Writes accepted before a crash are published again in the background: the node serves
    // meanwhile, and a volume whose log is unreachable does not hold up the others' start.
    this.recovering = this.writer.recover((id) => this.o.catalog.volume(id) !== undefined, this.stopping.signal)
  }

  private republishing: Promise<number> | undefined

  /** Publishes every record still in the outbox again (after a log lost records). */
  private republish(): Promise<number> {
    this.republishing ??= this.writer
      .recover((id) => this.o.catalog.volume(id) !== undefined, this.stopping.signal, { includeAcked: true })
      .finally(() => (this.republishing = undefined))
    return this.republishing
  }

  /** Times volume logs were found to have lost records this node had applied. */
  get logRegressions(): number {
    let n = 0
    for (const rt of this.volumes.values()) n += rt.follower.regressions
    return n
  }

  /** Resolves once the outbox of the previous run is published again (tests, status). */
  recovered(): Promise<number> {
    return this.recovering ?? Promise.resolve(0)
  }

  async stop(): Promise<void> {
    this.stopping.abort()
    this.o.catalog.off('volume-added', this.onAdded)
    this.o.catalog.off('volume-removed', this.onRemoved)
    this.writer.stop()
    await Promise.race([this.recovering, new Promise((r) => setTimeout(r, 2_000).unref())])
    await Promise.all([...this.volumes.keys()].map((id) => this.closeVolume(id)))
  }

  /** Creates the JetStream log of a volume (called by the catalog before it records the volume). */
  static createVolumeLog(logs: () => Logs) {
    return async (volumeId: string) => {
      await logs().ensure(volumeStream(volumeId), volumeSubject(volumeId))
      await logs().ensure(chunkStream(volumeId), chunkSubjects(volumeId), { keyed: true })
    }
  }

  static deleteVolumeLog(logs: () => Logs) {
    return async (volumeId: string) => {
      await logs().remove(volumeStream(volumeId))
      await logs().remove(chunkStream(volumeId))
    }
  }

  private async openVolume(v: VolumeEntry): Promise<void> {
    if (this.volumes.has(v.id)) return
    const chunks = { stage: (c: Array<{ sha256: string; data: Uint8Array }>) => this.o.chunks.stage(c), fetch: (h: string) => this.fetchChunk(v.id, h) }
    const applier = new VolumeApplier(this.o.store, chunks, v.id, this.o.writerId, this.o.log, (ds, seq) => this.eventListeners.get(ds)?.forEach((fn) => fn(seq)))
    const follower = new Follower({
      name: `volume ${v.path}`,
      logs: this.o.logs(),
      stream: volumeStream(v.id),
      store: this.o.store,
      appliedKey: keys.volumeApplied(v.id),
      apply: (batch) => applier.apply(batch),
      log: this.o.log,
      // Records this node accepted may be among those lost: its outbox still has them.
      onRegression: () => void this.republish(),
    })
    this.volumes.set(v.id, { follower, applier })
    await follower.start()
  }

  private async closeVolume(id: string): Promise<void> {
    const rt = this.volumes.get(id)
    this.volumes.delete(id)
    await rt?.follower.stop()
  }

  private runtime(volumeId: string): VolumeRuntime {
    const rt = this.volumes.get(volumeId)
    if (!rt) throw FabricError.unavailable(`volume ${this.o.catalog.volume(volumeId)?.path ?? volumeId} is not open on this node yet`)
    return rt
  }

  /** Appends through the writer and waits until applied here; surfaces a failed condition. */
  private async write(ds: DatasetEntry, record: Parameters<LogWriter['append']>[1], chunks?: string[]): Promise<{ seq: number; outcome: Outcome | undefined }> {
    const rt = this.runtime(ds.volumeId)
    const seq = await this.writer.append(ds.volumeId, record, chunks)
    const outcome = await rt.follower.waitApplied(seq)
    if (outcome?.error) throw outcome.error
    return { seq, outcome }
  }

  // ---- stats ----

  async datasetStat(ds: DatasetEntry): Promise<DatasetStat> {
    return { ...(await this.runtime(ds.volumeId).applier.stat(ds.id)) }
  }

  async volumeStat(v: VolumeEntry): Promise<{ applied: number; lastSeq: number; logBytes: number; datasets: number; bytes: number }> {
    const rt = this.runtime(v.id)
    const [info, chunkInfo] = await Promise.all([this.o.logs().info(volumeStream(v.id)), this.o.logs().info(chunkStream(v.id))])
    const held = this.o.catalog.datasetsIn(v.id)
    let bytes = 0
    for (const ds of held) bytes += (await rt.applier.stat(ds.id)).bytes
    // The log's bytes include its chunk stream: together they are what the volume holds in JetStream.
    return { applied: rt.follower.applied, lastSeq: info.lastSeq, logBytes: info.bytes + chunkInfo.bytes, datasets: held.length, bytes }
  }

  // ---- tables ----

  async put(path: string, key: string, json: string, expected?: number): Promise<number> {
    const ds = this.o.catalog.datasetAt(path, 'table')
    validateKey(key)
    const d = checkJson(json, MAX_DOC_BYTES, `document for key ${JSON.stringify(key)}`)
    return (await this.write(ds, { op: 'put', ds: ds.id, k: key, d, ...(expected !== undefined ? { x: expected } : {}) })).seq
  }

  async delete(path: string, key: string, expected?: number): Promise<{ seq: number; existed: boolean }> {
    const ds = this.o.catalog.datasetAt(path, 'table')
    validateKey(key)
    const { seq, outcome } = await this.write(ds, { op: 'del', ds: ds.id, k: key, ...(expected !== undefined ? { x: expected } : {}) })
    return { seq, existed: outcome?.existed ?? false }
  }

  /** Puts (json set) and deletes (json undefined), all or none. */
  async batch(path: string, ops: Array<{ key: string; json?: string | undefined; expected?: number | undefined }>): Promise<number> {
    const ds = this.o.catalog.datasetAt(path, 'table')
    return (await this.write(ds, { op: 'batch', ds: ds.id, ops: this.batchOps(ops) })).seq
  }

  private batchOps(ops: Array<{ key: string; json?: string | undefined; expected?: number | undefined }>): TableOp[] {
    if (ops.length === 0) throw FabricError.invalidArgument('a batch needs at least one operation')
    if (ops.length > MAX_BATCH_OPS) throw FabricError.invalidArgument(`a batch has ${ops.length} operations; the limit is ${MAX_BATCH_OPS}`, { details: { limit: String(MAX_BATCH_OPS) } })
    let bytes = 0
    const seen = new Set<string>()
    const out = ops.map((op) => {
      validateKey(op.key)
      if (seen.has(op.key)) throw FabricError.invalidArgument(`key ${JSON.stringify(op.key)} appears twice in one batch`, { details: { key: op.key } })
      seen.add(op.key)
      const t: TableOp = { k: op.key }
      if (op.json !== undefined) t.d = checkJson(op.json, MAX_DOC_BYTES, `document for key ${JSON.stringify(op.key)}`)
      if (op.expected !== undefined) t.x = op.expected
      bytes += op.key.length + (t.d?.length ?? 0) + 16
      return t
    })
    if (bytes > MAX_BATCH_BYTES) throw FabricError.invalidArgument(`a batch holds ${bytes} bytes; the limit is ${MAX_BATCH_BYTES}`, { details: { limit: String(MAX_BATCH_BYTES) } })
    return out
  }

  /**
   * Imports documents in atomic batches (as large as the limits allow), keeping up to `window`
   * batches in flight. Resolves with counts once every batch is applied here.
   */
  async import(path: string, docs: AsyncIterable<{ key: string; json: string }>, window = 8): Promise<{ imported: number; batches: number; lastSeq: number }> {
    const ds = this.o.catalog.datasetAt(path, 'table')
    const rt = this.runtime(ds.volumeId)
    let imported = 0
    let batches = 0
    let lastSeq = 0
    const inflight: Array<Promise<number>> = []
    let pending: TableOp[] = []
    let pendingBytes = 0
    const seen = new Set<string>()
    const flush = async () => {
      if (pending.length === 0) return
      const ops = pending
      pending = []
      pendingBytes = 0
      seen.clear()
      batches++
      inflight.push(this.writer.append(ds.volumeId, { op: 'batch', ds: ds.id, ops }))
      if (inflight.length >= window) lastSeq = Math.max(lastSeq, await inflight.shift()!)
    }
    for await (const doc of docs) {
      validateKey(doc.key)
      const d = checkJson(doc.json, MAX_DOC_BYTES, `document for key ${JSON.stringify(doc.key)}`)
      const size = doc.key.length + d.length + 16
      // A key twice in one batch would be ambiguous: the second starts a new batch, so it wins.
      if (pending.length >= MAX_BATCH_OPS || pendingBytes + size > MAX_BATCH_BYTES || seen.has(doc.key)) await flush()
      pending.push({ k: doc.key, d })
      pendingBytes += size
      seen.add(doc.key)
      imported++
    }
    await flush()
    for (const p of inflight) lastSeq = Math.max(lastSeq, await p)
    if (lastSeq > 0) await rt.follower.waitApplied(lastSeq, 120_000)
    return { imported, batches, lastSeq }
  }

  async get(path: string, key: string, atSeq = 0): Promise<Row> {
    const ds = this.o.catalog.datasetAt(path, 'table')
    validateKey(key)
    const found = await this.versionAt(keys.tablePrefix(ds.id), ds.id, key, atSeq)
    const doc = found && unpack<StoredDoc>(found.value)
    if (found && doc?.d) return { key, json: decoder.decode(doc.d), version: found.seq, timeMs: doc.t }
    throw FabricError.notFound(`key ${JSON.stringify(key)} not found in ${path}${atSeq ? ` at position ${atSeq}` : ''}`, { details: { path, key } })
  }

  /**
   * The stored version (or tombstone) of a table key or file at atSeq. The newest (atSeq 0) is
   * two point reads through the head; an older one is one seek.
   */
  private async versionAt(prefix: string, datasetId: string, name: string, atSeq: number): Promise<{ seq: number; value: Uint8Array } | undefined> {
    if (!atSeq) {
      const raw = this.o.store.getSync(keys.head(datasetId, name))
      if (!raw) return undefined
      const { seq } = decodeHead(raw)
      const value = this.o.store.getSync(keys.versionKey(prefix, name, seq))
      return value && { seq, value }
    }
    for await (const [k, value] of this.o.store.entries({ gte: keys.versionKey(prefix, name, atSeq), lt: `${prefix}${name}${keys.AFTER_SEP}`, limit: 1 })) {
      return { seq: keys.splitVersion(prefix, k).seq, value }
    }
    return undefined
  }

  /** Documents in key order: by prefix, or in [from, to). Each key's newest version at atSeq. */
  async *scan(path: string, o: { prefix?: string; from?: string; to?: string; limit?: number; atSeq?: number }): AsyncGenerator<Row> {
    const ds = this.o.catalog.datasetAt(path, 'table')
    if (o.prefix && (o.from || o.to)) throw FabricError.invalidArgument('scan takes a prefix or a from/to range, not both')
    const base = keys.tablePrefix(ds.id)
    const gte = `${base}${o.prefix || o.from || ''}`
    const lt = o.to ? `${base}${o.to}` : keys.prefixEnd(`${base}${o.prefix ?? ''}`)
    yield* versionScan(this.o.store, base, gte, lt, o.atSeq || 0, o.limit || 0, (name, seq, v) => {
      const doc = unpack<StoredDoc>(v)
      return doc.d ? { key: name, json: decoder.decode(doc.d), version: seq, timeMs: doc.t } : undefined
    })
  }

  // ---- files ----

  /**
   * Stores a file from a stream of bytes. Content is cut into CHUNK_BYTES chunks, each addressed
   * by its SHA-256 and stored here and in the volume's chunk stream (chunks the volume has already
   * are not sent again). The file becomes visible when its commit record (name, size, hash, chunk
   * list) is applied from the volume's log, which happens only after every chunk is stored.
   */
  async putFile(path: string, content: AsyncIterable<Uint8Array>, expect: { size?: number | undefined; sha256?: string | undefined } = {}): Promise<{ file: FileMeta; deduplicated: number }> {
    const { ds, name } = this.o.catalog.fileAt(path)
    validateFileName(name, path)
    if (expect.sha256 && !/^[0-9a-f]{64}$/.test(expect.sha256)) throw FabricError.invalidArgument(`sha256 ${JSON.stringify(expect.sha256)} is not 64 lowercase hex digits`)
    this.runtime(ds.volumeId) // the volume must be open here before anything is sent
    const whole = createHash('sha256')
    const chunks: string[] = []
    const sent = new Set<string>()
    const inflight: Array<Promise<void>> = []
    // Index entries of the chunks stored so far, written in groups (one LevelDB batch per chunk
    // cost more than the rest of its bookkeeping). Not fsynced by themselves: the fsynced outbox
    // write of the commit, after them in LevelDB's log, makes them durable.
    let index: BatchOp[] = []
    const writeIndex = async () => {
      const ops = index
      index = []
      await this.o.store.batch(ops)
    }
    let size = 0
    let deduplicated = 0
    let buffer = Buffer.alloc(CHUNK_BYTES)
    let filled = 0

    const emit = async (data: Uint8Array) => {
      const h = createHash('sha256').update(data).digest('hex')
      chunks.push(h)
      // A point read off the thread pool, which the follower's fsynced batches keep busy: the
      // receive loop must not wait behind them.
      if (sent.has(h) || this.o.store.getSync(keys.volumeChunk(ds.volumeId, h)) !== undefined) {
        deduplicated++
        return
      }
      sent.add(h)
      const stored = this.storeChunk(ds.volumeId, h, data, index)
      stored.catch(() => undefined) // awaited below; an upload that fails first must not leave it unhandled
      inflight.push(stored)
      if (inflight.length >= UPLOAD_WINDOW) await inflight.shift()!
      if (index.length >= 512) await writeIndex()
    }
    for await (const piece of content) {
      whole.update(piece)
      size += piece.length
      let offset = 0
      // Whole chunks of a piece go out as views of it, without a copy (clients send chunk-sized
      // pieces); only a chunk that straddles pieces is assembled in the buffer.
      while (filled === 0 && piece.length - offset >= CHUNK_BYTES) {
        await emit(piece.subarray(offset, offset + CHUNK_BYTES))
        offset += CHUNK_BYTES
      }
      while (offset < piece.length) {
        const n = Math.min(CHUNK_BYTES - filled, piece.length - offset)
        buffer.set(piece.subarray(offset, offset + n), filled)
        filled += n
        offset += n
        if (filled === CHUNK_BYTES) {
          const full = buffer
          buffer = Buffer.alloc(CHUNK_BYTES)
          filled = 0
          await emit(full)
        }
      }
    }
    if (filled > 0 || size === 0) await emit(buffer.subarray(0, filled))
    for (const p of inflight) await p
    await writeIndex()
    const sha256 = whole.digest('hex')
    if (expect.size !== undefined && expect.size !== size) {
      throw FabricError.invalidArgument(`upload of ${path}: received ${size} bytes, expected ${expect.size}; nothing was stored`, { details: { path, size: String(size), expected: String(expect.size) } })
    }
    if (expect.sha256 && expect.sha256 !== sha256) {
      throw FabricError.invalidArgument(`upload of ${path}: content has sha256 ${sha256}, expected ${expect.sha256}; nothing was stored`, { details: { path, sha256 } })
    }
    const commitBytes = chunks.length * 66 + name.length + 200
    if (commitBytes > MAX_RECORD_BYTES) throw FabricError.invalidArgument(`${path}: ${size} bytes is more than one file can hold (${chunks.length} chunks)`)
    const { seq } = await this.write(ds, { op: 'file', ds: ds.id, n: name, size, sha: sha256, chunks }, chunks)
    return { file: { path, dataset: ds.path, size, sha256, version: seq, timeMs: Date.now(), chunks }, deduplicated }
  }

  /**
   * Stores one chunk of an upload: durably in this node's chunk store (unless another volume
   * brought it here already) and in the volume's chunk stream, then records that the volume has
   * it. Both are done before the file's commit is accepted, so every node that applies the commit
   * finds the chunk here or in the stream.
   */
  private async storeChunk(volumeId: string, sha256: string, data: Uint8Array, index: BatchOp[]): Promise<void> {
    const held = this.o.chunks.has(sha256)
    const [indexOps] = await Promise.all([held ? [] : this.o.chunks.stage([{ sha256, data }]), this.o.logs().append(chunkSubject(volumeId, sha256), data)])
    index.push(...indexOps, { type: 'put', key: keys.volumeChunk(volumeId, sha256), value: new Uint8Array(0) })
  }

  /** A chunk from a volume's chunk stream, for chunks this node does not hold (yet). */
  private fetchChunk(volumeId: string, sha256: string): Promise<Uint8Array | undefined> {
    return this.o.logs().last(chunkStream(volumeId), chunkSubject(volumeId, sha256))
  }

  async statFile(path: string, atSeq = 0): Promise<FileMeta> {
    const { ds, name } = this.o.catalog.fileAt(path)
    validateFileName(name, path)
    const found = await this.versionAt(keys.filePrefix(ds.id), ds.id, name, atSeq)
    const f = found && unpack<StoredFile>(found.value)
    if (found && f?.sha) return { path, dataset: ds.path, size: f.size!, sha256: f.sha, version: found.seq, timeMs: f.t, chunks: f.chunks! }
    throw FabricError.notFound(`file ${path} not found${atSeq ? ` at position ${atSeq}` : ''}`, { details: { path } })
  }

  /**
   * The content of a file version, chunk by chunk, each verified against its hash. Reads run up
   * to READ_AHEAD chunks ahead of the consumer, so disk and network overlap.
   */
  async *readFile(meta: FileMeta): AsyncGenerator<Uint8Array> {
    const volumeId = this.o.catalog.datasetAt(meta.dataset).volumeId
    const read = async (h: string): Promise<Uint8Array> => {
      // A chunk this node has not fetched yet (a commit applied elsewhere first) comes from the stream.
      const data = (await this.o.chunks.read(h)) ?? (await this.fetchChunk(volumeId, h))
      if (!data) throw FabricError.unavailable(`chunk ${h} of ${meta.path} is not on this node yet`, { details: { path: meta.path, chunk: h } })
      if (createHash('sha256').update(data).digest('hex') !== h) throw FabricError.internal(`chunk ${h} of ${meta.path} is corrupt on this node`, { details: { path: meta.path, chunk: h } })
      return data
    }
    const ahead: Array<Promise<Uint8Array>> = []
    let next = 0
    const refill = () => {
      while (next < meta.chunks.length && ahead.length < READ_AHEAD) {
        const p = read(meta.chunks[next++]!)
        p.catch(() => undefined) // awaited in order below; a consumer that stops early never sees it
        ahead.push(p)
      }
    }
    refill()
    while (ahead.length > 0) {
      const data = await ahead.shift()!
      refill()
      yield data
    }
  }

  /** Files of a dataset, or under a directory in it, at atSeq. */
  async listFiles(path: string, atSeq = 0): Promise<FileMeta[]> {
    const { ds, name } = this.o.catalog.fileAt(path)
    if (name) validateFileName(name, path)
    const base = keys.filePrefix(ds.id)
    const dir = name ? `${name}/` : ''
    const out: FileMeta[] = []
    for await (const f of versionScan(this.o.store, base, `${base}${dir}`, keys.prefixEnd(`${base}${dir}`), atSeq, 0, (n, seq, v) => {
      const sf = unpack<StoredFile>(v)
      return sf.sha ? { path: `${ds.path}/${n}`, dataset: ds.path, size: sf.size!, sha256: sf.sha, version: seq, timeMs: sf.t, chunks: sf.chunks! } : undefined
    })) {
      out.push(f)
    }
    return out
  }

  async deleteFile(path: string): Promise<number> {
    const { ds, name } = this.o.catalog.fileAt(path)
    validateFileName(name, path)
    const { seq, outcome } = await this.write(ds, { op: 'fdel', ds: ds.id, n: name })
    if (!outcome?.existed) throw FabricError.notFound(`file ${path} not found`, { details: { path } })
    return seq
  }

  // ---- streams ----

  /** Appends events in order; resolves with their positions once applied here. */
  async publish(path: string, events: string[]): Promise<number[]> {
    const ds = this.o.catalog.datasetAt(path, 'stream')
    if (events.length === 0) throw FabricError.invalidArgument('publish needs at least one event')
    const payloads = events.map((e, i) => checkJson(e, MAX_EVENT_BYTES, `event ${i + 1}`))
    const rt = this.runtime(ds.volumeId)
    // Appends are issued in order on one connection, so the log keeps this order.
    const seqs = await Promise.all(payloads.map((d) => this.writer.append(ds.volumeId, { op: 'event', ds: ds.id, d })))
    await rt.follower.waitApplied(Math.max(...seqs))
    return seqs
  }

  /**
   * Events from a position or a time, then (with follow) new ones as they are applied, until
   * count events or the signal aborts.
   */
  async *subscribe(path: string, o: { fromSeq?: number; sinceMs?: number; count?: number; follow?: boolean; signal?: AbortSignal }): AsyncGenerator<StreamEvent> {
    const ds = this.o.catalog.datasetAt(path, 'stream')
    let next = o.fromSeq ?? 0
    if (o.sinceMs !== undefined) {
      const tp = keys.eventTimePrefix(ds.id)
      next = Number.MAX_SAFE_INTEGER
      for await (const [k] of this.o.store.entries({ gte: `${tp}${keys.hex(o.sinceMs)}`, lt: keys.prefixEnd(tp), limit: 1 })) next = parseInt(k.slice(k.lastIndexOf('/') + 1), 16)
      if (next === Number.MAX_SAFE_INTEGER) next = this.runtime(ds.volumeId).follower.applied + 1
    }
    let delivered = 0
    const limit = o.count ?? 0
    // `applied` is set by every apply that adds events, so one that lands between reading the
    // store and starting to wait is not missed.
    let applied = false
    let wake: (() => void) | undefined
    const listener = () => {
      applied = true
      wake?.()
    }
    let set = this.eventListeners.get(ds.id)
    if (!set) this.eventListeners.set(ds.id, (set = new Set()))
    set.add(listener)
    const abort = () => wake?.()
    o.signal?.addEventListener('abort', abort)
    try {
      for (;;) {
        const base = keys.eventPrefix(ds.id)
        applied = false
        let found = false
        for await (const [k, v] of this.o.store.entries({ gte: keys.event(ds.id, next), lt: keys.prefixEnd(base) })) {
          const seq = parseInt(k.slice(base.length), 16)
          const ev = unpack<StoredEvent>(v)
          yield { seq, json: decoder.decode(ev.d), timeMs: ev.t }
          found = true
          next = seq + 1
          if (limit && ++delivered >= limit) return
          if (o.signal?.aborted) return
        }
        if (!o.follow || o.signal?.aborted) return
        if (!found && !applied) await new Promise<void>((resolve) => (wake = resolve))
        wake = undefined
      }
    } finally {
      set.delete(listener)
      if (set.size === 0) this.eventListeners.delete(ds.id)
      o.signal?.removeEventListener('abort', abort)
    }
  }
}

/** Parses JSON text and returns its bytes, or throws INVALID_ARGUMENT naming what and why. */
function checkJson(text: string, limit: number, what: string): Uint8Array {
  if (typeof text !== 'string' || text.trim() === '') throw FabricError.invalidArgument(`${what}: empty, expected JSON`)
  const bytes = encoder.encode(text)
  if (bytes.length > limit) throw FabricError.invalidArgument(`${what}: ${bytes.length} bytes; the limit is ${limit}`, { details: { limit: String(limit), size: String(bytes.length) } })
  try {
    JSON.parse(text)
  } catch (err) {
    throw FabricError.invalidArgument(`${what}: invalid JSON: ${(err as Error).message}`)
  }
  return bytes
}

/**
 * Walks versioned keys `<base><name>\0<inv>` in [gte, lt) and yields, per name, the newest version
 * at or before atSeq (0: newest) that `read` turns into a value (undefined: deleted).
 */
async function* versionScan<T>(store: Store, base: string, gte: string, lt: string, atSeq: number, limit: number, read: (name: string, seq: number, v: Uint8Array) => T | undefined): AsyncGenerator<T> {
  const it = store.iterator({ gte, lt })
  let count = 0
  try {
    let entry = await it.next()
    while (entry) {
      const [k, v] = entry
      const { name, seq } = keys.splitVersion(base, k)
      if (atSeq && seq > atSeq) {
        // Newer than asked for: jump to this name's version at atSeq.
        it.seek(keys.versionKey(base, name, atSeq))
        entry = await it.next()
        continue
      }
      const value = read(name, seq, v)
      if (value !== undefined) {
        yield value
        if (limit && ++count >= limit) return
      }
      it.seek(`${base}${name}${keys.AFTER_SEP}`)
      entry = await it.next()
    }
  } finally {
    await it.close()
  }
}
