/**
 * Applies a volume's log records to the store. Deterministic: every node that applies the same
 * log reaches the same state and the same outcome for every conditional write, which is why
 * conditions (expected versions) are checked here and not where the write was accepted.
 */
import { FabricError } from '../errors/index.ts'
import type { Logger } from '../log/index.ts'
import type { LogMessage } from '../nats/index.ts'
import { decodeVolumeRecord, pack, unpack, type ApplyResult, type Outcome, type TableOp, type VolumeRecord } from '../replication/index.ts'
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
export interface DatasetStat {
  count: number
  bytes: number
  last: number
}

interface Current {
  seq: number
  size: number
  live: boolean
}

export class VolumeApplier {
  private readonly stats = new Map<string, DatasetStat>()
  private readonly writers = new Map<string, number>()

  constructor(
    private readonly store: Store,
    private readonly volumeId: string,
    private readonly myWriterId: string,
    private readonly log: Logger,
    private readonly onEvents: (datasetId: string, lastSeq: number) => void,
  ) {}

  async stat(datasetId: string): Promise<DatasetStat> {
    let s = this.stats.get(datasetId)
    if (!s) {
      const raw = await this.store.get(keys.datasetStat(datasetId))
      s = raw ? unpack<DatasetStat>(raw) : { count: 0, bytes: 0, last: 0 }
      this.stats.set(datasetId, s)
    }
    return s
  }

