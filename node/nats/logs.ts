/**
 * JetStream streams as fabric's logs. The rest of the node sees logs (append, follow, info), not
 * nats.js: only node/nats knows the client. A log is one stream with one subject.
 */
import {
  DeliverPolicy,
  DiscardPolicy,
  jetstream,
  jetstreamManager,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
} from '@nats-io/jetstream'
import { nanos, type NatsConnection } from '@nats-io/transport-node'
import { FabricError, messageOf } from '../errors/index.ts'
import type { Logger } from '../log/index.ts'

/** JetStream's payload limit as configured for the embedded server (max_payload). */
export const MAX_RECORD_BYTES = 1024 * 1024
/** Records a log follower has pulled but not applied yet, at most (see follow). */
const PULL_MESSAGES = 64
/** The same for a headers-only follower, whose messages are a few dozen bytes each. */
const HEADERS_PULL_MESSAGES = 1024
/** A follower with no record for this long, while its log has more, subscribes again. */
const STALL_MS = 10_000
/** How long JetStream remembers message ids for deduplication. */
export const DEDUP_WINDOW_MS = 2 * 60_000

export interface LogMessage {
  seq: number
  data: Uint8Array
  /** The time JetStream stored the message, in ms since the epoch (same at every replica). */
  timeMs: number
  /** The subject it was appended on (a chunk stream's name each chunk by its hash). */
  subject?: string
}

export interface LogInfo {
  lastSeq: number
  firstSeq: number
  messages: number
  bytes: number
  /** JetStream time of the last record (ms since the epoch), 0 when empty. */
  lastTimeMs: number
}

export interface AppendOptions {
  /** Idempotence key: JetStream drops a second message with the same id within the window. */
  msgId?: string
  /** Optimistic concurrency: refused unless the log's last sequence is exactly this. */
  expectLastSeq?: number
}

export interface FollowOptions {
  /**
   * Deliver subjects, positions and times but no payloads (a JetStream headers-only consumer):
   * for following which content-addressed chunks a stream holds without moving their bytes.
   */
  headersOnly?: boolean
}

export class WrongLastSequence extends Error {}

export class Logs {
  private readonly js: JetStreamClient
  private jsmPromise: Promise<JetStreamManager> | undefined

  constructor(
    private readonly nc: NatsConnection,
    private readonly log: Logger,
    /** The JetStream domain (site) these logs live in; undefined: the server's own. */
    readonly domain?: string,
    /** Replicas of the streams this creates (R3 on a clustered site). */
    private readonly replicas = 1,
  ) {
    this.js = jetstream(nc, { timeout: 10_000, ...(domain ? { domain } : {}) })
  }

  private jsm(): Promise<JetStreamManager> {
    this.jsmPromise ??= jetstreamManager(this.nc, { timeout: 10_000, ...(this.domain ? { domain: this.domain } : {}) }).catch((err: unknown) => {
      this.jsmPromise = undefined
      throw err
    })
    return this.jsmPromise
  }

  /**
   * Creates the log if it does not exist (idempotent). A keyed log keeps only the last message
   * of each subject and answers direct gets (used for content-addressed chunks). A log that
   * exists as a mirror is refused: its home is another site.
   */
  async ensure(stream: string, subject: string, options: { keyed?: boolean } = {}): Promise<void> {
    await this.ensureStream(stream, { subjects: [subject] }, options)
  }

  /**
   * Creates a mirror of the log `stream` of site originDomain under the same name here
   * (idempotent). JetStream keeps it up to date across the leafnode, also after the link was
   * down; sequence numbers, timestamps and headers are the origin's.
   */
  async ensureMirror(stream: string, originDomain: string, options: { keyed?: boolean } = {}): Promise<void> {
    await this.ensureStream(stream, { mirror: { name: stream, external: { api: `$JS.${originDomain}.API`, deliver: '' } } }, options)
  }

