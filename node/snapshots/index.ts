/**
 * Working with snapshots: diff two of them, restore a volume (or a dataset) to one, clone one into
 * a new volume, export one to a self-contained archive and import such an archive. Everything is
 * built on the data plane's public reads at a log position and its ordinary writes, so whatever
 * this writes goes through the volume's log and reaches every site that holds the volume.
 *
 * "Now" is always a fixed position: the volume's position as applied on this node when the
 * operation starts. Reading the current state at it gives one consistent cut, and the operation's
 * own writes (at later positions) do not disturb its reads.
 */
import { createHash, randomUUID } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { mkdir, readdir, rm } from 'node:fs/promises'
import path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { contains, type Catalog, type DatasetEntry, type DatasetKind, type VolumeEntry } from '../catalog/index.ts'
import { MAX_BATCH_BYTES, MAX_BATCH_OPS, MAX_DOC_BYTES, MAX_EVENT_BYTES, type DataPlane, type FileMeta, type Snapshot } from '../datasets/index.ts'
import { FabricError, isFabricError } from '../errors/index.ts'
import type { Logger } from '../log/index.ts'
import {
  ARCHIVE_FORMAT,
  ARCHIVE_VERSION,
  encodeManifest,
  eventLine,
  fileEntry,
  fileNameOf,
  LineSplitter,
  lines,
  MANIFEST_NAME,
  MAX_MANIFEST_BYTES,
  parseEventLine,
  parseManifest,
  parseTableLine,
  pieces,
  readTar,
  streamEntry,
  tableEntry,
  tableLine,
  writeTar,
  type Manifest,
  type ManifestDataset,
  type ManifestEntry,
  type TarEntry,
} from './archive.ts'
import { PortableHash } from './hash.ts'
import { ascending, mergeByName } from './order.ts'

export { ARCHIVE_FORMAT, ARCHIVE_VERSION, MANIFEST_NAME, type Manifest } from './archive.ts'
export { PortableHash } from './hash.ts'
export { compareUtf8, mergeByName } from './order.ts'

export interface SnapshotsOptions {
  data: DataPlane
  catalog: Catalog
  /** Where an archive being imported is kept while it is checked: the node's data disk, not a tmpfs. */
  spoolDir: string
  log: Logger
}

/** What an operation did to one dataset. */
export interface DatasetChanges {
  dataset: string
  kind: DatasetKind
  created: boolean
  keysPut: number
  keysDeleted: number
  filesPut: number
  filesDeleted: number
  eventsAppended: number
  /** Restore: events appended since the snapshot (kept). Import: events the stream held already. */
  eventsKept: number
}

export type ChangeKind = 'added' | 'changed' | 'removed'

/** A table key or a file that differs between the two sides of a diff. */
export interface Change {
  dataset: string
  kind: ChangeKind
  /** The key, or the file's name in its dataset. */
  name: string
  fromVersion: number
  toVersion: number
  /** Files only. */
  fromSize?: number
  toSize?: number
  fromSha256?: string
  toSha256?: string
}

export interface DatasetDiff {
  dataset: string
  kind: DatasetKind
  added: number
  changed: number
  removed: number
  eventsAdded: number
}

export type DiffItem =
  | { type: 'range'; volume: string; fromSnapshot: string; fromSeq: number; toSnapshot: string; toSeq: number }
  | { type: 'change'; change: Change }
  | { type: 'dataset'; diff: DatasetDiff }

/** The summary of an archive (its manifest without the lists). */
export interface ArchiveInfo {
  volume: string
  snapshot: string
  seq: number
  createdMs: number
  contentHash: string
  portableHash: string
  datasets: number
  entries: number
  payloadBytes: number
}

export interface ImportResult {
  archive: ArchiveInfo
  datasets: DatasetChanges[]
  portableHash: string
  matches: boolean
}

export interface CloneResult {
  volume: VolumeEntry
  datasets: DatasetChanges[]
  portableHash: string
  clonePortableHash: string
}

/** Batches (tables), file commits and deletes in flight at once while restoring or importing. */
const WRITE_WINDOW = 8
/** Files copied at once by a clone (each streams its own chunks). */
const FILE_WINDOW = 4
/** Events per publish when a stream is copied: a publish is one round of appends, in order. */
const EVENT_BATCH = 256
const EVENT_BATCH_BYTES = 4 * 1024 * 1024
/** How long a clone waits for this node to open the volume it just created. */
const OPEN_TIMEOUT_MS = 30_000

export class Snapshots {
  /** Spool files of the imports running now; any other one was left by an earlier run. */
  private readonly spooling = new Set<string>()
  private spoolSwept = false

  constructor(private readonly o: SnapshotsOptions) {}

  // ---- lookups ----

  /** A volume this node can read now (its site holds it and the node has opened it). */
  private readable(volumePath: string): VolumeEntry {
    const v = this.volumeAt(volumePath)
    if (this.o.data.holds(v.id)) return v
    if (this.o.catalog.holds(v)) throw FabricError.unavailable(`volume ${v.path} is not open on this node yet; try again`, { details: { volume: v.path } })
    throw FabricError.failedPrecondition(
      `volume ${v.path} is not held at site ${this.o.catalog.site} (home ${v.home}${v.replicas.length ? `, replicas ${v.replicas.join(', ')}` : ''}): ask a node of one of those sites`,
      { details: { volume: v.path, site: this.o.catalog.site, home: v.home } },
    )
  }