  async apply(batch: LogMessage[]): Promise<ApplyResult> {
    const ops: BatchOp[] = []
    const outcomes = new Map<number, Outcome>()
    // State written earlier in this batch, which the store does not show yet.
    const tables = new Map<string, Current>()
    const files = new Map<string, Current>()
    const chunks = new Set<string>()
    const touched = new Map<string, DatasetStat>()
    const events = new Map<string, number>()
    const writers = new Map<string, number>()

    const statFor = async (ds: string) => {
      let s = touched.get(ds)
      if (!s) {
        s = { ...(await this.stat(ds)) }
        touched.set(ds, s)
      }
      return s
    }
    const current = async (kind: 't' | 'f', ds: string, name: string): Promise<Current> => {
      const cache = kind === 't' ? tables : files
      const cached = cache.get(`${ds}\u0000${name}`)
      if (cached) return cached
      const prefix = kind === 't' ? keys.tablePrefix(ds) : keys.filePrefix(ds)
      let found: Current = { seq: 0, size: 0, live: false }
      for await (const [k, v] of this.store.entries({ gte: `${prefix}${name}${keys.SEP}`, lt: `${prefix}${name}${keys.AFTER_SEP}`, limit: 1 })) {
        const { seq } = keys.splitVersion(prefix, k)
        if (kind === 't') {
          const doc = unpack<StoredDoc>(v)
          found = { seq, size: doc.d?.length ?? 0, live: doc.d !== undefined }
        } else {
          const f = unpack<StoredFile>(v)
          found = { seq, size: f.size ?? 0, live: f.sha !== undefined }
        }
      }
      // Later records of the batch (and the write that follows a condition check) read it here.
      cache.set(`${ds}\u0000${name}`, found)
      return found
    }
    const conflict = (k: string, expected: number, cur: Current) =>
      FabricError.failedPrecondition(
        expected === 0
          ? `key ${JSON.stringify(k)} exists already (version ${cur.seq}); expected it not to exist`
          : `key ${JSON.stringify(k)} is at version ${cur.live ? cur.seq : 'none (absent)'}; expected version ${expected}`,
        { details: { key: k, expected: String(expected), current: cur.live ? String(cur.seq) : '0' } },
      )
    const meets = (expected: number | undefined, cur: Current) => expected === undefined || (expected === 0 ? !cur.live : cur.live && cur.seq === expected)

    const writeTable = async (ds: string, op: TableOp, seq: number, t: number) => {
      const cur = await current('t', ds, op.k)
      const stat = await statFor(ds)
      if (op.d !== undefined) {
        ops.push({ type: 'put', key: keys.tableVersion(ds, op.k, seq), value: pack({ d: op.d, t } satisfies StoredDoc) })
        stat.count += cur.live ? 0 : 1
        stat.bytes += op.d.length - (cur.live ? cur.size : 0)
        tables.set(`${ds}\u0000${op.k}`, { seq, size: op.d.length, live: true })
      } else if (cur.live) {
        ops.push({ type: 'put', key: keys.tableVersion(ds, op.k, seq), value: pack({ t } satisfies StoredDoc) })
        stat.count -= 1
        stat.bytes -= cur.size
        tables.set(`${ds}\u0000${op.k}`, { seq, size: 0, live: false })
      }
      stat.last = seq
      return cur.live
    }

    for (const m of batch) {
      let r: VolumeRecord
      try {
        r = decodeVolumeRecord(m.data)
      } catch (err) {
        this.log.error({ volume: this.volumeId, seq: m.seq, err }, 'undecodable record skipped')
        continue
      }
      const mine = r.w === this.myWriterId
      if (r.w !== undefined && r.s !== undefined) {
        let last = writers.get(r.w) ?? this.writers.get(r.w)
        if (last === undefined) {
          const raw = await this.store.get(keys.volumeWriter(this.volumeId, r.w))
          last = raw ? Number(new TextDecoder().decode(raw)) : 0
        }
        if (r.s <= last) continue // a copy published again after a crash: applied already
        writers.set(r.w, r.s)
        ops.push({ type: 'put', key: keys.volumeWriter(this.volumeId, r.w), value: new TextEncoder().encode(String(r.s)) })
      }
      switch (r.op) {
        case 'chunk': {
          if (chunks.has(r.h) || (await this.store.get(keys.volumeChunk(this.volumeId, r.h)))) break
          chunks.add(r.h)
          ops.push({ type: 'put', key: keys.chunk(r.h), value: r.d }, { type: 'put', key: keys.volumeChunk(this.volumeId, r.h), value: new Uint8Array(0) })
          break
        }
        case 'put':
        case 'del': {
          const cur = await current('t', r.ds, r.k)
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
            if (op.x === undefined) continue // no condition: nothing to look up yet
            const cur = await current('t', r.ds, op.k)
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
          const cur = await current('f', r.ds, r.n)
          const stat = await statFor(r.ds)
          if (r.op === 'file') {
            ops.push({ type: 'put', key: keys.fileVersion(r.ds, r.n, m.seq), value: pack({ size: r.size, sha: r.sha, chunks: r.chunks, t: m.timeMs } satisfies StoredFile) })
            stat.count += cur.live ? 0 : 1
            stat.bytes += r.size - (cur.live ? cur.size : 0)
            files.set(`${r.ds}\u0000${r.n}`, { seq: m.seq, size: r.size, live: true })
          } else {
            if (mine) outcomes.set(m.seq, { existed: cur.live })
            if (!cur.live) break
            ops.push({ type: 'put', key: keys.fileVersion(r.ds, r.n, m.seq), value: pack({ t: m.timeMs } satisfies StoredFile) })
            stat.count -= 1
            stat.bytes -= cur.size
            files.set(`${r.ds}\u0000${r.n}`, { seq: m.seq, size: 0, live: false })
          }
          stat.last = m.seq
          break
        }
        case 'event': {
          const stat = await statFor(r.ds)
          ops.push(
            { type: 'put', key: keys.event(r.ds, m.seq), value: pack({ d: r.d, t: m.timeMs } satisfies StoredEvent) },
            { type: 'put', key: keys.eventTime(r.ds, m.timeMs, m.seq), value: new Uint8Array(0) },
          )
          stat.count += 1
          stat.bytes += r.d.length
          stat.last = m.seq
          events.set(r.ds, m.seq)
          break
        }
        default:
          this.log.warn({ volume: this.volumeId, seq: m.seq, op: (r as { op: string }).op }, 'unknown record ignored (written by a newer node?)')
      }
    }
    for (const [ds, s] of touched) ops.push({ type: 'put', key: keys.datasetStat(ds), value: pack(s) })
    return {
      ops,
      outcomes,
      after: () => {
        for (const [ds, s] of touched) this.stats.set(ds, s)
        for (const [w, seq] of writers) this.writers.set(w, seq)
        for (const [ds, seq] of events) this.onEvents(ds, seq)
      },
    }
  }
}
