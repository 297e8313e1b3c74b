/**
 * Applies a volume's log records to the store. Deterministic: every node that applies the same
 * log reaches the same state and the same outcome for every conditional write, which is why
 * conditions (expected versions) are checked here and not where the write was accepted.
 */
import { createHash } from 'node:crypto'
import { FabricError } from '../errors/index.ts'
import type { Logger } from '../log/index.ts'
import type { LogMessage } from '../nats/index.ts'
import {
  decodeVolumeRecord,
  EMPTY_ROLLING_HASH,
  fold,
  isCheckpoint,
  pack,
  unpack,
  type ApplyResult,
  type Outcome,
  type RollingHash,
  type TableOp,
  type VolumeRecord,
} from '../replication/index.ts'
import { keys, type BatchOp, type Store } from '../store/index.ts'

/** A stored table document version or file version; no `d` (table) / no `sha` (file): deleted. */
export interface StoredDoc {
  d?: Uint8Array
  t: number
}
export interface StoredFile {
  size?: number
  sha?: string
  chunks?: string[]
  t: number
}
export interface StoredEvent {
  d: Uint8Array
  t: number
}
export interface StoredSnapshot {
  seq: number
  t: number
}
export interface DatasetStat {
  count: number
  bytes: number
  last: number
}

const EMPTY = new Uint8Array(0)

/** A key's or file's newest version (stored at keys.head); seq 0: never written. */
interface Head {
  seq: number
  size: number
  live: boolean
}

const NO_HEAD: Head = Object.freeze({ seq: 0, size: 0, live: false })
const encodeHead = (h: Head): Uint8Array => pack([h.seq, h.size, h.live ? 1 : 0])
export const decodeHead = (bytes: Uint8Array): Head => {
  const [seq, size, live] = unpack<[number, number, number]>(bytes)
  return { seq, size, live: live === 1 }
}

/** The chunks of a volume, as the applier needs them. */
export interface VolumeChunks {
  /** Makes chunk bytes durable in the node's chunk store; the returned ops index them. */
  stage(chunks: Array<{ sha256: string; data: Uint8Array }>): Promise<BatchOp[]>
  /** A chunk's bytes from the volume's chunk stream; undefined if it is not there (yet). */
  fetch(sha256: string): Promise<Uint8Array | undefined>
  /**
   * Waits a while for the site's copy of the chunk stream to be seen holding these chunks;
   * resolves with those it still does not hold.
   */
  awaitTracked(shas: string[]): Promise<string[]>
  /**
   * Chunks chunk GC removed from the volume, once the batch that did so is committed: their
   * messages in the site's copy of the chunk stream go, and their bytes on this node where no
   * other volume needs them.
   */
  collected(chunks: Array<[string, number]>): void
}

/** Chunks fetched (and held in memory) at once while applying a file commit. */
const FETCH_WINDOW = 16

export class VolumeApplier {
  private readonly stats = new Map<string, DatasetStat>()
  private readonly writers = new Map<string, number>()
  private rolling: RollingHash | undefined

  constructor(
    private readonly store: Store,
    private readonly chunks: VolumeChunks,
    private readonly volumeId: string,
    private readonly myWriterId: string,
    private readonly log: Logger,
    private readonly onEvents: (datasetId: string, lastSeq: number) => void,
  ) {}

  /** The rolling hash of the log as applied here (replication/hash.ts). */
  async rollingHash(): Promise<RollingHash> {
    if (!this.rolling) {
      const raw = await this.store.get(keys.volumeHash(this.volumeId))
      this.rolling = raw ? unpack<RollingHash>(raw) : EMPTY_ROLLING_HASH
    }
    return this.rolling
  }

  async stat(datasetId: string): Promise<DatasetStat> {
    let s = this.stats.get(datasetId)
    if (!s) {
      const raw = await this.store.get(keys.datasetStat(datasetId))
      s = raw ? unpack<DatasetStat>(raw) : { count: 0, bytes: 0, last: 0 }
      this.stats.set(datasetId, s)
    }
    return s
  }