  /** The volume at a path; a dataset's path is refused with the volume it is in. */
  private volumeAt(volumePath: string): VolumeEntry {
    try {
      return this.o.catalog.volumeAt(volumePath)
    } catch (err) {
      const inside = isFabricError(err, 'NOT_FOUND') && this.o.catalog.listDatasets('/').find((d) => contains(d.path, volumePath))
      if (!inside) throw err
      const v = this.o.catalog.volumeFor(volumePath)
      throw FabricError.invalidArgument(`${volumePath} is not a volume: it is in dataset ${inside.path} of volume ${v.path}`, { details: { path: volumePath, volume: v.path } })
    }
  }

  /** The volume's position as applied here: the current state, as one fixed cut. */
  private async now(v: VolumeEntry): Promise<number> {
    return (await this.o.data.volumeStat(v)).applied
  }

  /** The volume's datasets in path order, or the one named (which must be in the volume). */
  private datasets(v: VolumeEntry, only?: string): DatasetEntry[] {
    if (only) {
      const ds = this.o.catalog.datasetAt(only)
      if (ds.volumeId !== v.id) {
        throw FabricError.invalidArgument(`dataset ${only} is not in volume ${v.path} (it is in ${this.o.catalog.volume(ds.volumeId)?.path ?? ds.volumeId})`, { details: { dataset: only, volume: v.path } })
      }
      return [ds]
    }
    return this.o.catalog.datasetsIn(v.id).sort((a, b) => (a.path < b.path ? -1 : 1))
  }

  async get(volumePath: string, name: string, withHashes: boolean): Promise<Snapshot & { contentHash: string; portableHash: string }> {
    const v = this.volumeAt(volumePath)
    const snap = await this.o.data.snapshotFor(v.path, name)
    if (!withHashes) return { ...snap, contentHash: '', portableHash: '' }
    const [contentHash, portableHash] = await Promise.all([this.o.data.contentHash(v.path, snap.seq), this.portableHash(this.readable(v.path), snap.seq)])
    return { ...snap, contentHash, portableHash }
  }

  /** The portable hash (hash.ts) of the datasets (default: all the volume's) at a position. */
  async portableHash(v: VolumeEntry, at: number, datasets = this.datasets(v)): Promise<string> {
    const h = new PortableHash()
    for (const ds of datasets) {
      h.dataset(`/${relPath(v, ds.path)}`, ds.kind)
      if (ds.kind === 'table') {
        for await (const r of this.o.data.scan(ds.path, { atSeq: at })) h.doc(r.key, r.json)
      } else if (ds.kind === 'files') {
        for (const f of await this.o.data.listFiles(ds.path, at)) h.file(fileName(ds, f), f.size, f.sha256)
      } else {
        for await (const e of this.events(ds.path, 0, at)) h.event(e.json)
      }
    }
    return h.digest()
  }

  /** A stream's events in (after, upTo]. */
  private events(path: string, after: number, upTo: number) {
    return this.o.data.subscribe(path, { fromSeq: after + 1, toSeq: upTo })
  }

  // ---- diff ----

  /**
   * What changed between snapshot `from` and snapshot `to` (or the current state): the range,
   * then per dataset its changes (unless summaryOnly) and its counts.
   */
  async *diff(volumePath: string, from: string, to: string | undefined, o: { dataset?: string | undefined; summaryOnly?: boolean } = {}): AsyncGenerator<DiffItem> {
    const v = this.readable(volumePath)
    const a = await this.o.data.snapshotFor(v.path, from)
    const toSeq = to ? (await this.o.data.snapshotFor(v.path, to)).seq : await this.now(v)
    if (toSeq < a.seq) {
      throw FabricError.invalidArgument(`snapshot ${to} (position ${toSeq}) is older than snapshot ${from} (position ${a.seq}): name the older one first`, { details: { from, to: to ?? '' } })
    }
    const datasets = this.datasets(v, o.dataset)
    yield { type: 'range', volume: v.path, fromSnapshot: from, fromSeq: a.seq, toSnapshot: to ?? '', toSeq }
    for (const ds of datasets) {
      const d: DatasetDiff = { dataset: ds.path, kind: ds.kind, added: 0, changed: 0, removed: 0, eventsAdded: 0 }
      if (ds.kind === 'stream') {
        for await (const _ of this.events(ds.path, a.seq, toSeq)) d.eventsAdded++
      } else {
        for await (const change of ds.kind === 'table' ? this.tableChanges(ds, a.seq, toSeq) : this.fileChanges(ds, a.seq, toSeq)) {
          d[change.kind]++
          if (!o.summaryOnly) yield { type: 'change', change }
        }
      }
      yield { type: 'dataset', diff: d }
    }
  }