  private async ensureStream(stream: string, shape: { subjects?: string[]; mirror?: { name: string; external: { api: string; deliver: string } } }, options: { keyed?: boolean }): Promise<void> {
    const jsm = await this.jsm().catch((cause: unknown) => {
      throw FabricError.unavailable(`JetStream${this.where()} is unavailable: ${messageOf(cause)}`, { cause })
    })
    const config = {
      name: stream,
      ...shape,
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      discard: DiscardPolicy.Old,
      max_msg_size: MAX_RECORD_BYTES,
      duplicate_window: nanos(DEDUP_WINDOW_MS),
      num_replicas: this.replicas,
      ...(options.keyed ? { max_msgs_per_subject: 1, allow_direct: true } : {}),
    }
    let existing: Awaited<ReturnType<JetStreamManager['streams']['info']>> | undefined
    try {
      existing = await jsm.streams.info(stream)
    } catch (err) {
      if (!(err instanceof JetStreamApiError) || err.status !== 404) throw wrap(err, `log ${stream}${this.where()}`)
    }
    if (existing) {
      const origin = existing.config.mirror?.external?.api
      if (shape.mirror && origin !== shape.mirror.external.api) {
        throw FabricError.failedPrecondition(
          `log ${stream}${this.where()} exists ${origin ? `as a mirror of ${origin}` : 'as a home log'}, not as a mirror of ${shape.mirror.external.api}`,
          { details: { stream } },
        )
      }
      if (!shape.mirror && existing.config.mirror) {
        throw FabricError.failedPrecondition(`log ${stream}${this.where()} is a mirror of ${origin ?? existing.config.mirror.name}; it cannot take writes here`, { details: { stream } })
      }
      if (existing.config.num_replicas !== this.replicas) {
        await jsm.streams.update(stream, { ...existing.config, num_replicas: this.replicas }).catch((err: unknown) => this.log.warn({ stream, err: messageOf(err) }, 'could not change the replicas of a log'))
      }
      return
    }
    try {
      await jsm.streams.add(config)
      this.log.info({ stream, ...(shape.mirror ? { mirrorOf: shape.mirror.external.api } : {}), domain: this.domain }, shape.mirror ? 'mirror created' : 'log created')
    } catch (err) {
      // Another node may have created it in between: that is fine.
      if (err instanceof JetStreamApiError && /already in use|already exists/i.test(err.message)) return
      throw wrap(err, `log ${stream}${this.where()}`)
    }
  }

  private where(): string {
    return this.domain ? ` at site ${this.domain}` : ''
  }

  async remove(stream: string): Promise<void> {
    const jsm = await this.jsm()
    await jsm.streams.delete(stream).catch((err: unknown) => {
      if (err instanceof JetStreamApiError && err.status === 404) return
      throw wrap(err, `log ${stream}`)
    })
  }

  async info(stream: string): Promise<LogInfo> {
    const jsm = await this.jsm()
    const si = await jsm.streams.info(stream).catch((err: unknown) => {
      throw wrap(err, `log ${stream}`)
    })
    const lastTimeMs = si.state.last_seq > 0 && si.state.last_ts ? Date.parse(si.state.last_ts) : 0
    return { lastSeq: si.state.last_seq, firstSeq: si.state.first_seq, messages: si.state.messages, bytes: si.state.bytes, lastTimeMs: Number.isFinite(lastTimeMs) ? lastTimeMs : 0 }
  }

  /** Deletes one message by position; false if the log has none there (deleted already). */
  async deleteMessage(stream: string, seq: number): Promise<boolean> {
    const jsm = await this.jsm()
    try {
      return await jsm.streams.deleteMessage(stream, seq, false)
    } catch (err) {
      if (err instanceof JetStreamApiError && (err.status === 404 || /not found/i.test(err.message))) return false
      throw wrap(err, `delete message ${seq} of ${stream}`)
    }
  }

  /** The payload of the last message on subject in a keyed log, or undefined if it has none. */
  async last(stream: string, subject: string): Promise<Uint8Array | undefined> {
    const jsm = await this.jsm()
    try {
      const m = await jsm.direct.getMessage(stream, { last_by_subj: subject })
      return m?.data
    } catch (err) {
      if (err instanceof JetStreamApiError && err.status === 404) return undefined
      throw wrap(err, `read ${subject} from ${stream}`)
    }
  }

  /** Appends and resolves with the record's sequence once JetStream has stored it. */
  async append(subject: string, data: Uint8Array, options: AppendOptions = {}): Promise<number> {
    try {
      const ack = await this.js.publish(subject, data, {
        ...(options.msgId ? { msgID: options.msgId } : {}),
        ...(options.expectLastSeq !== undefined ? { expect: { lastSequence: options.expectLastSeq } } : {}),
      })
      return ack.seq
    } catch (err) {
      if (err instanceof JetStreamApiError && err.status === 400 && /wrong last sequence/i.test(err.message)) throw new WrongLastSequence(err.message)
      throw wrap(err, `append to ${subject}`)
    }
  }