  /**
   * Reads, in one getMany, everything the batch's records look up: the head of every key and file
   * they write, the last applied sequence of writers not known yet, and whether chunks are held.
   */
  private async prefetch(records: Array<{ r: VolumeRecord }>): Promise<Map<string, Uint8Array | undefined>> {
    const wanted = new Set<string>()
    for (const { r } of records) {
      if (r.w !== undefined && !this.writers.has(r.w)) wanted.add(keys.volumeWriter(this.volumeId, r.w))
      switch (r.op) {
        case 'put':
        case 'del':
          wanted.add(keys.head(r.ds, r.k))
          break
        case 'batch':
          for (const op of r.ops) wanted.add(keys.head(r.ds, op.k))
          break
        case 'file':
          for (const h of r.chunks) {
            wanted.add(keys.chunk(h))
            wanted.add(keys.volumeChunk(this.volumeId, h))
            wanted.add(keys.volumeChunkSeen(this.volumeId, h))
            wanted.add(keys.volumeChunkCondemned(this.volumeId, h))
          }
          wanted.add(keys.head(r.ds, r.n))
          break
        case 'cgc':
          for (const [h] of r.c) {
            wanted.add(keys.volumeChunk(this.volumeId, h))
            wanted.add(keys.volumeChunkSeen(this.volumeId, h))
            wanted.add(keys.volumeChunkCondemned(this.volumeId, h))
          }
          break
        case 'fdel':
          wanted.add(keys.head(r.ds, r.n))
          break
        case 'snap':
        case 'snaprm':
          wanted.add(keys.snapshot(this.volumeId, r.name))
          break
      }
    }
    const list = [...wanted]
    const values = await this.store.getMany(list)
    return new Map(list.map((k, i) => [k, values[i]]))
  }

  /**
   * Makes sure every chunk of a file commit is held before the commit applies, and makes them
   * the volume's. Chunks the upload sent are held in this node's pack files (it received the
   * upload) or in the site's copy of the volume's chunk stream (the tracker has seen them there),
   * from which reads take them. Chunks in neither after a wait (the chunk mirror lags the log's
   * by more than that, or lost them) are fetched, from the site's stream or the home's, verified
   * and staged here (durable before the batch that indexes them commits), a window at a time so
   * that memory stays bounded for any file size. A chunk found nowhere fails the batch, which the
   * follower retries. Deduplicated chunks (nx) are the volume's already, which the caller checked.
   */
  private async holdChunks(r: { chunks: string[]; nx?: string[] }, seq: number, state: Map<string, Uint8Array | undefined>, ops: BatchOp[]): Promise<void> {
    const v = this.volumeId
    const dedup = new Set(r.nx ?? [])
    const unheld = [
      ...new Set(r.chunks.filter((h) => !dedup.has(h) && state.get(keys.chunk(h)) === undefined && state.get(keys.volumeChunkSeen(v, h)) === undefined && state.get(keys.volumeChunk(v, h)) === undefined)),
    ]
    const missing = unheld.length > 0 ? await this.chunks.awaitTracked(unheld) : []
    const fetchWindow = (from: number) => {
      const p = Promise.all(
        missing.slice(from, from + FETCH_WINDOW).map(async (sha256) => {
          const data = await this.chunks.fetch(sha256)
          if (!data) throw FabricError.unavailable(`chunk ${sha256} is not in the chunk stream of volume ${v} yet`, { details: { chunk: sha256 } })
          if (createHash('sha256').update(data).digest('hex') !== sha256) throw FabricError.internal(`chunk ${sha256} in the chunk stream of volume ${v} does not match its hash`)
          return { sha256, data }
        }),
      )
      p.catch(() => undefined) // awaited in turn below; a failure before that must not go unhandled
      return p
    }
    // The next window is fetched while this one is written and synced: at most two windows of
    // chunks are in memory, and the network and the disk work at the same time.
    let next = missing.length > 0 ? fetchWindow(0) : undefined
    for (let i = 0; next; i += FETCH_WINDOW) {
      const fetched = await next
      next = i + FETCH_WINDOW < missing.length ? fetchWindow(i + FETCH_WINDOW) : undefined
      ops.push(...(await this.chunks.stage(fetched)))
      for (const c of fetched) state.set(keys.chunk(c.sha256), EMPTY)
    }
    // Each chunk is the volume's, claimed as of this position (chunk GC leaves alone what was
    // claimed after it decided).
    const claim = new TextEncoder().encode(String(seq))
    for (const h of new Set(r.chunks)) {
      const member = keys.volumeChunk(v, h)
      state.set(member, claim)
      ops.push({ type: 'put', key: member, value: claim })
      // Referred to again after chunk GC condemned it: rescued.
      const condemned = keys.volumeChunkCondemned(v, h)
      if (state.get(condemned) !== undefined) {
        state.set(condemned, undefined)
        ops.push({ type: 'del', key: condemned })
      }
    }
  }