  private async *tableChanges(ds: DatasetEntry, from: number, to: number): AsyncGenerator<Change> {
    const key = (r: { key: string }) => r.key
    for await (const [a, b] of mergeByName(this.o.data.scan(ds.path, { atSeq: from }), this.o.data.scan(ds.path, { atSeq: to }), key, key)) {
      const kind = changeOf(a, b, (x, y) => x.json === y.json)
      if (kind) yield { dataset: ds.path, kind, name: (a ?? b)!.key, fromVersion: a?.version ?? 0, toVersion: b?.version ?? 0 }
    }
  }

  private async *fileChanges(ds: DatasetEntry, from: number, to: number): AsyncGenerator<Change> {
    const [then, now] = await Promise.all([this.o.data.listFiles(ds.path, from), this.o.data.listFiles(ds.path, to)])
    const name = (f: FileMeta) => fileName(ds, f)
    for await (const [a, b] of mergeByName(then, now, name, name)) {
      const kind = changeOf(a, b, sameContent)
      if (!kind) continue
      yield {
        dataset: ds.path,
        kind,
        name: name((a ?? b)!),
        fromVersion: a?.version ?? 0,
        toVersion: b?.version ?? 0,
        ...(a ? { fromSize: a.size, fromSha256: a.sha256 } : {}),
        ...(b ? { toSize: b.size, toSha256: b.sha256 } : {}),
      }
    }
  }

  // ---- restore ----

  /**
   * Makes the current tables and files of the volume (or of one dataset) equal to the snapshot's,
   * with new log entries: puts and deletes in batches, file commits that refer to the snapshot's
   * chunks, file deletes. Streams are append-only: their events since the snapshot stay.
   * Only what differs is written, so restoring again writes nothing.
   */
  async restore(volumePath: string, name: string, only?: string): Promise<{ snapshot: Snapshot; datasets: DatasetChanges[]; lastVersion: number }> {
    const v = this.readable(volumePath)
    const snap = await this.o.data.snapshotFor(v.path, name)
    const datasets = this.datasets(v, only)
    const at = await this.now(v)
    const out: DatasetChanges[] = []
    let lastVersion = 0
    for (const ds of datasets) {
      const c = noChanges(ds, false)
      out.push(c)
      if (ds.kind === 'table') {
        const wanted = async function* (rows: AsyncIterable<{ key: string; json: string }>) {
          for await (const r of rows) yield { key: r.key, json: r.json }
        }
        const r = await this.convergeTable(ds.path, wanted(this.o.data.scan(ds.path, { atSeq: snap.seq })), at, 'restore')
        c.keysPut = r.put
        c.keysDeleted = r.deleted
        lastVersion = Math.max(lastVersion, r.last)
      } else if (ds.kind === 'files') {
        const [then, current] = await Promise.all([this.o.data.listFiles(ds.path, snap.seq), this.o.data.listFiles(ds.path, at)])
        const nameOf = (f: FileMeta) => fileName(ds, f)
        const writes = new Window(WRITE_WINDOW)
        for await (const [want, have] of mergeByName(then, current, nameOf, nameOf)) {
          if (want && !(have && sameContent(want, have))) {
            c.filesPut++
            await writes.run(() => this.o.data.recommitFile(want.path, want))
          } else if (!want && have) {
            c.filesDeleted++
            await writes.run(() => this.deleteFile(have.path))
          }
        }
        lastVersion = Math.max(lastVersion, await writes.drain())
      } else {
        for await (const _ of this.events(ds.path, snap.seq, at)) c.eventsKept++
      }
    }
    this.o.log.info({ volume: v.path, snapshot: name, dataset: only, lastVersion }, 'restored a snapshot')
    return { snapshot: snap, datasets: out, lastVersion }
  }

  /** Deletes a file; one already gone (deleted meanwhile) is no error: the outcome is the same. */
  private async deleteFile(filePath: string): Promise<number> {
    try {
      return await this.o.data.deleteFile(filePath)
    } catch (err) {
      if (isFabricError(err, 'NOT_FOUND')) return 0
      throw err
    }
  }

  /**
   * Makes a table hold exactly `wanted` (sorted by key), compared with its state at `at`: puts of
   * the keys that differ or are missing, deletes of the others, in batches within the limits,
   * each op conditional on the version seen at `at`. A key written meanwhile fails its batch
   * (FAILED_PRECONDITION) instead of being overwritten unseen.
   */
  private async convergeTable(
    tablePath: string,
    wanted: AsyncIterable<{ key: string; json: string }>,
    at: number,
    what: string,
  ): Promise<{ put: number; deleted: number; last: number }> {
    const writes = new Window(WRITE_WINDOW)
    let ops: Array<{ key: string; json?: string; expected: number }> = []
    let bytes = 0
    let put = 0
    let deleted = 0
    const flush = async () => {
      if (ops.length === 0) return
      const batch = ops
      ops = []
      bytes = 0
      await writes.run(() => this.o.data.batch(tablePath, batch))
    }
    const key = (r: { key: string }) => r.key
    try {
      for await (const [want, have] of mergeByName(wanted, this.o.data.scan(tablePath, { atSeq: at }), key, key)) {
        if (want && have && want.json === have.json) continue
        const op = want ? { key: want.key, json: want.json, expected: have?.version ?? 0 } : { key: have!.key, expected: have!.version }
        // DataPlane.batch counts a key by its UTF-16 length; bytes are never fewer.
        const size = Buffer.byteLength(op.key) + (op.json === undefined ? 0 : Buffer.byteLength(op.json)) + 16
        if (ops.length >= MAX_BATCH_OPS || bytes + size > MAX_BATCH_BYTES) await flush()
        ops.push(op)
        bytes += size
        if (want) put++
        else deleted++
      }
      await flush()
      return { put, deleted, last: await writes.drain() }
    } catch (err) {
      await writes.settle()
      if (isFabricError(err, 'FAILED_PRECONDITION') && err.details.current !== undefined) {
        throw FabricError.failedPrecondition(`${what} of ${tablePath}: a key was written meanwhile (${err.message}); what was written so far stays: run the ${what} again`, {
          cause: err,
          details: { ...err.details, path: tablePath },
        })
      }
      throw err
    }
  }

