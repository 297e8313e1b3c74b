/**
 * The catalog: volumes and datasets. It is itself a log (FABRIC_CATALOG) applied to the store on
 * every node, so every node resolves names locally, also while offline. Changes are appended with
 * optimistic concurrency (expected last position): a change is validated against the catalog as
 * applied, and refused by JetStream if another change got in first, then validated again.
 */
import { randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { FabricError } from '../errors/index.ts'
import type { Logger } from '../log/index.ts'
import { NoResponders, WrongLastSequence, type Bus, type Logs } from '../nats/index.ts'
import { Follower } from '../replication/index.ts'
import {
  CATALOG_STREAM,
  CATALOG_SUBJECT,
  decodeCatalogRecord,
  encodeRecord,
  pack,
  unpack,
  type CatalogRecord,
  type DatasetEntry,
  type DeploymentEntry,
  type ModelEntry,
  type DatasetKind,
  type SnapshotSchedule,
  type VolumeEntry,
} from '../replication/index.ts'
import { keys, type BatchOp, type Store } from '../store/index.ts'
import cron from 'node-cron'
import { NAME_PATTERN } from '../config/index.ts'
import { contains, nearest, parseDatasetPath, parsePath } from './paths.ts'

export * from './paths.ts'
export type { DatasetEntry, DatasetKind, DeploymentEntry, ModelEntry, SnapshotSchedule, VolumeEntry } from '../replication/index.ts'

/** The most scheduled snapshots a volume may keep. */
export const MAX_KEPT_SNAPSHOTS = 10_000

export const ROOT_VOLUME_ID = 'root'

export interface CatalogOptions {
  store: Store
  /** This site's logs. */
  logs: () => Logs
  bus: () => Bus
  site: string
  /**
   * This site is a leafnode of a hub ([nats] hub_urls): the catalog's home is the hub's (learnt
   * from it once, then kept), and this site holds a mirror of it. Otherwise the catalog's home is
   * this site.
   */
  upstream: boolean
  log: Logger
  /** Volume logs are created at their home site by whoever creates the volume: the catalog calls this first. */
  createVolumeLog: (volumeId: string, home: string) => Promise<void>
  deleteVolumeLog: (volumeId: string, home: string) => Promise<void>
}

export interface CatalogEvents {
  'volume-added': [VolumeEntry]
  'volume-removed': [VolumeEntry]
  /** Its replica sites changed (or, for the root volume, its home became known). */
  'volume-changed': [VolumeEntry]
  /** A model's deployment was set or changed (undefined: removed). */
  'deployment-changed': [string, DeploymentEntry | undefined]
}

/** Asked by an edge to learn where the catalog lives; answered by every node that knows. */
const HOME_SUBJECT = 'fabric.catalog.home'
/** How often an edge that has not reached its hub yet asks again. */
const HOME_RETRY_MS = 2_000

const newId = (prefix: string) => `${prefix}${randomBytes(6).toString('hex')}`

export class Catalog extends EventEmitter<CatalogEvents> {
  private readonly volumes = new Map<string, VolumeEntry>()
  private readonly datasets = new Map<string, DatasetEntry>()
  /** Model versions by "name@version". */
  private readonly models = new Map<string, ModelEntry>()
  private readonly deployments = new Map<string, DeploymentEntry>()
  /** Datasets by path, rebuilt on the first lookup after a change (lookups are per call). */
  private byPath: Map<string, DatasetEntry> | undefined
  private follower: Follower | undefined
  /** The site whose log is the catalog; undefined until an edge has reached its hub once. */
  private homeSite: string | undefined
  private readonly stopping = new AbortController()
  private opening: Promise<void> | undefined
  private stopServing: (() => void) | undefined

  constructor(private readonly o: CatalogOptions) {
    super()
    this.volumes.set(ROOT_VOLUME_ID, rootVolume(o.upstream ? '' : o.site))
  }

  get site(): string {
    return this.o.site
  }

  /** The root volume "/": homed where the catalog is, held at every site. */
  get root(): VolumeEntry {
    return this.volumes.get(ROOT_VOLUME_ID)!
  }

  /** The site whose log is the catalog (where names are changed), if known yet. */
  get home(): string | undefined {
    return this.homeSite
  }

  /** Whether this site holds (applies) the volume: its home, a replica, or the root volume. */
  holds(v: VolumeEntry, site = this.o.site): boolean {
    return v.id === ROOT_VOLUME_ID ? v.home !== '' : v.home === site || v.replicas.includes(site)
  }

  async start(): Promise<void> {
    for await (const [, v] of this.o.store.entries({ gte: keys.catalogVolumePrefix, lt: keys.prefixEnd(keys.catalogVolumePrefix) })) {
      const vol = unpack<VolumeEntry>(v)
      this.volumes.set(vol.id, vol)
    }
    for await (const [, v] of this.o.store.entries({ gte: keys.catalogDatasetPrefix, lt: keys.prefixEnd(keys.catalogDatasetPrefix) })) {
      const ds = unpack<DatasetEntry>(v)
      this.datasets.set(ds.id, ds)
    }
    for await (const [, v] of this.o.store.entries({ gte: keys.catalogModelPrefix, lt: keys.prefixEnd(keys.catalogModelPrefix) })) {
      const m = unpack<ModelEntry>(v)
      this.models.set(`${m.name}@${m.version}`, m)
    }
    for await (const [, v] of this.o.store.entries({ gte: keys.catalogDeploymentPrefix, lt: keys.prefixEnd(keys.catalogDeploymentPrefix) })) {
      const d = unpack<DeploymentEntry>(v)
      this.deployments.set(d.model, d)
    }
    const home = await this.resolveHome()
    if (home) {
      await this.open(home)
    } else {
      // An edge that has never reached its hub serves what it can (nothing named yet) and keeps
      // asking in the background.
      this.o.log.warn('the hub has not been reached yet: names resolve once it has (retrying)')
      this.opening = this.openWhenHomeKnown()
    }
  }

  /** The catalog's home: this site, or the hub's as learnt earlier or asked now. */
  private async resolveHome(): Promise<string | undefined> {
    if (!this.o.upstream) return this.o.site
    const stored = await this.o.store.get(keys.catalogHome)
    if (stored) return new TextDecoder().decode(stored)
    try {
      const home = new TextDecoder().decode(await this.o.bus().request(HOME_SUBJECT, new Uint8Array(0), 3_000))
      if (!home) return undefined
      await this.o.store.batch([{ type: 'put', key: keys.catalogHome, value: new TextEncoder().encode(home) }], { sync: true })
      this.o.log.info({ home }, 'learnt the catalog home from the hub')
      return home
    } catch (err) {
      if (!(err instanceof NoResponders) && !(err instanceof FabricError)) throw err
      return undefined
    }
  }

  private async openWhenHomeKnown(): Promise<void> {
    while (!this.stopping.signal.aborted) {
      await new Promise((r) => setTimeout(r, HOME_RETRY_MS).unref())
      if (this.stopping.signal.aborted) return
      try {
        const home = await this.resolveHome()
        if (home) return await this.open(home)
      } catch (err) {
        this.o.log.warn({ err }, 'cannot open the catalog yet; retrying')
      }
    }
  }

  /** Opens the catalog log (the home log, or this site's mirror of it) and catches up. */
  private async open(home: string): Promise<void> {
    this.homeSite = home
    if (home === this.o.site) {
      await this.o.logs().ensure(CATALOG_STREAM, CATALOG_SUBJECT)
      await this.o.createVolumeLog(ROOT_VOLUME_ID, home)
    } else {
      await this.o.logs().ensureMirror(CATALOG_STREAM, home)
    }
    this.stopServing = this.o.bus().serve(HOME_SUBJECT, undefined, async () => new TextEncoder().encode(home))
    this.follower = new Follower({
      name: 'catalog',
      logs: this.o.logs(),
      stream: CATALOG_STREAM,
      store: this.o.store,
      appliedKey: keys.catalogApplied,
      apply: async (batch) => {
        const ops: BatchOp[] = []
        const changes: Array<() => void> = []
        for (const m of batch) this.applyRecord(decodeCatalogRecord(m.data), ops, changes)
        return { ops, after: () => changes.forEach((c) => c()) }
      },
      log: this.o.log,
    })
    await this.follower.start()
    // Catch up before serving, so names resolve as of the latest catalog this site has.
    const info = await this.o.logs().info(CATALOG_STREAM)
    await this.follower.waitApplied(info.lastSeq)
    const root = rootVolume(home)
    this.volumes.set(ROOT_VOLUME_ID, root)
    this.emit('volume-changed', root)
  }

  async stop(): Promise<void> {
    this.stopping.abort()
    this.stopServing?.()
    await this.follower?.stop()
  }

  // ---- queries (local, from the applied catalog) ----

  listVolumes(): VolumeEntry[] {
    return [...this.volumes.values()].sort((a, b) => a.path.localeCompare(b.path))
  }

  volume(id: string): VolumeEntry | undefined {
    return this.volumes.get(id)
  }

  volumeAt(path: string): VolumeEntry {
    parsePath(path, 'volume path')
    const vol = [...this.volumes.values()].find((v) => v.path === path)
    if (!vol) throw FabricError.notFound(`volume ${path} does not exist`, { details: { path } })
    return vol
  }

  /** The volume a path belongs to: its nearest enclosing volume. */
  volumeFor(path: string): VolumeEntry {
    return nearest(path, this.volumes.values()) ?? this.root
  }

  listDatasets(prefix = '/'): DatasetEntry[] {
    if (prefix !== '/' && prefix !== '') parsePath(prefix, 'prefix')
    return [...this.datasets.values()].filter((d) => prefix === '' || contains(prefix, d.path)).sort((a, b) => a.path.localeCompare(b.path))
  }

  datasetsIn(volumeId: string): DatasetEntry[] {
    return [...this.datasets.values()].filter((d) => d.volumeId === volumeId)
  }

  dataset(id: string): DatasetEntry | undefined {
    return this.datasets.get(id)
  }

  /** The dataset at path, which must be of kind (when given). */
  datasetAt(path: string, kind?: DatasetKind): DatasetEntry {
    this.byPath ??= new Map([...this.datasets.values()].map((d) => [d.path, d]))
    // A path found is valid (only valid paths are stored); only a miss is checked, to say why.
    const ds = this.byPath.get(path)
    if (!ds) {
      parseDatasetPath(path)
      throw FabricError.notFound(`dataset ${path} does not exist`, { details: { path } })
    }
    if (kind && ds.kind !== kind) {
      throw FabricError.failedPrecondition(`dataset ${path} is a ${ds.kind} dataset, not a ${kind} dataset`, { details: { path, kind: ds.kind } })
    }
    return ds
  }

  /** The files dataset that holds a file path, and the file's name inside it. */
  fileAt(path: string): { ds: DatasetEntry; name: string } {
    if (typeof path !== 'string' || !path.startsWith('/')) throw FabricError.invalidArgument(`file path ${JSON.stringify(path)}: must be absolute`, { details: { path } })
    const ds = nearest(path, this.datasets.values())
    if (!ds) throw FabricError.notFound(`no dataset holds ${path}`, { details: { path } })
    if (ds.kind !== 'files') throw FabricError.failedPrecondition(`dataset ${ds.path} is a ${ds.kind} dataset, not a files dataset`, { details: { path: ds.path, kind: ds.kind } })
    return { ds, name: path === ds.path ? '' : path.slice(ds.path.length + 1) }
  }

  /** Every version of every model (of a tenant, with "tenant/" as prefix), by name then version. */
  listModels(prefix = ''): ModelEntry[] {
    return [...this.models.values()].filter((m) => m.name.startsWith(prefix)).sort((a, b) => a.name.localeCompare(b.name) || compareVersions(a.version, b.version))
  }

  /** A model's versions, oldest first. */
  modelVersions(name: string): ModelEntry[] {
    return [...this.models.values()].filter((m) => m.name === name).sort((a, b) => compareVersions(a.version, b.version))
  }

  model(name: string, version: string): ModelEntry | undefined {
    return this.models.get(`${name}@${version}`)
  }

  deployment(model: string): DeploymentEntry | undefined {
    return this.deployments.get(model)
  }

  listDeployments(): DeploymentEntry[] {
    return [...this.deployments.values()]
  }

  // ---- changes (through the catalog log) ----

  async createVolume(path: string, home: string | undefined, replicas: string[]): Promise<VolumeEntry> {
    const homeSite = home || this.o.site
    checkSiteName(homeSite, 'home')
    for (const r of replicas) checkSiteName(r, 'replica')
    const vol: VolumeEntry = { id: newId('v'), path, home: homeSite, replicas: [...new Set(replicas)].filter((r) => r !== homeSite), createdMs: Date.now() }
    parsePath(path, 'volume path')
    let logCreated = false
    await this.change(async () => {
      if ([...this.volumes.values()].some((v) => v.path === path)) throw FabricError.alreadyExists(`volume ${path} exists already`, { details: { path } })
      const inside = [...this.datasets.values()].find((d) => contains(path, d.path) || contains(d.path, path))
      if (inside) {
        throw FabricError.failedPrecondition(
          contains(inside.path, path) && inside.path !== path
            ? `cannot create volume ${path} inside dataset ${inside.path}`
            : `cannot create volume ${path}: dataset ${inside.path} would move out of volume ${this.volumeFor(inside.path).path}`,
          { details: { path, dataset: inside.path } },
        )
      }
      if (!logCreated) {
        // The log lives at the volume's home: created there (across the leafnode if need be)
        // before the volume is named, so that no write can find it missing.
        await this.o.createVolumeLog(vol.id, vol.home).catch((err: unknown) => {
          throw unreachable(err, vol.home, this.o.site, `cannot create volume ${path}: its home site ${vol.home}`)
        })
        logCreated = true
      }
      return { op: 'vol+', vol }
    })
    return this.volumes.get(vol.id)!
  }

  /** Sets the sites that hold a copy of the volume besides its home; new ones catch up from the start. */
  async setReplicas(path: string, replicas: string[]): Promise<VolumeEntry> {
    for (const r of replicas) checkSiteName(r, 'replica')
    let id = ''
    await this.change(async () => {
      const vol = this.volumeAt(path)
      if (vol.id === ROOT_VOLUME_ID) throw FabricError.failedPrecondition('the root volume "/" is held at every site; its replicas cannot be set', { details: { path } })
      id = vol.id
      return { op: 'vol~', id: vol.id, replicas: [...new Set(replicas)].filter((r) => r !== vol.home).sort() }
    })
    return this.volumes.get(id)!
  }

  /**
   * Sets (or with null, removes) the volume's snapshot schedule. It travels with the catalog;
   * the nodes of the volume's home site take the snapshots.
   */
  async setSchedule(path: string, schedule: SnapshotSchedule | null): Promise<VolumeEntry> {
    if (schedule) {
      if (!cron.validate(schedule.cron)) throw FabricError.invalidArgument(`cron expression ${JSON.stringify(schedule.cron)} is not valid (5 or 6 fields, e.g. "0 * * * *" for hourly)`, { details: { cron: schedule.cron } })
      if (!Number.isInteger(schedule.keep) || schedule.keep < 1 || schedule.keep > MAX_KEPT_SNAPSHOTS) {
        throw FabricError.invalidArgument(`keep must be a whole number from 1 to ${MAX_KEPT_SNAPSHOTS}, got ${schedule.keep}`, { details: { keep: String(schedule.keep), limit: String(MAX_KEPT_SNAPSHOTS) } })
      }
    }
    let id = ''
    await this.change(async () => {
      const vol = this.volumeAt(path)
      id = vol.id
      return { op: 'sched', id: vol.id, schedule: schedule ? { cron: schedule.cron, keep: schedule.keep } : null }
    })
    return this.volumes.get(id)!
  }

  async deleteVolume(path: string, force: boolean): Promise<{ datasets: number }> {
    let vol: VolumeEntry | undefined
    let count = 0
    await this.change(async () => {
      vol = this.volumeAt(path)
      if (vol.id === ROOT_VOLUME_ID) throw FabricError.failedPrecondition('the root volume "/" cannot be removed', { details: { path } })
      const held = this.datasetsIn(vol.id)
      if (held.length > 0 && !force) {
        throw FabricError.failedPrecondition(`volume ${path} is not empty: it holds ${held.length} dataset(s), e.g. ${held[0]!.path}; remove them or use force`, {
          details: { path, datasets: String(held.length) },
        })
      }
      count = held.length
      return { op: 'vol-', id: vol.id }
    })
    await this.o.deleteVolumeLog(vol!.id, vol!.home).catch((err: unknown) => this.o.log.warn({ err, volume: vol!.path }, 'could not delete the volume log'))
    return { datasets: count }
  }

  async createDataset(path: string, kind: DatasetKind, description: string): Promise<DatasetEntry> {
    parseDatasetPath(path)
    const id = newId('d')
    await this.change(async () => {
      if ([...this.datasets.values()].some((d) => d.path === path)) throw FabricError.alreadyExists(`dataset ${path} exists already`, { details: { path } })
      if ([...this.volumes.values()].some((v) => v.path === path)) throw FabricError.failedPrecondition(`${path} is a volume; a dataset goes inside it`, { details: { path } })
      const clash = [...this.datasets.values()].find((d) => contains(d.path, path) || contains(path, d.path))
      if (clash) throw FabricError.failedPrecondition(`dataset ${path} would overlap dataset ${clash.path}: datasets cannot nest`, { details: { path, dataset: clash.path } })
      return { op: 'ds+', ds: { id, path, kind, volumeId: this.volumeFor(path).id, description, createdMs: Date.now() } }
    })
    return this.datasets.get(id)!
  }

  async deleteDataset(path: string): Promise<void> {
    await this.change(async () => ({ op: 'ds-', id: this.datasetAt(path).id }))
  }

  /**
   * Records a published model version. `build` runs against the applied catalog (and again if
   * another change got in first): it may refuse, e.g. a version that exists already.
   */
  async addModel(build: () => ModelEntry): Promise<ModelEntry> {
    let key = ''
    await this.change(async () => {
      const m = build()
      key = `${m.name}@${m.version}`
      if (this.models.has(key)) throw FabricError.alreadyExists(`model ${m.name} version ${m.version} exists already (versions are immutable)`, { details: { model: m.name, version: m.version } })
      return { op: 'model+', m }
    })
    return this.models.get(key)!
  }

  /** Removes a model version; refused while a deployment uses it. */
  async removeModel(name: string, version: string): Promise<ModelEntry> {
    let removed: ModelEntry | undefined
    await this.change(async () => {
      removed = this.models.get(`${name}@${version}`)
      if (!removed) throw FabricError.notFound(`model ${name} has no version ${version}`, { details: { model: name, version } })
      const d = this.deployments.get(name)
      if (d && (d.traffic.some((x) => x.version === version) || d.shadow === version)) {
        throw FabricError.failedPrecondition(`model ${name} version ${version} is deployed (${d.shadow === version ? 'as the shadow' : 'taking traffic'}); deploy other versions or undeploy it first`, {
          details: { model: name, version },
        })
      }
      return { op: 'model-', name, version }
    })
    return removed!
  }

  /** Sets a model's deployment; `build` validates against the applied catalog. */
  async setDeployment(build: () => DeploymentEntry): Promise<DeploymentEntry> {
    let model = ''
    await this.change(async () => {
      const d = build()
      model = d.model
      return { op: 'dep', d }
    })
    return this.deployments.get(model)!
  }

  async removeDeployment(model: string): Promise<void> {
    await this.change(async () => {
      if (!this.deployments.has(model)) throw FabricError.notFound(`model ${model} is not deployed`, { details: { model } })
      return { op: 'dep-', model }
    })
  }

  /** Appends a change validated against the applied catalog; retries when another got in first. */
  private async change(build: () => Promise<CatalogRecord>): Promise<number> {
    const follower = this.follower
    if (!follower) throw FabricError.unavailable(this.o.upstream && !this.homeSite ? 'this site has not reached its hub yet: names cannot be changed until it has' : 'the catalog is not started')
    for (let attempt = 0; attempt < 20; attempt++) {
      const expected = follower.applied
      const record = await build()
      try {
        const seq = await this.o.logs()
          .append(CATALOG_SUBJECT, encodeRecord(record), { expectLastSeq: expected })
          .catch((err: unknown) => {
            throw err instanceof WrongLastSequence ? err : unreachable(err, this.homeSite!, this.o.site, 'names are changed at the catalog home site ' + this.homeSite)
          })
        await follower.waitApplied(seq)
        return seq
      } catch (err) {
        if (!(err instanceof WrongLastSequence)) throw err
        const info = await this.o.logs().info(CATALOG_STREAM)
        await follower.waitApplied(info.lastSeq)
      }
    }
    throw FabricError.unavailable('the catalog is busy: too many concurrent changes; try again')
  }

  /**
   * Applies one record to the in-memory catalog at once (later records of the same batch see it)
   * and to the store ops of the batch; events wait until the batch is committed.
   */
  private applyRecord(r: CatalogRecord, ops: BatchOp[], changes: Array<() => void>): void {
    switch (r.op) {
      case 'vol+':
        ops.push({ type: 'put', key: keys.catalogVolume(r.vol.id), value: pack(r.vol) })
        this.volumes.set(r.vol.id, r.vol)
        changes.push(() => this.emit('volume-added', r.vol))
        return
      case 'vol-': {
        const vol = this.volumes.get(r.id)
        ops.push({ type: 'del', key: keys.catalogVolume(r.id) })
        for (const ds of this.datasetsIn(r.id)) {
          ops.push({ type: 'del', key: keys.catalogDataset(ds.id) })
          this.datasets.delete(ds.id)
        }
        this.byPath = undefined
        this.volumes.delete(r.id)
        if (vol) changes.push(() => this.emit('volume-removed', vol))
        return
      }
      case 'vol~': {
        const vol = this.volumes.get(r.id)
        if (!vol) return
        const changed: VolumeEntry = { ...vol, replicas: r.replicas }
        ops.push({ type: 'put', key: keys.catalogVolume(r.id), value: pack(changed) })
        this.volumes.set(r.id, changed)
        changes.push(() => this.emit('volume-changed', changed))
        return
      }
      case 'sched': {
        const vol = this.volumes.get(r.id)
        if (!vol) return
        const { schedule: _old, ...rest } = vol
        const changed: VolumeEntry = r.schedule ? { ...rest, schedule: r.schedule } : rest
        ops.push({ type: 'put', key: keys.catalogVolume(r.id), value: pack(changed) })
        this.volumes.set(r.id, changed)
        changes.push(() => this.emit('volume-changed', changed))
        return
      }
      case 'ds+':
        ops.push({ type: 'put', key: keys.catalogDataset(r.ds.id), value: pack(r.ds) })
        this.datasets.set(r.ds.id, r.ds)
        this.byPath = undefined
        return
      case 'ds-':
        ops.push({ type: 'del', key: keys.catalogDataset(r.id) })
        this.datasets.delete(r.id)
        this.byPath = undefined
        return
      case 'model+':
        ops.push({ type: 'put', key: keys.catalogModel(r.m.name, r.m.version), value: pack(r.m) })
        this.models.set(`${r.m.name}@${r.m.version}`, r.m)
        return
      case 'model-':
        ops.push({ type: 'del', key: keys.catalogModel(r.name, r.version) })
        this.models.delete(`${r.name}@${r.version}`)
        return
      case 'dep':
        ops.push({ type: 'put', key: keys.catalogDeployment(r.d.model), value: pack(r.d) })
        this.deployments.set(r.d.model, r.d)
        changes.push(() => this.emit('deployment-changed', r.d.model, r.d))
        return
      case 'dep-':
        ops.push({ type: 'del', key: keys.catalogDeployment(r.model) })
        this.deployments.delete(r.model)
        changes.push(() => this.emit('deployment-changed', r.model, undefined))
        return
      default:
        this.o.log.warn({ op: (r as { op: string }).op }, 'unknown catalog record ignored (written by a newer node?)')
    }
  }
}

/** Versions in a natural order: whole numbers numerically ("2" before "10"), then the rest by text. */
export function compareVersions(a: string, b: string): number {
  const na = /^\d+$/.test(a) ? Number(a) : undefined
  const nb = /^\d+$/.test(b) ? Number(b) : undefined
  if (na !== undefined && nb !== undefined) return na - nb
  if (na !== undefined) return -1
  if (nb !== undefined) return 1
  return a.localeCompare(b, 'en', { numeric: true })
}

function rootVolume(home: string): VolumeEntry {
  return Object.freeze({ id: ROOT_VOLUME_ID, path: '/', home, replicas: [], createdMs: 0 })
}

function checkSiteName(name: string, what: string): void {
  if (!NAME_PATTERN.test(name)) throw FabricError.invalidArgument(`${what} site ${JSON.stringify(name)}: expected lowercase letters, digits and "-", starting with a letter or digit`, { details: { site: name } })
}

/** An error from reaching another site, said as such: UNAVAILABLE naming the site. */
function unreachable(err: unknown, site: string, here: string, what: string): FabricError {
  const fe = FabricError.from(err)
  if (site === here || fe.code !== 'UNAVAILABLE') return fe
  return FabricError.unavailable(`${what} is unreachable from site ${here}: ${fe.message}`, { cause: err, details: { site } })
}
