/**
 * The data plane of a site: tables, files and streams in volumes. Writes go through the volume's
 * log (LogWriter: durable, idempotent) and are acknowledged once applied on this node, so a read
 * here right after sees them; reads come from the local store, at the latest applied position or
 * at any earlier one.
 */
import { createHash } from 'node:crypto'
import { Catalog, SEGMENT, validateFileName, validateKey, type DatasetEntry, type VolumeEntry } from '../catalog/index.ts'
import { FabricError, type ErrorCode } from '../errors/index.ts'
import type { Logger } from '../log/index.ts'
import { MAX_RECORD_BYTES, NoResponders, type Bus, type Logs } from '../nats/index.ts'
import { chunkStream, chunkSubject, chunkSubjects, Follower, hashHex, LogWriter, pack, unpack, volumeStream, volumeSubject, type Outcome, type TableOp, type VolumeRecord } from '../replication/index.ts'
import type { HeldVolume } from '../sites/index.ts'
import { keys, type BatchOp, type ChunkStore, type Store } from '../store/index.ts'
import { decodeHead, VolumeApplier, type VolumeChunks, type DatasetStat, type StoredDoc, type StoredEvent, type StoredFile, type StoredSnapshot } from './apply.ts'
import { CHUNK_BYTES, MAX_BATCH_BYTES, MAX_BATCH_OPS, MAX_DOC_BYTES, MAX_EVENT_BYTES, UPLOAD_WINDOW } from './limits.ts'

export * from './limits.ts'
export type { DatasetStat } from './apply.ts'

export interface Row {
  key: string
  json: string
  version: number
  timeMs: number
}

export interface GcResult {
  /** Old versions of documents and files removed from this node's store, and their bytes. */
  versions: number
  bytes: number
  /** Chunks removed from the volume (at its home; 0 elsewhere). */
  chunksRemoved: number
  /** Bytes of this node's pack files given back to the file system. */
  packBytesReclaimed: number
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

export interface Snapshot {
  volume: string
  name: string
  seq: number
  timeMs: number
}

export interface StreamEvent {
  seq: number
  json: string
  timeMs: number
}

export interface DataPlaneOptions {
  store: Store
  catalog: Catalog
  /** This site's logs. */
  logs: () => Logs
  /** Another site's logs (a volume's home, for chunks this site's mirror has not got yet). */
  logsAt: (site: string) => Logs
  bus: () => Bus
  site: string
  writerId: string
  log: Logger
  /** Where chunk bytes are kept (pack files outside LevelDB). */
  chunks: ChunkStore
  retainAfterAckMs?: number
  /** How often a node collects garbage by itself. */
  gcIntervalMs: number
  /**
   * A chunk in a chunk stream that no commit has claimed (an upload in progress, or one that
   * failed) is left alone by chunk GC for this long after it was stored. Uploads must end within
   * half of it: putFile refuses to commit one that took longer.
   */
  unclaimedChunkGraceMs: number
}

/** Chunks read ahead of the consumer when a file is read. */
const READ_AHEAD = 4
/** Writes to a volume homed elsewhere are sent to a node of its home site on this subject. */
const writeSubject = (site: string) => `fabric.write.${site}`
/** A node of each site answers with its rolling hashes of a volume's log (volume verify). */
const verifySubject = (site: string) => `fabric.verify.${site}`
/** Checkpoints a site reports unasked, newest first. */
const RECENT_CHECKPOINTS = 16
/** How long a forwarded write may take at the home (it waits there until applied). */
const FORWARD_TIMEOUT_MS = 35_000
/** Chunks named in one chunk GC record (each about 75 bytes of the 1 MiB a record may hold). */
const GC_RECORD_CHUNKS = 8_000
/** How long a home node waits for a volume it does not know yet to reach its catalog and open. */
const FORWARD_OPEN_WAIT_MS = 10_000
/** How long applying a file commit waits for chunks the site's chunk mirror has not got yet. */
const CHUNK_WAIT_MS = 60_000
/**
 * How long applying a file commit waits for the chunk tracker to see chunks in the site's stream
 * before fetching them itself (from the site's stream, else the home's) into this node's packs.
 */
const CHUNK_TRACK_WAIT_MS = 10_000
/** An upload writes its chunk index at least this often (see putFile). */
const INDEX_FLUSH_MS = 5_000
const MAX_UPLOAD_MS = 12 * 3_600_000
const EMPTY = new Uint8Array(0)

/** What a site says about its copy of a volume's log, for verify. */
interface VerifyReply {
  site: string
  node: string
  held: boolean
  applied?: number
  /** Rolling hash at its last folded position. */
  current?: [number, string]
  /** Hashes at recent checkpoints, and at the positions asked for that it has. */
  hashes?: Array<[number, string]>
  log?: { first: number; last: number; messages: number }
}

export interface SiteVerification {
  site: string
  home: boolean
  reachable: boolean
  held: boolean
  applied: number | undefined
  logFirst: number | undefined
  logLast: number | undefined
  logMessages: number | undefined
  /** The highest position both this site and the home have a hash for, and whether they agree. */
  comparedAt: number | undefined
  agrees: boolean | undefined
  /** The first compared position where the hashes differ. */
  divergedAt: number | undefined
  problems: string[]
}

/** A forwarded write: the record (not yet stamped with a writer) and its file chunks. */
interface ForwardRequest {
  v: string
  r: VolumeRecord
  c?: string[]
}

/** The home's answer: the record's position and outcome, or the error. */
interface ForwardReply {
  seq?: number
  x?: boolean
  e?: { code: ErrorCode; message: string; details: Record<string, string> }
}

interface VolumeRuntime {
  follower: Follower
  applier: VolumeApplier
  tracker: ChunkTracker
}

/** Which chunks the site's copy of a volume's chunk stream holds (DataPlane.trackChunks). */
interface ChunkTracker {
  /** Waits until every chunk is marked held, or timeoutMs; resolves with those still unmarked. */
  waitFor(shas: string[], timeoutMs: number): Promise<string[]>
  stop(): Promise<void>
}

const decoder = new TextDecoder()
const encoder = new TextEncoder()

export class DataPlane {
  private readonly volumes = new Map<string, VolumeRuntime>()
  readonly writer: LogWriter
  /** Wakes stream subscribers: dataset id -> callbacks with the new last event position. */
  private readonly eventListeners = new Map<string, Set<(seq: number) => void>>()
  private readonly onAdded = (v: VolumeEntry) => this.reconcile(v)
  private readonly onChanged = (v: VolumeEntry) => this.reconcile(v)
  private readonly onRemoved = (v: VolumeEntry) =>
    void this.closeVolume(v.id, v.home !== this.o.site).catch((err: unknown) => this.o.log.warn({ err, volume: v.path }, 'could not remove the volume here'))
  private stopServing: (() => void) | undefined