  // ---- clone ----

  /**
   * Creates `newVolume` and fills it with the snapshot's content: each dataset at the same path
   * relative to the new volume, with its kind and description; tables by import, files by copying
   * their content (chunks this node has are not stored again), streams by publishing the events
   * up to the snapshot in order. Then names the clone's position with the snapshot's name.
   */
  async clone(volumePath: string, name: string, newVolume: string, home: string | undefined, replicas: string[]): Promise<CloneResult> {
    const v = this.readable(volumePath)
    const snap = await this.o.data.snapshotFor(v.path, name)
    const datasets = this.datasets(v)
    const portableHash = await this.portableHash(v, snap.seq, datasets)
    const nv = await this.o.catalog.createVolume(newVolume, home, replicas)
    if (this.o.catalog.holds(nv)) await this.opened(nv)
    const out: DatasetChanges[] = []
    for (const ds of datasets) {
      const target = joinPath(nv.path, relPath(v, ds.path))
      await this.o.catalog.createDataset(target, ds.kind, ds.description)
      const c = noChanges({ path: target, kind: ds.kind }, true)
      out.push(c)
      if (ds.kind === 'table') {
        const docs = async function* (rows: AsyncIterable<{ key: string; json: string }>) {
          for await (const r of rows) yield { key: r.key, json: r.json }
        }
        c.keysPut = (await this.o.data.import(target, docs(this.o.data.scan(ds.path, { atSeq: snap.seq })))).imported
      } else if (ds.kind === 'files') {
        const copies = new Window(FILE_WINDOW)
        for (const f of await this.o.data.listFiles(ds.path, snap.seq)) {
          c.filesPut++
          await copies.run(async () => (await this.o.data.putFile(`${target}/${fileName(ds, f)}`, this.o.data.readFile(f), { size: f.size, sha256: f.sha256 })).file.version)
        }
        await copies.drain()
      } else {
        c.eventsAppended = await this.publishAll(target, mapAsync(this.events(ds.path, 0, snap.seq), (e) => e.json))
      }
    }
    const marked = await this.o.data.createSnapshot(nv.path, name)
    const clonePortableHash = this.o.data.holds(nv.id) ? await this.portableHash(nv, marked.seq) : ''
    this.o.log.info({ volume: v.path, snapshot: name, clone: nv.path }, 'cloned a snapshot')
    return { volume: nv, datasets: out, portableHash, clonePortableHash }
  }

  /** Waits until this node has opened a volume it just created (it follows the catalog). */
  private async opened(v: VolumeEntry): Promise<void> {
    const deadline = Date.now() + OPEN_TIMEOUT_MS
    while (!this.o.data.holds(v.id)) {
      if (Date.now() > deadline) throw FabricError.unavailable(`volume ${v.path} was created but is not open on this node after ${OPEN_TIMEOUT_MS / 1000} s`, { details: { volume: v.path } })
      await new Promise((r) => setTimeout(r, 20))
    }
  }

  /** Publishes events in order, in batches; resolves with how many. */
  private async publishAll(streamPath: string, events: AsyncIterable<string>): Promise<number> {
    let batch: string[] = []
    let bytes = 0
    let n = 0
    for await (const json of events) {
      batch.push(json)
      bytes += json.length
      n++
      if (batch.length >= EVENT_BATCH || bytes >= EVENT_BATCH_BYTES) {
        await this.o.data.publish(streamPath, batch)
        batch = []
        bytes = 0
      }
    }
    if (batch.length) await this.o.data.publish(streamPath, batch)
    return n
  }

  // ---- export ----

