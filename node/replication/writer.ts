/**
 * Appends this node's writes to volume logs, durably.
 *
 * A write is accepted only after it is on this node's disk: each record is first put in the
 * outbox with an fsynced LevelDB write (concurrent writes share one fsync), then published to the
 * volume's log with Nats-Msg-Id = writer:sequence. JetStream acks a publish before it fsyncs
 * (nats-server 2.9 syncs its files every 2 minutes), so the outbox keeps each record until
 * JetStream's copy has certainly been synced (RETAIN_AFTER_ACK_MS after the ack). After a crash or
 * power loss every record still in the outbox is published again: JetStream drops the copies it
 * already has within its dedup window, and appliers drop any later copy by its (writer, sequence).
 */
import type { Logger } from '../log/index.ts'
import type { Logs } from '../nats/index.ts'
import { keys, type BatchOp, type Store } from '../store/index.ts'
import { chunkSubject, encodeRecord, pack, unpack, volumeSubject, type VolumeRecord } from './records.ts'

/** nats-server 2.9's default sync interval (2 min) plus a margin. */
export const RETAIN_AFTER_ACK_MS = 150_000

interface OutboxEntry {
  /** Volume id. */
  v: string
  /** The encoded record. */
  b: Uint8Array
  /** Chunks a file commit refers to: published again before it after a crash. */
  c?: string[]
}

interface Pending {
  ops: BatchOp[]
  resolve: () => void
  reject: (err: unknown) => void
}

export interface WriterOptions {
  writerId: string
  store: Store
  logs: () => Logs
  log: Logger
  /** Reads a chunk's bytes (to publish the chunks of a file commit again). */
  readChunk: (sha256: string) => Promise<Uint8Array | undefined>
  retainAfterAckMs?: number
}

export class LogWriter {
  private wseq = 0
  private queue: Pending[] = []
  private flushing = false
  /** Acked outbox entries and when, oldest first. */
  private acked: Array<{ wseq: number; at: number }> = []
  private pruneTimer: NodeJS.Timeout | undefined

  constructor(private readonly o: WriterOptions) {}

  async start(): Promise<void> {
    const raw = await this.o.store.get(keys.writerSeq)
    this.wseq = raw ? Number(new TextDecoder().decode(raw)) : 0
    this.pruneTimer = setInterval(() => void this.prune().catch((err: unknown) => this.o.log.warn({ err }, 'outbox prune failed')), 5_000)
    this.pruneTimer.unref()
  }

  stop(): void {
    if (this.pruneTimer) clearInterval(this.pruneTimer)
  }

  /**
   * Publishes everything still in the outbox again (after a restart). Chunks of file commits go
   * first, read from the chunk store; the applier ignores the copies it already has. Entries of
   * volumes that no longer exist are dropped. Runs until every entry is published, retrying
   * while a log is unreachable; resolves with the number of records published.
   */
  async recover(volumeExists: (volumeId: string) => boolean, signal?: AbortSignal, options: { includeAcked?: boolean } = {}): Promise<number> {
    let count = 0
    for (;;) {
      try {
        for await (const [key, value] of this.o.store.entries({ gte: keys.outboxPrefix, lt: keys.prefixEnd(keys.outboxPrefix) })) {
          if (signal?.aborted) return count
          const wseq = parseInt(key.slice(keys.outboxPrefix.length), 16)
          // Normally entries published by this process are not sent again; after the log lost
          // records (includeAcked) every entry still kept is, since any of them may be gone.
          if (!options.includeAcked && this.acked.some((a) => a.wseq === wseq)) continue
          const entry = unpack<OutboxEntry>(value)
          if (!volumeExists(entry.v)) {
            await this.o.store.batch([{ type: 'del', key }])
            continue
          }
          for (const h of entry.c ?? []) {
            const data = await this.o.readChunk(h)
            if (data) await this.o.logs().append(chunkSubject(entry.v, h), data)
          }
          await this.o.logs().append(volumeSubject(entry.v), entry.b, { msgId: `${this.o.writerId}:${wseq}` })
          if (!this.acked.some((a) => a.wseq === wseq)) this.acked.push({ wseq, at: Date.now() })
          count++
        }
        this.o.log.info({ records: count }, 'outbox recovered')
        return count
      } catch (err) {
        if (signal?.aborted) return count
        this.o.log.warn({ err: (err as Error).message }, 'publishing the outbox again failed; retrying in 2 s')
        await new Promise((r) => setTimeout(r, 2_000))
      }
    }
  }