  async apply(batch: LogMessage[]): Promise<ApplyResult> {
    const ops: BatchOp[] = []
    const outcomes = new Map<number, Outcome>()
    const touched = new Map<string, DatasetStat>()
    const events = new Map<string, number>()
    const writers = new Map<string, number>()
    const collected: Array<[string, number]> = []

    const records: Array<{ m: LogMessage; r: VolumeRecord }> = []
    for (const m of batch) {
      try {
        records.push({ m, r: decodeVolumeRecord(m.data) })
      } catch (err) {
        this.log.error({ volume: this.volumeId, seq: m.seq, err }, 'undecodable record skipped')
      }
    }
    // Prefetched state, updated as the batch goes: later records see earlier ones' writes.
    const state = await this.prefetch(records)
    const heads = new Map<string, Head>()

    const statFor = async (ds: string) => {
      let s = touched.get(ds)
      if (!s) {
        s = { ...(await this.stat(ds)) }
        touched.set(ds, s)
      }
      return s
    }
    const current = (ds: string, name: string): Head => {
      const key = keys.head(ds, name)
      let h = heads.get(key)
      if (!h) {
        const raw = state.get(key)
        h = raw ? decodeHead(raw) : NO_HEAD
        heads.set(key, h)
      }
      return h
    }
    const setHead = (ds: string, name: string, h: Head) => {
      const key = keys.head(ds, name)
      heads.set(key, h)
      ops.push({ type: 'put', key, value: encodeHead(h) })
    }
    const conflict = (k: string, expected: number, cur: Head) =>
      FabricError.failedPrecondition(
        expected === 0
          ? `key ${JSON.stringify(k)} exists already (version ${cur.seq}); expected it not to exist`
          : `key ${JSON.stringify(k)} is at version ${cur.live ? cur.seq : 'none (absent)'}; expected version ${expected}`,
        { details: { key: k, expected: String(expected), current: cur.live ? String(cur.seq) : '0' } },
      )
    const meets = (expected: number | undefined, cur: Head) => expected === undefined || (expected === 0 ? !cur.live : cur.live && cur.seq === expected)

    const writeTable = async (ds: string, op: TableOp, seq: number, t: number) => {
      const cur = current(ds, op.k)
      const stat = await statFor(ds)
      if (op.d !== undefined) {
        ops.push({ type: 'put', key: keys.tableVersion(ds, op.k, seq), value: pack({ d: op.d, t } satisfies StoredDoc) })
        stat.count += cur.live ? 0 : 1
        stat.bytes += op.d.length - (cur.live ? cur.size : 0)
        setHead(ds, op.k, { seq, size: op.d.length, live: true })
      } else if (cur.live) {
        ops.push({ type: 'put', key: keys.tableVersion(ds, op.k, seq), value: pack({ t } satisfies StoredDoc) })
        stat.count -= 1
        stat.bytes -= cur.size
        setHead(ds, op.k, { seq, size: 0, live: false })
      }
      stat.last = seq
      return cur.live
    }

    for (const { m, r } of records) {
      const mine = r.w === this.myWriterId
      if (r.w !== undefined && r.s !== undefined) {
        let last = writers.get(r.w) ?? this.writers.get(r.w)
        if (last === undefined) {
          const raw = state.get(keys.volumeWriter(this.volumeId, r.w))
          last = raw ? Number(new TextDecoder().decode(raw)) : 0
        }
        if (r.s <= last) continue // a copy published again after a crash: applied already
        writers.set(r.w, r.s)
      }
      switch (r.op) {
        case 'put':
        case 'del': {
          const cur = current(r.ds, r.k)
          if (!meets(r.x, cur)) {
            if (mine) outcomes.set(m.seq, { error: conflict(r.k, r.x!, cur) })
            break
          }
          const existed = await writeTable(r.ds, r.op === 'put' ? { k: r.k, d: r.d } : { k: r.k }, m.seq, m.timeMs)
          if (mine && r.op === 'del') outcomes.set(m.seq, { existed })
          break
        }
        case 'batch': {
          let failed: FabricError | undefined
          for (const op of r.ops) {
            if (op.x === undefined) continue
            const cur = current(r.ds, op.k)
            if (!meets(op.x, cur)) {
              failed = conflict(op.k, op.x!, cur)
              break
            }
          }
          if (failed) {
            if (mine) outcomes.set(m.seq, { error: failed })
            break
          }
          for (const op of r.ops) await writeTable(r.ds, op, m.seq, m.timeMs)
          break
        }
        case 'file':
        case 'fdel': {
          const cur = current(r.ds, r.n)
          const stat = await statFor(r.ds)
          if (r.op === 'file') {
            // A deduplicated chunk that chunk GC removed while the upload ran (the uploading
            // node had not applied that yet): the same outcome at every node, the file is not
            // committed, and the uploader is told to send it again.
            const gone = r.nx?.find((h) => state.get(keys.volumeChunk(this.volumeId, h)) === undefined)
            if (gone) {
              if (mine) outcomes.set(m.seq, { error: FabricError.failedPrecondition(`chunk ${gone} of ${r.n} was garbage-collected while the upload ran; upload the file again`, { details: { chunk: gone } }) })
              break
            }
            await this.holdChunks(r, m.seq, state, ops)
            ops.push({ type: 'put', key: keys.fileVersion(r.ds, r.n, m.seq), value: pack({ size: r.size, sha: r.sha, chunks: r.chunks, t: m.timeMs } satisfies StoredFile) })
            stat.count += cur.live ? 0 : 1
            stat.bytes += r.size - (cur.live ? cur.size : 0)
            setHead(r.ds, r.n, { seq: m.seq, size: r.size, live: true })
          } else {
            if (mine) outcomes.set(m.seq, { existed: cur.live })
            if (!cur.live) break
            ops.push({ type: 'put', key: keys.fileVersion(r.ds, r.n, m.seq), value: pack({ t: m.timeMs } satisfies StoredFile) })
            stat.count -= 1
            stat.bytes -= cur.size
            setHead(r.ds, r.n, { seq: m.seq, size: 0, live: false })
          }
          stat.last = m.seq
          break
        }
        case 'event': {
          const stat = await statFor(r.ds)
          ops.push(
            { type: 'put', key: keys.event(r.ds, m.seq), value: pack({ d: r.d, t: m.timeMs } satisfies StoredEvent) },
            { type: 'put', key: keys.eventTime(r.ds, m.timeMs, m.seq), value: EMPTY },
          )
          stat.count += 1
          stat.bytes += r.d.length
          stat.last = m.seq
          events.set(r.ds, m.seq)
          break
        }
        case 'snap': {
          const key = keys.snapshot(this.volumeId, r.name)
          if (state.get(key) !== undefined) {
            if (mine) outcomes.set(m.seq, { error: FabricError.alreadyExists(`snapshot ${r.name} exists already`, { details: { snapshot: r.name } }) })
            break
          }
          const value = pack({ seq: m.seq, t: m.timeMs } satisfies StoredSnapshot)
          state.set(key, value)
          ops.push({ type: 'put', key, value })
          break
        }
        case 'snaprm': {
          const key = keys.snapshot(this.volumeId, r.name)
          if (state.get(key) === undefined) {
            if (mine) outcomes.set(m.seq, { error: FabricError.notFound(`snapshot ${r.name} does not exist`, { details: { snapshot: r.name } }) })
            break
          }
          state.set(key, undefined)
          ops.push({ type: 'del', key })
          break
        }
        case 'nop':
          break
        case 'cgc': {
          for (const entry of r.c) {
            const [h, pos] = entry
            const condemned = keys.volumeChunkCondemned(this.volumeId, h)
            if (r.phase === 1) {
              // Referred to by a commit after the position the decision was taken at: kept.
              const claim = state.get(keys.volumeChunk(this.volumeId, h))
              if (claim !== undefined && claim.length > 0 && Number(new TextDecoder().decode(claim)) > (r.at ?? 0)) continue
              const value = new TextEncoder().encode(String(pos))
              state.set(condemned, value)
              ops.push({ type: 'put', key: condemned, value })
              continue
            }
            // Rescued by a commit since phase 1: kept.
            if (state.get(condemned) === undefined) continue
            state.set(condemned, undefined)
            ops.push({ type: 'del', key: condemned }, { type: 'del', key: keys.volumeChunk(this.volumeId, h) })
            const seenKey = keys.volumeChunkSeen(this.volumeId, h)
            const seen = state.get(seenKey)
            // The site's stream holds this very message (not a copy sent again since).
            if (seen !== undefined && unpack<[number, number]>(seen)[0] === pos) {
              state.set(seenKey, undefined)
              ops.push({ type: 'del', key: seenKey })
            }
            collected.push(entry)
          }
          break
        }
        default:
          this.log.warn({ volume: this.volumeId, seq: m.seq, op: (r as { op: string }).op }, 'unknown record ignored (written by a newer node?)')
      }
    }
    for (const [ds, s] of touched) ops.push({ type: 'put', key: keys.datasetStat(ds), value: pack(s) })
    // Each writer's last sequence, once per batch (it is only ever compared with the newest).
    for (const [w, seq] of writers) ops.push({ type: 'put', key: keys.volumeWriter(this.volumeId, w), value: new TextEncoder().encode(String(seq)) })
    // Every record of the log, applied or dropped as a duplicate, goes into the rolling hash.
    let rolling = await this.rollingHash()
    for (const m of batch) {
      rolling = fold(rolling, m.seq, m.data)
      if (isCheckpoint(m.seq) && rolling.seq === m.seq) ops.push({ type: 'put', key: keys.volumeHashCheckpoint(this.volumeId, m.seq), value: rolling.hash })
    }
    ops.push({ type: 'put', key: keys.volumeHash(this.volumeId), value: pack(rolling) })
    return {
      ops,
      outcomes,
      after: () => {
        this.rolling = rolling
        for (const [ds, s] of touched) this.stats.set(ds, s)
        for (const [w, seq] of writers) this.writers.set(w, seq)
        for (const [ds, seq] of events) this.onEvents(ds, seq)
        if (collected.length > 0) this.chunks.collected(collected)
      },
    }
  }
}