  /**
   * The snapshot as an archive: first its summary, then the archive's bytes. Tables and streams
   * are read twice (once for the manifest's hashes and sizes, which go first, once for the
   * payload), files once (their size and SHA-256 are known): a files dataset of any size streams
   * through without being held. The same snapshot always gives the same bytes.
   */
  async *exportArchive(volumePath: string, name: string): AsyncGenerator<ArchiveInfo | Uint8Array> {
    const v = this.readable(volumePath)
    const snap = await this.o.data.snapshotFor(v.path, name)
    const hash = new PortableHash()
    const datasets: ManifestDataset[] = []
    const entries: Array<ManifestEntry & { source: () => AsyncIterable<Uint8Array> }> = []
    for (const ds of this.datasets(v)) {
      const rel = relPath(v, ds.path)
      hash.dataset(`/${rel}`, ds.kind)
      let count = 0
      if (ds.kind === 'files') {
        for (const f of await this.o.data.listFiles(ds.path, snap.seq)) {
          const fname = fileName(ds, f)
          hash.file(fname, f.size, f.sha256)
          entries.push({ name: fileEntry(rel, fname), dataset: rel, size: f.size, sha256: f.sha256, source: () => this.o.data.readFile(f) })
          count++
        }
      } else {
        const source =
          ds.kind === 'table'
            ? () => pieces(mapAsync(this.o.data.scan(ds.path, { atSeq: snap.seq }), (r) => tableLine(r.key, r.json)))
            : () => pieces(mapAsync(this.events(ds.path, 0, snap.seq), (e) => eventLine(e.json)))
        const digest = createHash('sha256')
        let size = 0
        // The hash pass reads rows once more for the portable hash; the lines are what is stored.
        if (ds.kind === 'table') {
          for await (const r of this.o.data.scan(ds.path, { atSeq: snap.seq })) {
            hash.doc(r.key, r.json)
            const line = Buffer.from(tableLine(r.key, r.json))
            digest.update(line)
            size += line.length
            count++
          }
        } else {
          for await (const e of this.events(ds.path, 0, snap.seq)) {
            hash.event(e.json)
            const line = Buffer.from(eventLine(e.json))
            digest.update(line)
            size += line.length
            count++
          }
        }
        entries.push({ name: ds.kind === 'table' ? tableEntry(rel) : streamEntry(rel), dataset: rel, size, sha256: digest.digest('hex'), source })
      }
      datasets.push({ path: rel, kind: ds.kind, description: ds.description, count })
    }
    const manifest: Manifest = {
      format: ARCHIVE_FORMAT,
      version: ARCHIVE_VERSION,
      volume: v.path,
      snapshot: snap.name,
      seq: snap.seq,
      created: new Date(snap.timeMs).toISOString(),
      contentHash: await this.o.data.contentHash(v.path, snap.seq),
      portableHash: hash.digest(),
      datasets,
      entries: entries.map(({ name: n, dataset, size, sha256 }) => ({ name: n, dataset, size, sha256 })),
    }
    yield infoOf(manifest)
    const manifestBytes = encodeManifest(manifest)
    // Whole seconds: what a tar header holds.
    const mtime = new Date(Math.floor(snap.timeMs / 1000) * 1000)
    yield* writeTar(mtime, async (add) => {
      await add(MANIFEST_NAME, manifestBytes.length, manifestBytes)
      for (const e of entries) await add(e.name, e.size, checked(e.source(), e))
    })
    this.o.log.info({ volume: v.path, snapshot: name, entries: entries.length }, 'exported a snapshot')
  }

  // ---- import ----

  /**
   * Imports an archive into a volume. The archive is kept in the spool directory while it is
   * read twice: first every entry is checked against the manifest (size, SHA-256), every payload
   * parsed and the manifest's portable hash recomputed, and the target datasets checked (kinds,
   * placement); a problem refuses the archive before anything is written. Then missing datasets
   * are created and each dataset made to hold exactly the archive's content, as new log entries;
   * stream events the stream holds already (a previous import) are not appended again.
   */
  async importArchive(volumePath: string, body: AsyncIterable<Uint8Array>, expectSize?: number): Promise<ImportResult> {
    const v = this.readable(volumePath)
    await mkdir(this.o.spoolDir, { recursive: true })
    const name = `import-${randomUUID()}.tar`
    const spool = path.join(this.o.spoolDir, name)
    this.spooling.add(name)
    await this.sweepSpool()
    try {
      let received = 0
      const counted = async function* () {
        for await (const piece of body) {
          received += piece.length
          yield piece
        }
      }
      await pipeline(Readable.from(counted()), createWriteStream(spool))
      if (expectSize !== undefined && received !== expectSize) {
        throw FabricError.invalidArgument(`the archive stream ended after ${received} bytes; its header announced ${expectSize}; nothing was written`, {
          details: { received: String(received), size: String(expectSize) },
        })
      }
      const plan = await this.verify(v, spool)
      return await this.commit(v, spool, plan)
    } finally {
      this.spooling.delete(name)
      await rm(spool, { force: true })
    }
  }

  /** Once per run: removes spool files an earlier run left (it was killed while importing). */
  private async sweepSpool(): Promise<void> {
    if (this.spoolSwept) return
    this.spoolSwept = true
    for (const f of await readdir(this.o.spoolDir).catch(() => [] as string[])) {
      if (f.startsWith('import-') && !this.spooling.has(f)) await rm(path.join(this.o.spoolDir, f), { force: true })
    }
  }