  constructor(private readonly o: DataPlaneOptions) {
    this.writer = new LogWriter({ writerId: o.writerId, store: o.store, logs: o.logs, log: o.log, readChunk: (h) => o.chunks.read(h), retainAfterAckMs: o.retainAfterAckMs })
  }

  private readonly stopping = new AbortController()
  private recovering: Promise<number> | undefined

  async start(): Promise<void> {
    try {
      await this.writer.start()
      for (const v of this.o.catalog.listVolumes()) if (this.o.catalog.holds(v)) await this.openVolume(v)
      this.o.catalog.on('volume-added', this.onAdded)
      this.o.catalog.on('volume-changed', this.onChanged)
      this.o.catalog.on('volume-removed', this.onRemoved)
      const stopWrites = this.o.bus().serve(writeSubject(this.o.site), 'fabric-write', (data) => this.serveForwarded(data))
      const stopVerify = this.o.bus().serve(verifySubject(this.o.site), 'fabric-verify', (data) => this.serveVerify(data))
      this.stopServing = () => {
        stopWrites()
        stopVerify()
      }
    } catch (err) {
      await this.stop()
      throw err
    }
    this.gcTimer = setInterval(() => void this.collectAll(), this.o.gcIntervalMs)
    this.gcTimer.unref()
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
    if (this.gcTimer) clearInterval(this.gcTimer)
    this.stopping.abort()
    this.stopServing?.()
    this.o.catalog.off('volume-added', this.onAdded)
    this.o.catalog.off('volume-changed', this.onChanged)
    this.o.catalog.off('volume-removed', this.onRemoved)
    this.writer.stop()
    await Promise.race([this.recovering, new Promise((r) => setTimeout(r, 2_000).unref())])
    await Promise.all([...this.volumes.keys()].map((id) => this.closeVolume(id)))
  }

  /**
   * Creates the JetStream logs of a volume at its home site (called by the catalog before it
   * records the volume; across the leafnode when the home is another site).
   */
  static createVolumeLog(logsAt: (site: string) => Logs) {
    return async (volumeId: string, home: string) => {
      await logsAt(home).ensure(volumeStream(volumeId), volumeSubject(volumeId))
      await logsAt(home).ensure(chunkStream(volumeId), chunkSubjects(volumeId), { keyed: true })
    }
  }

  static deleteVolumeLog(logsAt: (site: string) => Logs) {
    return async (volumeId: string, home: string) => {
      await logsAt(home).remove(volumeStream(volumeId))
      await logsAt(home).remove(chunkStream(volumeId))
    }
  }

  /** Opens or closes a volume here after its placement changed. */
  private reconcile(v: VolumeEntry): void {
    const held = this.o.catalog.holds(v)
    const work = held ? this.openVolume(v) : this.volumes.has(v.id) ? this.closeVolume(v.id, true) : Promise.resolve()
    void work.catch((err: unknown) => this.o.log.error({ err, volume: v.path }, held ? 'cannot follow volume' : 'cannot release volume'))
  }

  private readonly opening = new Map<string, Promise<void>>()

  /** Opens a volume here once, also when asked again while it is being opened. */
  private openVolume(v: VolumeEntry): Promise<void> {
    if (this.volumes.has(v.id)) return Promise.resolve()
    let p = this.opening.get(v.id)
    if (!p) {
      p = this.doOpenVolume(v).finally(() => this.opening.delete(v.id))
      this.opening.set(v.id, p)
    }
    return p
  }

  private async doOpenVolume(v: VolumeEntry): Promise<void> {
    if (v.home === this.o.site) {
      // Created with the volume; ensured again so that a log lost with its server comes back.
      await this.o.logs().ensure(volumeStream(v.id), volumeSubject(v.id))
      await this.o.logs().ensure(chunkStream(v.id), chunkSubjects(v.id), { keyed: true })
    } else {
      // A replica: this site's copies of the home's logs, kept up to date by JetStream across the
      // leafnode. A new replica starts from the beginning of the log.
      await this.o.logs().ensureMirror(volumeStream(v.id), v.home)
      await this.o.logs().ensureMirror(chunkStream(v.id), v.home, { keyed: true })
    }
    const tracker = this.trackChunks(v)
    const chunks: VolumeChunks = {
      stage: (c) => this.o.chunks.stage(c),
      fetch: (h) => this.awaitChunk(v.id, h),
      awaitTracked: (shas) => tracker.waitFor(shas, CHUNK_TRACK_WAIT_MS),
      collected: (list) => this.dropCollected(v.id, list),
    }
    const applier = new VolumeApplier(this.o.store, chunks, v.id, this.o.writerId, this.o.log, (ds, seq) => this.eventListeners.get(ds)?.forEach((fn) => fn(seq)))
    const follower = new Follower({
      name: `volume ${v.path}`,
      logs: this.o.logs(),
      stream: volumeStream(v.id),
      store: this.o.store,
      appliedKey: keys.volumeApplied(v.id),
      apply: (batch) => applier.apply(batch),
      log: this.o.log,
      // At the home: first move the log past every position this node applied (so none is
      // reused), then publish the outbox again: records this node accepted may be among those lost.
      onRegression: (_lastSeq, applied) =>
        void (this.o.catalog.volume(v.id)?.home === this.o.site ? this.writer.padTo(v.id, applied) : Promise.resolve(0))
          .catch((err: unknown) => this.o.log.error({ err, volume: v.path }, 'padding the log after a loss failed'))
          .then(() => this.republish()),
    })
    this.volumes.set(v.id, { follower, applier, tracker })
    await follower.start()
  }