  /**
   * Durably accepts a record and appends it to the volume's log; resolves with its position.
   * `chunks` lists the chunk hashes a file commit refers to.
   */
  async append(volumeId: string, record: VolumeRecord, chunks?: string[]): Promise<number> {
    const wseq = ++this.wseq
    const stamped = { ...record, w: this.o.writerId, s: wseq } as VolumeRecord
    const bytes = encodeRecord(stamped)
    const entry: OutboxEntry = { v: volumeId, b: bytes, ...(chunks && chunks.length > 0 ? { c: chunks } : {}) }
    await this.persist([
      { type: 'put', key: keys.outbox(wseq), value: pack(entry) },
      { type: 'put', key: keys.writerSeq, value: new TextEncoder().encode(String(wseq)) },
    ])
    let seq: number
    try {
      seq = await this.o.logs().append(volumeSubject(volumeId), bytes, { msgId: `${this.o.writerId}:${wseq}` })
    } catch (err) {
      // The caller is told the write failed, so it must not be published again after a restart.
      // (A timeout is ambiguous: JetStream may have stored it; then it applies once, as written.)
      await this.o.store.batch([{ type: 'del', key: keys.outbox(wseq) }]).catch(() => undefined)
      throw err
    }
    this.acked.push({ wseq, at: Date.now() })
    return seq
  }

  /**
   * Appends no-op records until the volume's log has reached position `seq`. After JetStream lost
   * the tail of a log this node had applied (a nats-server 2.9 killed before it synced), new
   * records would otherwise take positions that records applied before the loss have, here and at
   * replicas whose mirrors got them: versions and events are stored by position, so they would
   * overwrite each other. Padding first keeps every position meaning one record.
   */
  async padTo(volumeId: string, seq: number): Promise<number> {
    const nop = encodeRecord({ op: 'nop' })
    let last = 0
    let added = 0
    while (last < seq) {
      const window = Math.min(256, Math.max(1, seq - last))
      const seqs = await Promise.all(Array.from({ length: window }, () => this.o.logs().append(volumeSubject(volumeId), nop)))
      last = Math.max(...seqs)
      added += window
    }
    this.o.log.warn({ volume: volumeId, upTo: last, records: added }, 'the log was padded past the positions it had lost')
    return last
  }

  /** Group commit: writes queued while an fsync runs share the next one. */
  private persist(ops: BatchOp[]): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ ops, resolve, reject })
      if (!this.flushing) void this.flush()
    })
  }

  private async flush(): Promise<void> {
    this.flushing = true
    while (this.queue.length > 0) {
      const group = this.queue
      this.queue = []
      try {
        // Writer-seq puts of one group are in increasing order, so the last one wins.
        await this.o.store.batch(group.flatMap((p) => p.ops), { sync: true })
        for (const p of group) p.resolve()
      } catch (err) {
        for (const p of group) p.reject(err)
      }
    }
    this.flushing = false
  }

  /** Drops outbox entries whose JetStream copy is certainly on disk by now. */
  async prune(now = Date.now()): Promise<void> {
    const retain = this.o.retainAfterAckMs ?? RETAIN_AFTER_ACK_MS
    let n = 0
    while (n < this.acked.length && now - this.acked[n]!.at >= retain) n++
    if (n === 0) return
    const done = this.acked.splice(0, n)
    await this.o.store.batch(done.map((d) => ({ type: 'del', key: keys.outbox(d.wseq) })))
  }

  /** Records in the outbox right now (for status and tests). */
  get outboxSize(): number {
    return this.acked.length
  }
}