  /** Pass 1: checks the archive and the targets; writes nothing. */
  private async verify(v: VolumeEntry, spool: string): Promise<ImportPlan> {
    const tar = readTar(createReadStream(spool, { highWaterMark: 256 * 1024 }))
    try {
      const first = await tar.next()
      if (first.done || first.value.name !== MANIFEST_NAME) {
        throw FabricError.invalidArgument(`the archive is not a valid snapshot archive: its first entry must be ${MANIFEST_NAME}${first.done ? ' (it is empty)' : `, not ${first.value.name}`}`, {
          details: { entry: first.done ? '' : first.value.name },
        })
      }
      if (first.value.size > MAX_MANIFEST_BYTES) throw FabricError.invalidArgument(`${MANIFEST_NAME}: ${first.value.size} bytes; the limit is ${MAX_MANIFEST_BYTES}`, { details: { entry: MANIFEST_NAME } })
      const manifest = parseManifest(await readAll(first.value.body))
      const targets = manifest.datasets.map((d) => this.target(v, d))
      const hash = new PortableHash()
      const kept = new Map<string, number>()
      let i = 0
      for (const t of targets) {
        hash.dataset(`/${t.d.path}`, t.d.kind)
        for (const e of entriesOf(manifest, t.d.path, i)) {
          i++
          const got = await tar.next()
          if (got.done) throw damaged(e.name, 'is missing')
          if (got.value.name !== e.name) throw damaged(got.value.name, `is not the entry the manifest lists here (${e.name})`)
          const check = await this.checkEntry(t, e, got.value, hash)
          if (t.d.kind !== 'files' && check.count !== t.d.count) throw damaged(e.name, `holds ${check.count} lines; the manifest counts ${t.d.count}`)
          if (t.d.kind === 'stream') kept.set(t.path, check.kept)
        }
      }
      const extra = await tar.next()
      if (!extra.done) throw damaged(extra.value.name, 'is not in the manifest')
      const portable = hash.digest()
      if (portable !== manifest.portableHash) throw damaged(MANIFEST_NAME, `its portableHash ${manifest.portableHash} is not the hash of the archive's content (${portable})`)
      return { manifest, targets, kept }
    } finally {
      await tar.return(undefined)
    }
  }

  /** Where an archive's dataset goes in the target volume, and whether it may go there. */
  private target(v: VolumeEntry, d: ManifestDataset): ImportTarget {
    const target = joinPath(v.path, d.path)
    const existing = this.o.catalog.listDatasets('/').find((x) => x.path === target)
    if (existing) {
      if (existing.kind !== d.kind) {
        throw FabricError.failedPrecondition(`dataset ${target} exists as a ${existing.kind} dataset; the archive's ${d.path} is a ${d.kind} dataset; nothing was written`, {
          details: { path: target, kind: existing.kind, archiveKind: d.kind },
        })
      }
      if (existing.volumeId !== v.id) throw FabricError.failedPrecondition(`dataset ${target} is in volume ${this.o.catalog.volume(existing.volumeId)?.path}, not ${v.path}`, { details: { path: target } })
      return { d, path: target, existing }
    }
    const owner = this.o.catalog.volumeFor(target)
    if (owner.id !== v.id) throw FabricError.failedPrecondition(`dataset ${target} would be in volume ${owner.path}, not ${v.path}; nothing was written`, { details: { path: target, volume: owner.path } })
    const clash = this.o.catalog.listDatasets('/').find((x) => contains(x.path, target) || contains(target, x.path))
    if (clash) throw FabricError.failedPrecondition(`dataset ${target} would overlap dataset ${clash.path}: datasets cannot nest; nothing was written`, { details: { path: target, dataset: clash.path } })
    return { d, path: target }
  }

  /**
   * Reads one entry: its size and SHA-256, which must be the manifest's (a mismatch is reported
   * before any parse error, since it explains it), and its content, parsed and added to the hash.
   */
  private async checkEntry(t: ImportTarget, e: ManifestEntry, entry: TarEntry, hash: PortableHash): Promise<{ count: number; kept: number }> {
    const digest = createHash('sha256')
    let size = 0
    let count = 0
    let problem: FabricError | undefined
    const fail = (err: unknown, line?: number) => {
      const fe = FabricError.from(err)
      const message = fe.code === 'INTERNAL' ? (err as Error).message : fe.message
      problem ??= new FabricError(fe.code === 'FAILED_PRECONDITION' ? fe.code : 'INVALID_ARGUMENT', `entry ${e.name}${line ? ` line ${line}` : ''}: ${message}; nothing was written`, {
        details: { entry: e.name, ...(line ? { line: String(line) } : {}) },
      })
    }
    if (t.d.kind === 'files') {
      for await (const piece of entry.body) {
        digest.update(piece)
        size += piece.length
      }
      const sha = digest.digest('hex')
      if (size !== e.size || sha !== e.sha256) throw mismatch(e, size, sha)
      hash.file(fileNameOf(t.d.path, e.name), size, sha)
      return { count: 1, kept: 0 }
    }
    const splitter = new LineSplitter()
    const order = ascending((key, previous) => new Error(`key ${JSON.stringify(key)} is not after ${JSON.stringify(previous)}: rows must be in key order`))
    // A stream that exists must hold a prefix of the archive's events: those are not appended again.
    const existing = t.d.kind === 'stream' && t.existing ? this.o.data.subscribe(t.path, {})[Symbol.asyncIterator]() : undefined
    let existingDone = !existing
    let kept = 0
    const take = async (line: string) => {
      count++
      if (problem) return
      try {
        if (t.d.kind === 'table') {
          const row = parseTableLine(line)
          checkDoc(row.json, MAX_DOC_BYTES)
          order(row.key)
          hash.doc(row.key, row.json)
        } else {
          const json = parseEventLine(line)
          checkDoc(json, MAX_EVENT_BYTES)
          hash.event(json)
          if (!existingDone) {
            const have = await existing!.next()
            if (have.done) existingDone = true
            else if (have.value.json === json) kept++
            else throw FabricError.failedPrecondition(`stream ${t.path} exists and its event ${count} (position ${have.value.seq}) differs from the archive's: an import appends only to a stream that holds a prefix of the archive's events`)
          }
        }
      } catch (err) {
        fail(err, count)
      }
    }
    try {
      for await (const piece of entry.body) {
        digest.update(piece)
        size += piece.length
        if (problem) continue
        let parts: string[]
        try {
          parts = splitter.push(piece)
        } catch (err) {
          fail(new Error(`not UTF-8 text (${(err as Error).message})`))
          continue
        }
        for (const line of parts) await take(line)
      }
      if (!problem) {
        try {
          for (const line of splitter.end()) await take(line)
        } catch (err) {
          fail(new Error(`not UTF-8 text (${(err as Error).message})`))
        }
      }
      const sha = digest.digest('hex')
      if (size !== e.size || sha !== e.sha256) throw mismatch(e, size, sha)
      if (problem) throw problem
      if (!existingDone && !(await existing!.next()).done) {
        throw FabricError.failedPrecondition(`stream ${t.path} exists and holds more events than the archive (${count}); nothing was written`, { details: { path: t.path } })
      }
      return { count, kept }
    } finally {
      await existing?.return?.(undefined)
    }
  }

