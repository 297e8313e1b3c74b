/**
 * Follows one log and applies it, in order, to the store: each batch of records and the applied
 * position are committed in one fsynced LevelDB batch, so a node killed at any instant resumes
 * exactly where it stopped. Writers wait here for their records to be applied (read-your-writes).
 */
import { FabricError, messageOf } from '../errors/index.ts'
import type { Logger } from '../log/index.ts'
import type { LogMessage, Logs } from '../nats/index.ts'
import type { BatchOp, Store } from '../store/index.ts'

/** What applying a record meant for the one who wrote it. */
export interface Outcome {
  /** The record was in the log but its condition failed: nothing changed. */
  error?: FabricError
  /** For deletes: whether the key existed. */
  existed?: boolean
}

export interface ApplyResult {
  ops: BatchOp[]
  /** Outcomes by position, for records written by this node. */
  outcomes?: Map<number, Outcome>
  /** Runs after the batch is committed (update in-memory state, notify subscribers). */
  after?: () => void
}

export type Apply = (batch: LogMessage[]) => Promise<ApplyResult>

export interface FollowerOptions {
  name: string
  logs: Logs
  stream: string
  store: Store
  /** Store key that holds the applied position. */
  appliedKey: string
  apply: Apply
  log: Logger
  /**
   * The log lost records this follower had applied (see Logs.follow). Called after the follower
   * has moved its position back to the log's end; typically publishes the outbox again.
   */
  onRegression?: (lastSeq: number, applied: number) => void
}

const MAX_KEPT_OUTCOMES = 100_000

export class Follower {
  private appliedSeq = 0
  private appliedTime = 0
  private regressionCount = 0
  private readonly controller = new AbortController()
  private running: Promise<void> | undefined
  private waiters: Array<{ seq: number; resolve: (o: Outcome | undefined) => void; reject: (e: unknown) => void }> = []
  private readonly outcomes = new Map<number, Outcome>()
  private readonly listeners = new Set<(seq: number) => void>()

  constructor(private readonly o: FollowerOptions) {}

  get applied(): number {
    return this.appliedSeq
  }

  /** JetStream time (ms) of the last record applied by this process; 0 before the first. */
  get appliedTimeMs(): number {
    return this.appliedTime
  }

  async start(): Promise<void> {
    const raw = await this.o.store.get(this.o.appliedKey)
    this.appliedSeq = raw ? Number(new TextDecoder().decode(raw)) : 0
    this.running = this.o.logs
      .follow(this.o.stream, this.appliedSeq + 1, (batch) => this.onBatch(batch), this.controller.signal, (lastSeq, applied) => this.onRegression(lastSeq, applied))
      .catch((err: unknown) => this.o.log.error({ err, log: this.o.name }, 'log follower stopped'))
  }

  async stop(): Promise<void> {
    this.controller.abort()
    // Bounded: a consumer that does not notice the abort must not hold up the node's stop.
    await Promise.race([this.running, new Promise((r) => setTimeout(r, 2_000).unref())])
    for (const w of this.waiters) w.reject(FabricError.unavailable(`${this.o.name}: the node is stopping`))
    this.waiters = []
  }

  /** Calls fn after every committed batch with the new applied position. Returns an unsubscribe. */
  onApplied(fn: (seq: number) => void): () => void {
    this.listeners.add(fn)
    return () => this.listeners.delete(fn)
  }

  /** Resolves once the position is applied, with the record's outcome if this node wrote it. */
  waitApplied(seq: number, timeoutMs = 30_000): Promise<Outcome | undefined> {
    if (seq <= this.appliedSeq) return Promise.resolve(this.takeOutcome(seq))
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter)
        reject(FabricError.unavailable(`${this.o.name}: position ${seq} was not applied within ${timeoutMs} ms (applied: ${this.appliedSeq})`))
      }, timeoutMs)
      const waiter = {
        seq,
        resolve: (o: Outcome | undefined) => {
          clearTimeout(timer)
          resolve(o)
        },
        reject: (e: unknown) => {
          clearTimeout(timer)
          reject(e)
        },
      }
      this.waiters.push(waiter)
    })
  }

  private takeOutcome(seq: number): Outcome | undefined {
    const o = this.outcomes.get(seq)
    if (o) this.outcomes.delete(seq)
    return o
  }

  /**
   * The log ends at lastSeq although this node applied up to `applied`: JetStream lost the tail.
   * What was applied stays applied (appliers recognise those records if they come again, by their
   * writer and writer sequence); the position moves back to the log's end so that records
   * appended from now on are applied, not skipped as already seen.
   */
  private async onRegression(lastSeq: number, applied: number): Promise<number> {
    this.o.log.error({ log: this.o.name, applied, logEnd: lastSeq }, 'the log lost records this node had applied (nats-server crash or power loss); resuming at its end')
    await this.o.store.batch([{ type: 'put', key: this.o.appliedKey, value: new TextEncoder().encode(String(lastSeq)) }], { sync: true })
    this.appliedSeq = lastSeq
    this.regressionCount++
    this.o.onRegression?.(lastSeq, applied)
    return lastSeq + 1
  }

  /** Times the log was found to have lost records this follower had applied. */
  get regressions(): number {
    return this.regressionCount
  }

  private async onBatch(batch: LogMessage[]): Promise<void> {
    const fresh = batch.filter((m) => m.seq > this.appliedSeq)
    if (fresh.length === 0) return
    const last = fresh[fresh.length - 1]!.seq
    let result: ApplyResult
    try {
      result = await this.o.apply(fresh)
    } catch (err) {
      // A bug, not bad data (records are validated before they are written): stop rather than
      // skip, so no node silently diverges. The follow loop retries this batch.
      this.o.log.error({ err: messageOf(err), log: this.o.name, from: fresh[0]!.seq, to: last }, 'applying the log failed')
      throw err
    }
    result.ops.push({ type: 'put', key: this.o.appliedKey, value: new TextEncoder().encode(String(last)) })
    await this.o.store.batch(result.ops, { sync: true })
    this.appliedSeq = last
    this.appliedTime = fresh[fresh.length - 1]!.timeMs
    result.after?.()
    for (const [seq, outcome] of result.outcomes ?? []) this.outcomes.set(seq, outcome)
    while (this.outcomes.size > MAX_KEPT_OUTCOMES) this.outcomes.delete(this.outcomes.keys().next().value!)
    if (this.waiters.length > 0) {
      const ready = this.waiters.filter((w) => w.seq <= last)
      this.waiters = this.waiters.filter((w) => w.seq > last)
      for (const w of ready) w.resolve(this.takeOutcome(w.seq))
    }
    for (const fn of this.listeners) fn(last)
  }
}