  /**
   * Delivers the log's records from fromSeq on, in order, in batches (a batch ends when no more
   * records are pending or it is large), until the signal aborts. onBatch is awaited before the
   * next batch: that is the backpressure. A broken connection is retried; ordered delivery
   * resumes where it stopped.
   *
   * Before every (re)subscription, and after every reconnect, the log's end is compared with the
   * position to resume from. A log that ends before it lost records the follower had seen (a
   * nats-server 2.9 killed or powered off before it wrote them out); onRegression decides where
   * to resume, so records appended after the loss are not skipped.
   */
  async follow(
    stream: string,
    fromSeq: number,
    onBatch: (batch: LogMessage[]) => Promise<void>,
    signal: AbortSignal,
    onRegression: (lastSeq: number, expected: number) => Promise<number>,
    options: FollowOptions = {},
  ): Promise<void> {
    const pullMessages = options.headersOnly ? HEADERS_PULL_MESSAGES : PULL_MESSAGES
    let next = Math.max(1, fromSeq)
    let stopCurrent: (() => void) | undefined
    // A reconnect may mean a restarted server: re-check the log's end before going on.
    const statuses = this.nc.status() as AsyncIterable<{ type: string }> & { stop?: () => void }
    void (async () => {
      for await (const s of statuses) if (s.type === 'reconnect') stopCurrent?.()
    })().catch(() => undefined)
    // A consumer can be lost without a reconnect: on a clustered site it lives on one server, and
    // when that server dies the client may wait on it for a long time. A follower that has had no
    // record for a while although the log has more starts its consumer again.
    let lastProgress = Date.now()
    // When the log was first seen to have more than was delivered (0: not behind). A restart needs
    // two checks in a row, so a record that is on its way is not mistaken for a stall.
    let behindSince = 0
    const watchdog = setInterval(() => {
      if (!stopCurrent || Date.now() - lastProgress < STALL_MS) return
      void this.info(stream).then(
        (info) => {
          if (info.lastSeq < next) return void (behindSince = 0)
          if (!behindSince || lastProgress > behindSince) return void (behindSince = Date.now())
          this.log.warn({ stream, next, logEnd: info.lastSeq }, 'the log has records its follower is not getting; subscribing again')
          behindSince = 0
          lastProgress = Date.now()
          stopCurrent?.()
        },
        () => undefined,
      )
    }, STALL_MS / 2)
    watchdog.unref()
    while (!signal.aborted) {
      try {
        const info = await this.info(stream)
        if (info.lastSeq < next - 1) next = await onRegression(info.lastSeq, next - 1)
        const consumer = await this.js.consumers.get(stream, {
          deliver_policy: DeliverPolicy.StartSequence,
          opt_start_seq: next,
          ...(options.headersOnly ? { headers_only: true } : {}),
        })
        // Bounded by messages, not bytes. nats.js pulls more as messages arrive, not as they are
        // applied, so at most PULL_MESSAGES records (at most 1 MiB each, typically far less:
        // file content is in the chunk stream, not the log) wait here. A byte bound was tried
        // first: nats.js then refills with requests for the few bytes just consumed, and a record
        // larger than every outstanding request (a big file's commit after many small writes)
        // waited for them to expire, 10 s, with the node idle.
        const messages = await consumer.consume({ max_messages: pullMessages, idle_heartbeat: 5_000, expires: 10_000 })
        const stop = () => void messages.stop()
        stopCurrent = stop
        signal.addEventListener('abort', stop, { once: true })
        // An abort that came while the consumer was being created would otherwise go unheard.
        if (signal.aborted) stop()
        let batch: LogMessage[] = []
        let bytes = 0
        try {
          for await (const m of messages) {
            lastProgress = Date.now()
            batch.push({ seq: m.seq, data: m.data, timeMs: Math.floor(m.info.timestampNanos / 1e6), subject: m.subject })
            bytes += m.data.length
            if (m.info.pending === 0 || batch.length >= 512 || bytes >= 8 * 1024 * 1024) {
              await onBatch(batch)
              next = batch[batch.length - 1]!.seq + 1
              batch = []
              bytes = 0
            }
            if (signal.aborted) break
          }
        } finally {
          signal.removeEventListener('abort', stop)
          stopCurrent = undefined
        }
        if (batch.length > 0 && !signal.aborted) {
          await onBatch(batch)
          next = batch[batch.length - 1]!.seq + 1
        }
      } catch (err) {
        if (signal.aborted) break
        this.log.warn({ stream, err: messageOf(err) }, 'following the log failed; retrying')
        await new Promise((r) => setTimeout(r, 500))
      }
    }
    clearInterval(watchdog)
    statuses.stop?.()
  }
}

function wrap(err: unknown, what: string): FabricError {
  if (err instanceof FabricError) return err
  return FabricError.unavailable(`${what}: JetStream did not answer: ${messageOf(err)}`, { cause: err })
}