  /** Pass 2: creates the missing datasets and writes the content. */
  private async commit(v: VolumeEntry, spool: string, plan: ImportPlan): Promise<ImportResult> {
    const { manifest, targets, kept } = plan
    const out: DatasetChanges[] = []
    for (const t of targets) {
      const created = !t.existing
      t.existing ??= await this.o.catalog.createDataset(t.path, t.d.kind, t.d.description)
      out.push(noChanges({ path: t.path, kind: t.d.kind }, created))
    }
    const at = await this.now(v)
    const tar = readTar(createReadStream(spool, { highWaterMark: 256 * 1024 }))
    try {
      await tar.next() // the manifest, read already
      let i = 0
      for (const [n, t] of targets.entries()) {
        const c = out[n]!
        const entries = entriesOf(manifest, t.d.path, i)
        i += entries.length
        if (t.d.kind === 'table') {
          const entry = (await tar.next()).value as TarEntry
          const rows = mapAsync(nonEmpty(lines(entry.body)), parseTableLine)
          const r = await this.convergeTable(t.path, rows, at, 'import')
          c.keysPut = r.put
          c.keysDeleted = r.deleted
        } else if (t.d.kind === 'stream') {
          const entry = (await tar.next()).value as TarEntry
          c.eventsKept = kept.get(t.path) ?? 0
          let skip = c.eventsKept
          const fresh = async function* () {
            for await (const line of nonEmpty(lines(entry.body))) if (skip-- <= 0) yield parseEventLine(line)
          }
          c.eventsAppended = await this.publishAll(t.path, fresh())
        } else {
          const current = c.created ? [] : await this.o.data.listFiles(t.path, at)
          const dsEntry = t.existing!
          const nameOf = (f: FileMeta) => fileName(dsEntry, f)
          const archived = async function* () {
            for (const e of entries) yield { e, entry: (await tar.next()).value as TarEntry }
          }
          const writes = new Window(WRITE_WINDOW)
          for await (const [want, have] of mergeByName(archived(), current, (a) => fileNameOf(t.d.path, a.e.name), nameOf)) {
            if (want) {
              if (have && have.size === want.e.size && have.sha256 === want.e.sha256) continue
              // The body is read by the upload, which the tar waits for: one file at a time.
              await writes.drain()
              await this.o.data.putFile(joinPath(t.path, fileNameOf(t.d.path, want.e.name)), want.entry.body, { size: want.e.size, sha256: want.e.sha256 })
              c.filesPut++
            } else {
              c.filesDeleted++
              await writes.run(() => this.deleteFile(have!.path))
            }
          }
          await writes.drain()
        }
      }
    } finally {
      await tar.return(undefined)
    }
    const portableHash = await this.portableHash(v, await this.now(v), targets.map((t) => t.existing!))
    this.o.log.info({ volume: v.path, from: `${manifest.volume}@${manifest.snapshot}`, matches: portableHash === manifest.portableHash }, 'imported a snapshot archive')
    return { archive: infoOf(manifest), datasets: out, portableHash, matches: portableHash === manifest.portableHash }
  }
}

interface ImportTarget {
  d: ManifestDataset
  /** The dataset's path in the target volume. */
  path: string
  existing?: DatasetEntry
}

interface ImportPlan {
  manifest: Manifest
  targets: ImportTarget[]
  /** Per stream path: events it holds already (a prefix of the archive's). */
  kept: Map<string, number>
}

/**
 * Runs writes with at most `size` in flight and remembers the highest position they return. The
 * first failure stops it: run and drain throw it once every write in flight has settled.
 */