  /**
   * Follows which chunks the site's copy of the volume's chunk stream holds, without their bytes
   * (a headers-only consumer: the chunk's hash is its subject's last token), and marks each as
   * held by the volume. Applying a file's commit needs every chunk either in this node's pack
   * files or in the site's stream; a node that did not receive the upload reads the chunks from
   * the stream when the file is read. So a replica site stores each chunk once (in its mirror),
   * and replicating a file costs its nodes no byte of it (docs/architecture.md: the file data path).
   */
  private trackChunks(v: VolumeEntry): ChunkTracker {
    const controller = new AbortController()
    const key = keys.volumeChunkTracked(v.id)
    const waiters = new Map<string, Set<() => void>>()
    const running = (async () => {
      const raw = await this.o.store.get(key)
      const from = raw ? Number(decoder.decode(raw)) + 1 : 1
      await this.o.logs().follow(
        chunkStream(v.id),
        from,
        async (batch) => {
          const ops: BatchOp[] = []
          const seen: string[] = []
          for (const m of batch) {
            const sha256 = m.subject?.slice(m.subject.lastIndexOf('.') + 1)
            if (!sha256) continue
            seen.push(sha256)
            // Its position and JetStream time (the same at every site): chunk GC deletes that
            // message, and leaves unclaimed chunks alone for unclaimedChunkGraceMs from then.
            ops.push({ type: 'put', key: keys.volumeChunkSeen(v.id, sha256), value: pack([m.seq, m.timeMs]) })
          }
          ops.push({ type: 'put', key, value: encoder.encode(String(batch[batch.length - 1]!.seq)) })
          await this.o.store.batch(ops)
          for (const sha256 of seen) {
            const ws = waiters.get(sha256)
            if (ws) for (const w of ws) w()
          }
        },
        controller.signal,
        async (lastSeq) => lastSeq + 1,
        { headersOnly: true },
      )
    })().catch((err: unknown) => this.o.log.warn({ err, volume: v.path }, 'following the chunk stream stopped'))
    const untracked = (shas: string[]) => shas.filter((h) => this.o.store.getSync(keys.volumeChunkSeen(v.id, h)) === undefined)
    return {
      waitFor: async (shas, timeoutMs) => {
        let missing = untracked(shas)
        if (missing.length === 0 || controller.signal.aborted) return missing
        const pending = new Set(missing)
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(timer)
            for (const h of missing) {
              const ws = waiters.get(h)
              ws?.delete(onSeen)
              if (ws?.size === 0) waiters.delete(h)
            }
            controller.signal.removeEventListener('abort', done)
            resolve()
          }
          const onSeen = () => {
            for (const h of pending) if (this.o.store.getSync(keys.volumeChunkSeen(v.id, h)) !== undefined) pending.delete(h)
            if (pending.size === 0) done()
          }
          const timer = setTimeout(done, timeoutMs)
          controller.signal.addEventListener('abort', done)
          for (const h of missing) {
            let ws = waiters.get(h)
            if (!ws) waiters.set(h, (ws = new Set()))
            ws.add(onSeen)
          }
          // Marked between the first look and the registration.
          onSeen()
        })
        missing = untracked(missing)
        return missing
      },
      stop: async () => {
        controller.abort()
        await Promise.race([running, new Promise((r) => setTimeout(r, 2_000).unref())])
      },
    }
  }

  /** Stops applying a volume here; dropMirrors also deletes this site's copies of its logs. */
  private async closeVolume(id: string, dropMirrors = false): Promise<void> {
    const rt = this.volumes.get(id)
    this.volumes.delete(id)
    await rt?.tracker.stop()
    await rt?.follower.stop()
    if (dropMirrors) {
      await this.o.logs().remove(volumeStream(id))
      await this.o.logs().remove(chunkStream(id))
    }
  }

  private runtime(volumeId: string): VolumeRuntime {
    const rt = this.volumes.get(volumeId)
    if (rt) return rt
    const v = this.o.catalog.volume(volumeId)
    if (v && !this.o.catalog.holds(v)) {
      throw FabricError.failedPrecondition(
        `volume ${v.path} is not held at site ${this.o.site} (home ${v.home}${v.replicas.length ? `, replicas ${v.replicas.join(', ')}` : ''}): read it at one of those sites, or add ${this.o.site} to its replicas`,
        { details: { volume: v.path, site: this.o.site, home: v.home } },
      )
    }
    throw FabricError.unavailable(`volume ${v?.path ?? volumeId} is not open on this node yet`)
  }

  /**
   * The volume's runtime here for a write, if this site holds it. At the home it must be open
   * (the write goes through this node's writer); elsewhere the write is forwarded, and a site
   * that does not hold the volume can still send it.
   */
  private writable(volumeId: string): VolumeRuntime | undefined {
    const rt = this.volumes.get(volumeId)
    if (!rt && this.o.catalog.volume(volumeId)?.home === this.o.site) this.runtime(volumeId) // throws: not open yet
    return rt
  }

  /**
   * Appends a record to its volume's log. At the volume's home this node's writer does it
   * (durable, idempotent); elsewhere the record is sent to a node of the home site, which writes
   * and applies it and answers with its position and outcome.
   */
  private async append(volumeId: string, record: VolumeRecord, chunks?: string[]): Promise<{ seq: number; outcome?: Outcome | undefined }> {
    const vol = this.o.catalog.volume(volumeId)
    if (!vol) throw FabricError.notFound(`volume ${volumeId} does not exist`)
    if (vol.home === this.o.site) return { seq: await this.writer.append(volumeId, record, chunks) }
    const request: ForwardRequest = { v: volumeId, r: record, ...(chunks?.length ? { c: chunks } : {}) }
    let reply: ForwardReply
    try {
      reply = unpack<ForwardReply>(await this.o.bus().request(writeSubject(vol.home), pack(request), FORWARD_TIMEOUT_MS))
    } catch (err) {
      const why = err instanceof NoResponders ? 'no node of it is reachable' : FabricError.from(err).message
      throw FabricError.unavailable(`volume ${vol.path} is homed at site ${vol.home}, which is unreachable from site ${this.o.site} (${why}); nothing was written`, {
        cause: err,
        details: { volume: vol.path, home: vol.home },
      })
    }
    if (reply.e) throw new FabricError(reply.e.code, reply.e.message, { details: reply.e.details })
    return { seq: reply.seq!, outcome: reply.e || reply.x === undefined ? undefined : { existed: reply.x } }
  }

  /** A write forwarded by a node of another site to this home site. */
  private async serveForwarded(data: Uint8Array): Promise<Uint8Array> {
    let reply: ForwardReply
    try {
      const { v, r, c } = unpack<ForwardRequest>(data)
      // A volume created a moment ago elsewhere may not have reached this site's catalog, or be
      // open here, yet: give it a little time rather than refuse the first write.
      const deadline = Date.now() + FORWARD_OPEN_WAIT_MS
      while ((!this.o.catalog.volume(v) || !this.volumes.has(v)) && Date.now() < deadline && !this.stopping.signal.aborted) await new Promise((r) => setTimeout(r, 50))
      const vol = this.o.catalog.volume(v)
      if (!vol) throw FabricError.notFound(`volume ${v} does not exist at its home site ${this.o.site}`)
      if (vol.home !== this.o.site) throw FabricError.failedPrecondition(`volume ${vol.path} is homed at ${vol.home}, not at ${this.o.site}`, { details: { volume: vol.path, home: vol.home } })
      const rt = this.runtime(v)
      const seq = await this.writer.append(v, r, c)
      const outcome = await rt.follower.waitApplied(seq)
      reply = outcome?.error ? { e: errorReply(outcome.error) } : { seq, ...(outcome?.existed !== undefined ? { x: outcome.existed } : {}) }
    } catch (err) {
      reply = { e: errorReply(FabricError.from(err)) }
    }
    return pack(reply)
  }

  /**
   * Appends (here or at the volume's home) and waits until applied on this node, if this site
   * holds the volume (read-your-writes); surfaces a failed condition.
   */
  private async write(target: DatasetEntry | VolumeEntry, record: VolumeRecord, chunks?: string[]): Promise<{ seq: number; outcome: Outcome | undefined }> {
    const volumeId = 'volumeId' in target ? target.volumeId : target.id
    const rt = this.writable(volumeId)
    const vol = this.o.catalog.volume(volumeId)
    const { seq, outcome: forwarded } = await this.append(volumeId, record, chunks)
    const outcome = forwarded ?? (rt && vol?.home === this.o.site ? await rt.follower.waitApplied(seq) : undefined)
    if (outcome?.error) throw outcome.error
    // Written at the home: wait until this site's mirror has it too, so a read here sees it.
    if (rt && vol?.home !== this.o.site) await rt.follower.waitApplied(seq)
    return { seq, outcome }
  }

  // ---- stats ----

  async datasetStat(ds: DatasetEntry): Promise<DatasetStat> {
    return { ...(await this.runtime(ds.volumeId).applier.stat(ds.id)) }
  }

  /** The volumes this node holds and how far it has applied them (for heartbeats). */
  async held(): Promise<HeldVolume[]> {
    const out: HeldVolume[] = []
    for (const [id, rt] of this.volumes) {
      const info = await this.o.logs().info(volumeStream(id)).catch(() => undefined)
      out.push({
        id,
        applied: rt.follower.applied,
        appliedTimeMs: rt.follower.appliedTimeMs,
        logLast: info?.lastSeq ?? 0,
        logLastTimeMs: info?.lastTimeMs ?? 0,
        logBytes: info?.bytes ?? 0,
      })
    }
    return out
  }

  /** Whether this node has the volume open (its site holds it). */
  holds(volumeId: string): boolean {
    return this.volumes.has(volumeId)
  }

  async volumeStat(v: VolumeEntry): Promise<{ applied: number; lastSeq: number; logBytes: number; datasets: number; bytes: number }> {
    const held = this.o.catalog.datasetsIn(v.id)
    // A site that does not hold the volume has no copy to describe.
    if (!this.o.catalog.holds(v)) return { applied: 0, lastSeq: 0, logBytes: 0, datasets: held.length, bytes: 0 }
    const rt = this.runtime(v.id)
    const [info, chunkInfo] = await Promise.all([this.o.logs().info(volumeStream(v.id)), this.o.logs().info(chunkStream(v.id))])
    let bytes = 0
    for (const ds of held) bytes += (await rt.applier.stat(ds.id)).bytes
    // The log's bytes include its chunk stream: together they are what the volume holds in JetStream.
    return { applied: rt.follower.applied, lastSeq: info.lastSeq, logBytes: info.bytes + chunkInfo.bytes, datasets: held.length, bytes }
  }

  // ---- verification ----

  /**
   * Compares every site's copy of the volume's log with the home's: the rolling hash at the
   * highest position both have one for, and the shape of each copy (gaps, a copy longer than the
   * home's). Sites are asked across the leafnodes; one that does not answer is reported so.
   */
  async verify(volumePath: string): Promise<SiteVerification[]> {
    const v = this.o.catalog.volumeAt(volumePath)
    const ask = async (site: string, at: number[]): Promise<VerifyReply | undefined> => {
      try {
        return unpack<VerifyReply>(await this.o.bus().request(verifySubject(site), pack({ v: v.id, at }), 5_000))
      } catch {
        return undefined
      }
    }
    const home = await ask(v.home, [])
    const homeHashes = new Map(home?.hashes ?? [])
    if (home?.current) homeHashes.set(home.current[0], home.current[1])
    const out: SiteVerification[] = []
    for (const site of [v.home, ...v.replicas]) {
      const isHome = site === v.home
      const reply = isHome ? home : await ask(site, [...homeHashes.keys()])
      const result: SiteVerification = {
        site,
        home: isHome,
        reachable: reply !== undefined,
        held: reply?.held ?? false,
        applied: reply?.applied,
        logFirst: reply?.log?.first,
        logLast: reply?.log?.last,
        logMessages: reply?.log?.messages,
        comparedAt: undefined,
        agrees: undefined,
        divergedAt: undefined,
        problems: [],
      }
      out.push(result)
      if (!reply) {
        result.problems.push(`no node of site ${site} answered`)
        continue
      }
      if (!reply.held) {
        result.problems.push(`site ${site} does not hold the volume (yet)`)
        continue
      }
      const log = reply.log
      if (log && log.last >= log.first && log.messages < log.last - log.first + 1) {
        result.problems.push(`its copy of the log has gaps: ${log.last - log.first + 1 - log.messages} of positions ${log.first}..${log.last} are missing`)
      }
      if (!isHome && log && home?.log && log.last > home.log.last) {
        result.problems.push(`its copy of the log ends at ${log.last}, after the home's (${home.log.last}): the home lost records`)
      }
      if (isHome) {
        result.comparedAt = reply.current?.[0]
        result.agrees = true
        continue
      }
      const mine = new Map(reply.hashes ?? [])
      if (reply.current) mine.set(reply.current[0], reply.current[1])
      const common = [...mine.keys()].filter((seq) => homeHashes.has(seq)).sort((a, b) => a - b)
      if (common.length === 0) {
        result.problems.push('no position to compare at yet (the site and the home have no hashed position in common)')
        continue
      }
      const differing = common.filter((seq) => mine.get(seq) !== homeHashes.get(seq))
      result.comparedAt = common[common.length - 1]
      result.agrees = differing.length === 0
      if (differing.length > 0) {
        result.divergedAt = differing[0]
        result.problems.push(`its log differs from the home's at position ${differing[0]}${common[0]! < differing[0]! ? ` (the same up to ${Math.max(...common.filter((s) => s < differing[0]!))})` : ''}: re-seed it (fabric volume reseed ${v.path} at a node of ${site})`)
      }
    }
    return out
  }

  /** Answers verify for this node's site. */
  private async serveVerify(data: Uint8Array): Promise<Uint8Array> {
    const { v, at } = unpack<{ v: string; at: number[] }>(data)
    const rt = this.volumes.get(v)
    const base = { site: this.o.site, node: this.o.writerId }
    if (!rt) return pack({ ...base, held: false } satisfies VerifyReply)
    const rolling = await rt.applier.rollingHash()
    const hashes: Array<[number, string]> = []
    const prefix = keys.volumeHashCheckpointPrefix(v)
    for await (const [k, value] of this.o.store.entries({ gte: prefix, lt: keys.prefixEnd(prefix), reverse: true, limit: RECENT_CHECKPOINTS })) {
      hashes.push([parseInt(k.slice(prefix.length), 16), hashHex(value)])
    }
    for (const seq of at ?? []) {
      const raw = await this.o.store.get(keys.volumeHashCheckpoint(v, seq))
      if (raw) hashes.push([seq, hashHex(raw)])
    }
    const info = await this.o.logs().info(volumeStream(v)).catch(() => undefined)
    const reply: VerifyReply = {
      ...base,
      held: true,
      applied: rt.follower.applied,
      current: [rolling.seq, hashHex(rolling.hash)],
      hashes,
      ...(info ? { log: { first: info.firstSeq, last: info.lastSeq, messages: info.messages } } : {}),
    }
    return pack(reply)
  }

  /**
   * Drops this site's copy of a volume (its log mirrors and everything applied from them) and
   * takes it again from the home, from the start: the way back for a replica whose log
   * diverged. The home's log is the reference, so the home cannot be re-seeded.
   */
  async reseed(volumePath: string): Promise<void> {
    const v = this.o.catalog.volumeAt(volumePath)
    if (v.home === this.o.site) throw FabricError.failedPrecondition(`site ${this.o.site} is the home of ${v.path}: its log is the reference; re-seed the replicas instead`, { details: { volume: v.path } })
    this.runtime(v.id)
    await this.closeVolume(v.id, true)
    for (const prefix of [keys.volumePrefix(v.id), ...this.o.catalog.datasetsIn(v.id).map((d) => keys.datasetPrefix(d.id))]) await this.o.store.clearPrefix(prefix)
    this.o.log.warn({ volume: v.path }, 'volume dropped at this site; taking it again from its home')
    await this.openVolume(v)
  }

  // ---- garbage collection ----

  private gcTimer: NodeJS.Timeout | undefined
  /** Garbage collection runs one at a time (periodic and asked for): the tail of the queue. */
  private gcQueue: Promise<unknown> = Promise.resolve()

  private serialGc<T>(work: () => Promise<T>): Promise<T> {
    const run = this.gcQueue.then(work, work)
    this.gcQueue = run.catch(() => undefined)
    return run
  }

  /**
   * The periodic collection: every volume held here, one after the other (chunks condemned in the
   * previous round are removed in this one), then this node's pack files.
   */
  private collectAll(): Promise<void> {
    return this.serialGc(async () => {
      for (const id of [...this.volumes.keys()]) {
        if (this.stopping.signal.aborted) return
        const v = this.o.catalog.volume(id)
        if (!v) continue
        await this.collectVersions(v).catch((err: unknown) => this.o.log.warn({ err, volume: v.path }, 'garbage collection of versions failed'))
        if (v.home === this.o.site) await this.collectChunks(v, false).catch((err: unknown) => this.o.log.warn({ err, volume: v.path }, 'garbage collection of chunks failed'))
      }
      if (!this.stopping.signal.aborted) await this.reclaimPacks().catch((err: unknown) => this.o.log.warn({ err }, 'reclaiming chunk pack space failed'))
    })
  }

  /**
   * Garbage collection of one volume, now: its old versions on this node; at its home, its
   * chunks no kept version refers to, from the volume and every site's copy of its chunk stream
   * (both phases at once); then this node's pack files (docs/replication.md, "Garbage collection").
   */
  collectGarbage(volumePath: string): Promise<GcResult> {
    const v = this.o.catalog.volumeAt(volumePath)
    this.runtime(v.id)
    return this.serialGc(async () => {
      const { versions, bytes } = await this.collectVersions(v)
      const chunks = v.home === this.o.site ? await this.collectChunks(v, true) : { condemned: 0, removed: 0 }
      const packs = await this.reclaimPacks()
      return { versions, bytes, chunksRemoved: chunks.removed, packBytesReclaimed: packs.bytesReclaimed }
    })
  }

  /**
   * Chunk GC at the volume's home, through the log so that every node of every site takes the
   * same decision at the same position. Phase 2 first removes what an earlier phase 1 condemned
   * and no commit rescued since; phase 1 then condemns every chunk of the site's copy of the
   * chunk stream that no file version kept here refers to, where either the volume claimed it
   * (a commit did, since collected) or nobody did for unclaimedChunkGraceMs (a failed upload).
   * With `now`, phase 2 follows at once. Removing happens in phase 2 only, so an upload that
   * deduplicated against a chunk just before phase 1 rescues it with its commit, and one that did
   * after phase 2 is refused by the applier (nx).
   */
  private async collectChunks(v: VolumeEntry, now: boolean): Promise<{ condemned: number; removed: number }> {
    const rt = this.runtime(v.id)
    let removed = await this.executeCondemned(v, rt)
    const at = rt.follower.applied
    const referenced = new Set<string>()
    for (const ds of this.o.catalog.datasetsIn(v.id)) {
      if (ds.kind !== 'files') continue
      const base = keys.filePrefix(ds.id)
      for await (const [, value] of this.o.store.entries({ gte: base, lt: keys.prefixEnd(base) })) {
        for (const h of unpack<StoredFile>(value).chunks ?? []) referenced.add(h)
      }
    }
    const candidates: Array<[string, number]> = []
    const seenPrefix = keys.volumeChunkSeenPrefix(v.id)
    const oldest = Date.now() - this.o.unclaimedChunkGraceMs
    for await (const [k, value] of this.o.store.entries({ gte: seenPrefix, lt: keys.prefixEnd(seenPrefix) })) {
      const sha256 = k.slice(seenPrefix.length)
      if (referenced.has(sha256) || this.o.store.getSync(keys.volumeChunkCondemned(v.id, sha256)) !== undefined) continue
      const [position, timeMs] = unpack<[number, number]>(value)
      const claimed = this.o.store.getSync(keys.volumeChunk(v.id, sha256)) !== undefined
      if (claimed || timeMs < oldest) candidates.push([sha256, position])
    }
    for (let i = 0; i < candidates.length; i += GC_RECORD_CHUNKS) {
      const seq = await this.writer.append(v.id, { op: 'cgc', phase: 1, at, c: candidates.slice(i, i + GC_RECORD_CHUNKS) })
      await rt.follower.waitApplied(seq)
    }
    if (candidates.length > 0) this.o.log.info({ volume: v.path, chunks: candidates.length }, 'chunks no file version refers to condemned')
    if (now) removed += await this.executeCondemned(v, rt)
    return { condemned: candidates.length, removed }
  }

  /** Chunk GC phase 2 for what is condemned now; resolves with how many chunks it removed. */
  private async executeCondemned(v: VolumeEntry, rt: VolumeRuntime): Promise<number> {
    const prefix = keys.volumeChunkCondemnedPrefix(v.id)
    const condemned: Array<[string, number]> = []
    for await (const [k, value] of this.o.store.entries({ gte: prefix, lt: keys.prefixEnd(prefix) })) condemned.push([k.slice(prefix.length), Number(decoder.decode(value))])
    for (let i = 0; i < condemned.length; i += GC_RECORD_CHUNKS) {
      const seq = await this.writer.append(v.id, { op: 'cgc', phase: 2, c: condemned.slice(i, i + GC_RECORD_CHUNKS) })
      await rt.follower.waitApplied(seq)
    }
    const removed = condemned.filter(([h]) => this.o.store.getSync(keys.volumeChunk(v.id, h)) === undefined).length
    if (removed > 0) this.o.log.info({ volume: v.path, chunks: removed }, 'chunks removed from the volume')
    return removed
  }

  /**
   * After chunk GC phase 2 applied here: deletes those messages from this site's copy of the
   * chunk stream (each node of the site tries; the first one does it). Their bytes in this
   * node's packs go with the next reclaimPacks.
   */
  private dropCollected(volumeId: string, list: Array<[string, number]>): void {
    this.dropping = this.dropping.then(async () => {
      let deleted = 0
      for (const [, position] of list) {
        if (this.stopping.signal.aborted) return
        if (await this.o.logs().deleteMessage(chunkStream(volumeId), position).catch((err: unknown) => void this.o.log.warn({ err, volume: volumeId }, 'deleting a collected chunk failed'))) deleted++
      }
      this.o.log.debug({ volume: volumeId, deleted, of: list.length }, 'collected chunks deleted from the chunk stream')
    })
  }

  private dropping: Promise<void> = Promise.resolve()

  /**
   * This node's pack files: index entries of chunks no volume held here claims, and no upload
   * wrote within unclaimedChunkGraceMs, are dropped; then packs mostly made of dropped or
   * never-indexed bytes are rewritten (ChunkStore.compact).
   */
  private async reclaimPacks(): Promise<{ bytesReclaimed: number }> {
    const held = [...this.volumes.keys()]
    const oldest = Date.now() - this.o.unclaimedChunkGraceMs
    await this.o.chunks.sweep((sha256, stagedMs) => stagedMs >= oldest || held.some((v) => this.o.store.getSync(keys.volumeChunk(v, sha256)) !== undefined))
    return this.o.chunks.compact()
  }

  /**
   * Removes versions of table documents and files that nothing can read any more: a version is
   * kept while it is the newest, or while it is the one visible at a retained snapshot (the
   * newest at or before the snapshot's position); every other version goes. Each node collects
   * its own store; the log is not touched. Events are never collected (a stream is its history).
   * Reads at arbitrary positions (`atSeq`) older than the newest version are not guaranteed after
   * a collection; reads at snapshots are.
   */
  private async collectVersions(v: VolumeEntry): Promise<{ versions: number; bytes: number }> {
    const snaps = (await this.listSnapshots(v.path)).map((x) => x.seq).sort((a, b) => a - b)
    /** Whether some snapshot position p has from <= p < to. */
    const needed = (from: number, to: number) => {
      let lo = 0
      let hi = snaps.length
      while (lo < hi) {
        const mid = (lo + hi) >> 1
        if (snaps[mid]! < from) lo = mid + 1
        else hi = mid
      }
      return lo < snaps.length && snaps[lo]! < to
    }
    let versions = 0
    let bytes = 0
    for (const ds of this.o.catalog.datasetsIn(v.id)) {
      if (ds.kind === 'stream') continue
      const base = ds.kind === 'table' ? keys.tablePrefix(ds.id) : keys.filePrefix(ds.id)
      let ops: BatchOp[] = []
      let name: string | undefined
      let newer = 0
      for await (const [k, value] of this.o.store.entries({ gte: base, lt: keys.prefixEnd(base) })) {
        const { name: n, seq } = keys.splitVersion(base, k)
        if (n !== name) {
          // The newest version of a name: always kept.
          name = n
          newer = seq
          continue
        }
        // Versions come newest first: this one was visible from seq until `newer`.
        if (!needed(seq, newer)) {
          ops.push({ type: 'del', key: k })
          versions++
          bytes += k.length + value.length
          if (ops.length >= 1000) {
            await this.o.store.batch(ops)
            ops = []
          }
        }
        newer = seq
      }
      await this.o.store.batch(ops)
    }
    if (versions > 0) this.o.log.info({ volume: v.path, versions, bytes }, 'old versions collected')
    return { versions, bytes }
  }

  // ---- snapshots ----

  /**
   * Names the volume's current log position: a snapshot is a record in the volume's log, so it
   * is one cut across all the volume's datasets, and every site that applies the log (also one
   * offline when it was taken) places it at the same position. Taking one costs one record,
   * whatever the volume's size.
   */
  async createSnapshot(volumePath: string, name: string): Promise<Snapshot> {
    const v = this.o.catalog.volumeAt(volumePath)
    validateSnapshotName(name)
    const { seq } = await this.write(v, { op: 'snap', name })
    return { volume: v.path, name, seq, timeMs: Date.now() }
  }

  async deleteSnapshot(volumePath: string, name: string): Promise<void> {
    const v = this.o.catalog.volumeAt(volumePath)
    validateSnapshotName(name)
    await this.write(v, { op: 'snaprm', name })
  }

  /** The volume's snapshots as applied here, oldest first. */
  async listSnapshots(volumePath: string): Promise<Snapshot[]> {
    const v = this.o.catalog.volumeAt(volumePath)
    this.runtime(v.id)
    const prefix = keys.snapshotPrefix(v.id)
    const out: Snapshot[] = []
    for await (const [k, value] of this.o.store.entries({ gte: prefix, lt: keys.prefixEnd(prefix) })) {
      const s = unpack<StoredSnapshot>(value)
      out.push({ volume: v.path, name: k.slice(prefix.length), seq: s.seq, timeMs: s.t })
    }
    return out.sort((a, b) => a.seq - b.seq)
  }

  /** A snapshot of the volume that holds `path` (a volume, dataset or file path). */
  async snapshotFor(path: string, name: string): Promise<Snapshot> {
    validateSnapshotName(name)
    const v = this.o.catalog.volumeFor(path)
    this.runtime(v.id)
    const raw = await this.o.store.get(keys.snapshot(v.id, name))
    if (!raw) throw FabricError.notFound(`snapshot ${name} of volume ${v.path} does not exist (at this site, yet)`, { details: { volume: v.path, snapshot: name } })
    const s = unpack<StoredSnapshot>(raw)
    return { volume: v.path, name, seq: s.seq, timeMs: s.t }
  }

  /**
   * SHA-256 of the volume's content at a log position: every dataset (by its path inside the
   * volume), its documents,
   * files (name, size, content hash) and events up to the position, in a fixed order. The same
   * log gives the same hash at every site.
   */
  async contentHash(volumePath: string, atSeq: number): Promise<string> {
    const v = this.o.catalog.volumeAt(volumePath)
    this.runtime(v.id)
    const h = createHash('sha256')
    const field = (s: string | Uint8Array) => {
      const b = typeof s === 'string' ? encoder.encode(s) : s
      h.update(`${b.length}:`).update(b)
    }
    for (const ds of this.o.catalog.datasetsIn(v.id).sort((a, b) => (a.path < b.path ? -1 : 1))) {
      // Relative to the volume, so that a clone of the volume elsewhere hashes the same.
      field(v.path === '/' ? ds.path : ds.path.slice(v.path.length))
      field(ds.kind)
      if (ds.kind === 'table') {
        const base = keys.tablePrefix(ds.id)
        for await (const row of versionScan(this.o.store, base, base, keys.prefixEnd(base), atSeq, 0, (name, _seq, value) => {
          const doc = unpack<StoredDoc>(value)
          return doc.d ? { name, d: doc.d } : undefined
        })) {
          field(row.name)
          field(row.d)
        }
      } else if (ds.kind === 'files') {
        const base = keys.filePrefix(ds.id)
        for await (const f of versionScan(this.o.store, base, base, keys.prefixEnd(base), atSeq, 0, (name, _seq, value) => {
          const sf = unpack<StoredFile>(value)
          return sf.sha ? { name, sha: sf.sha, size: sf.size! } : undefined
        })) {
          field(f.name)
          field(`${f.size}:${f.sha}`)
        }
      } else {
        const base = keys.eventPrefix(ds.id)
        for await (const [k, value] of this.o.store.entries({ gte: base, lt: keys.event(ds.id, atSeq + 1) })) {
          field(k.slice(base.length))
          field(unpack<StoredEvent>(value).d)
        }
      }
    }
    return h.digest('hex')
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
    const rt = this.writable(ds.volumeId)
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
      inflight.push(this.append(ds.volumeId, { op: 'batch', ds: ds.id, ops }).then((r) => r.seq))
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
    if (lastSeq > 0 && rt) await rt.follower.waitApplied(lastSeq, 120_000)
    return { imported, batches, lastSeq }
  }

  async get(path: string, key: string, atSeq = 0): Promise<Row> {
    const ds = this.o.catalog.datasetAt(path, 'table')
    if (!this.volumes.has(ds.volumeId)) this.runtime(ds.volumeId) // throws: not held here
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
    this.runtime(ds.volumeId) // reads need this site to hold the volume
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
    // Elsewhere than at the home the chunks go to the home's chunk stream and are kept here only
    // if this site holds the volume.
    const keepHere = this.writable(ds.volumeId) !== undefined
    const startedMs = performance.now()
    const whole = createHash('sha256')
    const chunks: string[] = []
    const sent = new Set<string>()
    /** Chunks not sent because the volume holds them (deduplicated against earlier files). */
    const nx = new Set<string>()
    const inflight: Array<Promise<void>> = []
    // Index entries of the chunks stored so far, written in groups (one LevelDB batch per chunk
    // cost more than the rest of its bookkeeping), and at least every INDEX_FLUSH_MS, so that
    // chunk GC's pack compaction (which leaves recently written packs alone) never moves a pack
    // whose chunks an upload has staged but not indexed yet. Not fsynced by themselves: the
    // fsynced outbox write of the commit, after them in LevelDB's log, makes them durable.
    let index: BatchOp[] = []
    let indexWrittenMs = Date.now()
    const writeIndex = async () => {
      const ops = index
      index = []
      indexWrittenMs = Date.now()
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
      if (sent.has(h) || nx.has(h)) {
        deduplicated++
        return
      }
      // The volume's already (and not condemned by chunk GC): not sent again. The commit names it
      // among nx, and is refused if GC removed it meanwhile.
      if (this.o.store.getSync(keys.volumeChunk(ds.volumeId, h)) !== undefined && this.o.store.getSync(keys.volumeChunkCondemned(ds.volumeId, h)) === undefined) {
        nx.add(h)
        deduplicated++
        return
      }
      sent.add(h)
      const stored = this.storeChunk(ds.volumeId, h, data, keepHere ? index : undefined)
      stored.catch(() => undefined) // awaited below; an upload that fails first must not leave it unhandled
      inflight.push(stored)
      if (inflight.length >= UPLOAD_WINDOW) await inflight.shift()!
      if (index.length >= 512 || (index.length > 0 && Date.now() - indexWrittenMs > INDEX_FLUSH_MS)) await writeIndex()
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
    if (performance.now() - startedMs > this.o.unclaimedChunkGraceMs / 2) {
      throw FabricError.failedPrecondition(`upload of ${path} took longer than ${humanMs(this.o.unclaimedChunkGraceMs / 2)} (half of gc.unclaimed_chunk_grace): its first chunks may be garbage-collected already; nothing was stored, upload it again`, { details: { path } })
    }
    const commitBytes = chunks.length * 66 + name.length + 200
    if (commitBytes > MAX_RECORD_BYTES) throw FabricError.invalidArgument(`${path}: ${size} bytes is more than one file can hold (${chunks.length} chunks)`)
    const { seq } = await this.write(ds, { op: 'file', ds: ds.id, n: name, size, sha: sha256, chunks, ...(nx.size > 0 ? { nx: [...nx] } : {}) }, [...sent])
    return { file: { path, dataset: ds.path, size, sha256, version: seq, timeMs: Date.now(), chunks }, deduplicated }
  }

  /**
   * Stores one chunk of an upload: durably in this node's chunk store (unless another volume
   * brought it here already) and in the volume's chunk stream. Both are done before the file's
   * commit is accepted, so every node that applies the commit finds the chunk here or in the
   * stream; the commit makes it the volume's.
   */
  private async storeChunk(volumeId: string, sha256: string, data: Uint8Array, index: BatchOp[] | undefined): Promise<void> {
    const held = !index || this.o.chunks.has(sha256)
    const [indexOps] = await Promise.all([held ? [] : this.o.chunks.stage([{ sha256, data }]), this.appendChunk(volumeId, sha256, data)])
    index?.push(...indexOps)
  }

  /** Publishes a chunk to its volume's chunk stream, which lives at the volume's home. */
  private async appendChunk(volumeId: string, sha256: string, data: Uint8Array): Promise<void> {
    await this.o.logs().append(chunkSubject(volumeId, sha256), data).catch((err: unknown) => {
      const vol = this.o.catalog.volume(volumeId)
      if (!vol || vol.home === this.o.site) throw err
      throw FabricError.unavailable(`volume ${vol.path} is homed at site ${vol.home}, which is unreachable from site ${this.o.site}; nothing was written`, {
        cause: err,
        details: { volume: vol.path, home: vol.home },
      })
    })
  }

  /** A chunk from a volume's chunk stream, for chunks this node does not hold (yet). */
  private fetchChunk(volumeId: string, sha256: string): Promise<Uint8Array | undefined> {
    return this.o.logs().last(chunkStream(volumeId), chunkSubject(volumeId, sha256))
  }

  /** A chunk from the home's chunk stream, for one this site's copy lacks (a lagging or re-seeded mirror). */
  private async fetchChunkAtHome(volumeId: string, sha256: string): Promise<Uint8Array | undefined> {
    const home = this.o.catalog.volume(volumeId)?.home
    if (!home || home === this.o.site) return undefined
    return this.o.logsAt(home).last(chunkStream(volumeId), chunkSubject(volumeId, sha256)).catch(() => undefined)
  }

  /**
   * A chunk a file commit being applied refers to. At a replica site the chunk mirror can lag the
   * log mirror: then ask the home's chunk stream, and failing that (link down) wait for the
   * mirror, quietly, for a while; the follower retries after that.
   */
  private async awaitChunk(volumeId: string, sha256: string): Promise<Uint8Array | undefined> {
    const home = this.o.catalog.volume(volumeId)?.home
    const deadline = Date.now() + CHUNK_WAIT_MS
    for (let attempt = 0; ; attempt++) {
      const local = await this.fetchChunk(volumeId, sha256)
      if (local || !home || home === this.o.site) return local
      const remote = await this.fetchChunkAtHome(volumeId, sha256)
      if (remote) return remote
      if (Date.now() > deadline || this.stopping.signal.aborted) return undefined
      if (attempt === 10) this.o.log.info({ volume: volumeId, chunk: sha256 }, 'waiting for a chunk to reach this site')
      await new Promise((r) => setTimeout(r, Math.min(1_000, 50 * 2 ** attempt)))
    }
  }

  /**
   * Makes an earlier version of a file current again, as a new version (for restores): a commit
   * that refers to chunks the volume's log already holds, so no byte is sent again. Every chunk
   * must be one this volume has (it is checked here).
   */
  async recommitFile(path: string, version: { size: number; sha256: string; chunks: string[] }): Promise<number> {
    const { ds, name } = this.o.catalog.fileAt(path)
    validateFileName(name, path)
    this.runtime(ds.volumeId)
    for (const h of new Set(version.chunks)) {
      if (this.o.store.getSync(keys.volumeChunk(ds.volumeId, h)) === undefined) {
        throw FabricError.failedPrecondition(`chunk ${h} of ${path} is not held by volume ${this.o.catalog.volume(ds.volumeId)?.path}; upload the file instead`, { details: { path, chunk: h } })
      }
    }
    const { seq } = await this.write(ds, { op: 'file', ds: ds.id, n: name, size: version.size, sha: version.sha256, chunks: version.chunks, nx: [...new Set(version.chunks)] })
    return seq
  }

  async statFile(path: string, atSeq = 0): Promise<FileMeta> {
    const { ds, name } = this.o.catalog.fileAt(path)
    this.runtime(ds.volumeId) // reads need this site to hold the volume
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
      const data = (await this.o.chunks.read(h)) ?? (await this.fetchChunk(volumeId, h)) ?? (await this.fetchChunkAtHome(volumeId, h))
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
    this.runtime(ds.volumeId) // reads need this site to hold the volume
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
    const rt = this.writable(ds.volumeId)
    // Appends are issued in order on one connection, so the log keeps this order (forwarded ones
    // too: requests on one connection reach the home in order, and it appends them in order).
    const seqs = await Promise.all(payloads.map(async (d) => (await this.append(ds.volumeId, { op: 'event', ds: ds.id, d })).seq))
    if (rt) await rt.follower.waitApplied(Math.max(...seqs))
    return seqs
  }

  /**
   * Events from a position or a time, then (with follow) new ones as they are applied, until
   * count events or the signal aborts.
   */
  async *subscribe(path: string, o: { fromSeq?: number; sinceMs?: number; count?: number; follow?: boolean; signal?: AbortSignal; toSeq?: number }): AsyncGenerator<StreamEvent> {
    const ds = this.o.catalog.datasetAt(path, 'stream')
    this.runtime(ds.volumeId) // reads need this site to hold the volume
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
          if (o.toSeq !== undefined && seq > o.toSeq) return
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

/** A duration for messages: "12 h", "5 min", "30 s". */
function humanMs(ms: number): string {
  if (ms >= 3_600_000) return `${Math.round(ms / 3_600_000)} h`
  if (ms >= 60_000) return `${Math.round(ms / 60_000)} min`
  return `${Math.round(ms / 1000)} s`
}

/** Snapshot names follow the rule of path segments. */
function validateSnapshotName(name: string): void {
  if (typeof name !== 'string' || !SEGMENT.test(name)) {
    throw FabricError.invalidArgument(`snapshot name ${JSON.stringify(name)}: expected lowercase letters, digits, ".", "_" and "-", starting with a letter or digit, at most 63 characters`, {
      details: { snapshot: String(name) },
    })
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

function errorReply(e: FabricError): NonNullable<ForwardReply['e']> {
  return { code: e.code, message: e.message, details: { ...e.details } }
}