class Window {
  private readonly inflight = new Set<Promise<void>>()
  private failure: unknown
  private failed = false
  private last = 0

  constructor(private readonly size: number) {}

  async run(task: () => Promise<number>): Promise<void> {
    if (this.failed) return this.rethrow()
    const p: Promise<void> = task().then(
      (seq) => void (this.last = Math.max(this.last, seq)),
      (err: unknown) => {
        if (!this.failed) [this.failed, this.failure] = [true, err]
      },
    )
    this.inflight.add(p)
    void p.finally(() => this.inflight.delete(p))
    if (this.inflight.size >= this.size) await Promise.race(this.inflight)
    if (this.failed) return this.rethrow()
  }

  /** Waits for every write in flight; resolves with the highest position written. */
  async drain(): Promise<number> {
    await this.settle()
    if (this.failed) throw this.failure
    return this.last
  }

  async settle(): Promise<void> {
    await Promise.all([...this.inflight])
  }

  private async rethrow(): Promise<never> {
    await this.settle()
    throw this.failure
  }
}

// ---- helpers ----

/** A dataset's path inside its volume, without a leading "/". */
function relPath(v: VolumeEntry, datasetPath: string): string {
  return v.path === '/' ? datasetPath.slice(1) : datasetPath.slice(v.path.length + 1)
}

function joinPath(base: string, rel: string): string {
  return base === '/' ? `/${rel}` : `${base}/${rel}`
}

const fileName = (ds: { path: string }, f: FileMeta) => f.path.slice(ds.path.length + 1)

const sameContent = (a: { size: number; sha256: string }, b: { size: number; sha256: string }) => a.size === b.size && a.sha256 === b.sha256

function changeOf<T extends { version: number }>(a: T | undefined, b: T | undefined, same: (a: T, b: T) => boolean): ChangeKind | undefined {
  if (a && b) return a.version === b.version || same(a, b) ? undefined : 'changed'
  return a ? 'removed' : 'added'
}

function noChanges(ds: { path: string; kind: DatasetKind }, created: boolean): DatasetChanges {
  return { dataset: ds.path, kind: ds.kind, created, keysPut: 0, keysDeleted: 0, filesPut: 0, filesDeleted: 0, eventsAppended: 0, eventsKept: 0 }
}

function infoOf(m: Manifest): ArchiveInfo {
  return {
    volume: m.volume,
    snapshot: m.snapshot,
    seq: m.seq,
    createdMs: Date.parse(m.created) || 0,
    contentHash: m.contentHash,
    portableHash: m.portableHash,
    datasets: m.datasets.length,
    entries: m.entries.length,
    payloadBytes: m.entries.reduce((n, e) => n + e.size, 0),
  }
}

/** The manifest's entries of one dataset, which start at index `from`. */
function entriesOf(m: Manifest, dataset: string, from: number): ManifestEntry[] {
  const out: ManifestEntry[] = []
  for (let i = from; i < m.entries.length && m.entries[i]!.dataset === dataset; i++) out.push(m.entries[i]!)
  return out
}

async function* mapAsync<T, U>(source: AsyncIterable<T>, fn: (x: T) => U): AsyncGenerator<U> {
  for await (const x of source) yield fn(x)
}

async function* nonEmpty(source: AsyncIterable<string>): AsyncGenerator<string> {
  for await (const line of source) if (line !== '') yield line
}

async function readAll(body: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = []
  for await (const piece of body) parts.push(piece)
  return Buffer.concat(parts)
}

/** Passes a payload through, checking it against what the manifest says of it. */
async function* checked(source: AsyncIterable<Uint8Array>, e: ManifestEntry): AsyncGenerator<Uint8Array> {
  const digest = createHash('sha256')
  let size = 0
  for await (const piece of source) {
    digest.update(piece)
    size += piece.length
    if (size > e.size) break
    yield piece
  }
  const sha = digest.digest('hex')
  if (size !== e.size || sha !== e.sha256) {
    throw FabricError.internal(`export: ${e.name} read ${size} bytes with sha256 ${sha}, not the ${e.size} bytes with ${e.sha256} read a moment before`, { details: { entry: e.name } })
  }
}

/** A document or event from an archive: JSON within the size limit. */
function checkDoc(json: string, limit: number): void {
  const bytes = Buffer.byteLength(json)
  if (bytes > limit) throw FabricError.invalidArgument(`a document of ${bytes} bytes; the limit is ${limit}`)
  if (json.trim() === '') throw FabricError.invalidArgument('an empty document')
  JSON.parse(json)
}

function damaged(entry: string, what: string): FabricError {
  return FabricError.invalidArgument(`the archive is damaged or was changed: entry ${entry} ${what}; nothing was written`, { details: { entry } })
}

function mismatch(e: ManifestEntry, size: number, sha: string): FabricError {
  return FabricError.invalidArgument(
    `the archive is damaged or was changed: entry ${e.name} has ${size} bytes with sha256 ${sha}; the manifest says ${e.size} bytes with sha256 ${e.sha256}; nothing was written`,
    { details: { entry: e.name, sha256: sha, expected: e.sha256 } },
  )
}
