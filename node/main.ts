/**
 * The composition root: builds a node's subsystems from its config, starts them in dependency
 * order (store, NATS, HTTP, API last) and stops them in reverse (API first). Nothing else wires
 * subsystems together; each takes only its own options.
 */
import { mkdir } from 'node:fs/promises'
import path from 'node:path'
import { timestampFromDate } from '@bufbuild/protobuf/wkt'
import { FileService } from '../proto/gen/fabric/v1/file_pb.ts'
import { ModelService } from '../proto/gen/fabric/v1/model_pb.ts'
import { NamespaceService } from '../proto/gen/fabric/v1/namespace_pb.ts'
import { NodeService } from '../proto/gen/fabric/v1/node_pb.ts'
import { SiteService } from '../proto/gen/fabric/v1/site_pb.ts'
import { SnapshotService } from '../proto/gen/fabric/v1/snapshot_pb.ts'
import { StreamService } from '../proto/gen/fabric/v1/stream_pb.ts'
import { TableService } from '../proto/gen/fabric/v1/table_pb.ts'
import {
  ApiServer,
  fileServiceImpl,
  modelServiceImpl,
  namespaceServiceImpl,
  nodeServiceImpl,
  siteServiceImpl,
  snapshotServiceImpl,
  streamServiceImpl,
  tableServiceImpl,
  type NodeStatusSource,
} from './api/index.ts'
import { Catalog } from './catalog/index.ts'
import { DataPlane } from './datasets/index.ts'
import { SnapshotScheduler } from './datasets/schedule.ts'
import type { Config } from './config/index.ts'
import { FabricError } from './errors/index.ts'
import { fabricVersion, resolveNodeId } from './identity/index.ts'
import { HttpServer } from './http/index.ts'
import type { Service } from './lifecycle/index.ts'
import type { Logger } from './log/index.ts'
import { Metrics, type Gauge } from './metrics/index.ts'
import { NatsService } from './nats/index.ts'
import { ModelRegistry, ModelServer } from './serving/index.ts'
import { Sites, type ReplicaStatus } from './sites/index.ts'
import { ChunkStore, diskUsage, Store } from './store/index.ts'

export interface NodeAddresses {
  api: string
  http: string
  /** Client URL of the NATS server in use, without credentials. */
  nats: string
}

export class FabricNode {
  readonly version = fabricVersion()
  readonly metrics = new Metrics()
  private readonly started: Service[] = []
  private startedAt: Date | undefined
  private startedAtMono = 0
  private id: string | undefined
  private store: Store | undefined
  private nats: NatsService | undefined
  private catalog: Catalog | undefined
  private data: DataPlane | undefined
  private chunks: ChunkStore | undefined
  private domainServices: Service[] = []
  private sites: Sites | undefined
  private http: HttpServer | undefined
  private api: ApiServer | undefined
  private starting: Promise<void> | undefined
  private stopping: Promise<void> | undefined

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
  ) {}

  get nodeId(): string {
    if (!this.id) throw new Error('node not started')
    return this.id
  }

  /** Where the node listens; valid once start() resolved. */
  get addresses(): NodeAddresses {
    if (!this.api || !this.http || !this.nats) throw new Error('node not started')
    return { api: this.api.address, http: this.http.address, nats: this.nats.url }
  }

  /** Starts every subsystem; on failure stops what did start and rethrows. Safe to call twice. */
  start(): Promise<void> {
    this.starting ??= this.doStart().catch(async (err: unknown) => {
      await this.stopStarted()
      throw err
    })
    return this.starting
  }

  /** Stops in reverse order of start. Safe to call twice, also during start. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.starting?.catch(() => undefined)
      await this.stopStarted()
      this.log.info('node stopped')
    })()
    return this.stopping
  }

  /** For a forced exit: kills the embedded nats-server synchronously. */
  killNow(): void {
    this.nats?.killNow()
  }

  private async doStart(): Promise<void> {
    const c = this.config
    await mkdir(c.node.dataDir, { recursive: true }).catch((cause: Error) => {
      throw FabricError.failedPrecondition(`node.data_dir: cannot create ${c.node.dataDir}: ${cause.message}`, { cause, details: { key: 'node.data_dir' } })
    })
    this.id = await resolveNodeId(c.node.dataDir, c.node.id)
    this.startedAt = new Date()
    this.startedAtMono = performance.now()
    const log = this.log
    log.info({ nodeId: this.id, site: c.node.site, version: this.version, dataDir: c.node.dataDir }, 'node starting')

    this.store = new Store({ dir: path.join(c.node.dataDir, 'store'), log: log.child({ subsystem: 'store' }) })
    this.nats = new NatsService(
      c.nats.url === undefined
        ? {
            mode: 'embedded',
            dir: path.join(c.node.dataDir, 'nats'),
            binary: c.nats.binary,
            serverName: this.id,
            domain: c.node.site,
            host: '127.0.0.1',
            port: c.nats.port,
            leafnodeListen: c.nats.leafnodeListen,
            leafnodeAdvertise: c.nats.leafnodeAdvertise,
            leafnodeAuth: c.nats.leafnodeUser !== undefined && c.nats.leafnodePassword !== undefined ? { user: c.nats.leafnodeUser, password: c.nats.leafnodePassword } : undefined,
            hubUrls: c.nats.hubUrls,
            cluster: c.nats.clusterListen && { name: c.nats.clusterName, listen: c.nats.clusterListen, routes: c.nats.routes },
            monitorListen: c.nats.monitorListen,
            replicas: c.nats.replicas,
            clientName: `fabric-node-${this.id}`,
            log: log.child({ subsystem: 'nats' }),
          }
        : { mode: 'external', url: c.nats.url, clientName: `fabric-node-${this.id}`, domain: c.node.site, replicas: c.nats.replicas, log: log.child({ subsystem: 'nats' }) },
    )
    const nats = this.nats
    const logs = () => nats.logs()
    const logsAt = (site: string) => nats.logsAt(site)
    const bus = () => nats.bus()
    const catalog = new Catalog({
      store: this.store,
      logs,
      bus,
      site: c.node.site,
      upstream: c.nats.hubUrls.length > 0,
      log: log.child({ subsystem: 'catalog' }),
      createVolumeLog: DataPlane.createVolumeLog(logsAt),
      deleteVolumeLog: DataPlane.deleteVolumeLog(logsAt),
    })
    const chunks = new ChunkStore({ dir: path.join(c.node.dataDir, 'chunks'), store: this.store, log: log.child({ subsystem: 'chunks' }) })
    this.chunks = chunks
    const data = new DataPlane({
      store: this.store,
      chunks,
      catalog,
      logs,
      logsAt,
      bus,
      site: c.node.site,
      writerId: this.id,
      log: log.child({ subsystem: 'data' }),
      gcIntervalMs: c.gc.intervalMs,
      unclaimedChunkGraceMs: c.gc.unclaimedChunkGraceMs,
    })
    this.catalog = catalog
    this.data = data
    // Sites and the model server each ask the other at run time (heartbeats carry what is served;
    // forwarding reads the heartbeats), never while being built.
    const sites: Sites = new Sites({
      bus,
      site: c.node.site,
      nodeId: this.id,
      role: () => nats.role,
      // The API starts last: heartbeats sent before it listens carry no address yet.
      api: () => (this.api?.listening ? this.api.address : ''),
      version: this.version,
      held: () => data.held(),
      volumes: () => catalog.listVolumes(),
      models: () => serving.report(),
      log: log.child({ subsystem: 'sites' }),
    })
    this.sites = sites
    const registry = new ModelRegistry({
      catalog,
      data,
      spoolDir: path.join(c.node.dataDir, 'spool'),
      maxBytes: c.models.maxBytes,
      validationMemoryBytes: c.models.validationMemoryBytes,
      validationTimeoutMs: c.models.validationTimeoutMs,
      log: log.child({ subsystem: 'models' }),
    })
    const serving: ModelServer = new ModelServer({
      catalog,
      data,
      bus,
      nodes: () => sites.listNodes(),
      site: c.node.site,
      nodeId: this.id,
      metrics: this.metrics,
      session: {
        ...(c.models.intraOpThreads ? { intraOpThreads: c.models.intraOpThreads } : {}),
        ...(c.models.interOpThreads ? { interOpThreads: c.models.interOpThreads } : {}),
      },
      log: log.child({ subsystem: 'models' }),
    })
    this.http = new HttpServer({
      listen: c.http.listen,
      log: log.child({ subsystem: 'http' }),
      metrics: () => this.metrics.scrape(),
      readiness: () => this.readiness(),
    })
    this.api = new ApiServer({
      listen: c.api.listen,
      log: log.child({ subsystem: 'api' }),
      observe: this.observeCalls(),
      shutdownGraceMs: Math.max(1_000, Math.floor(c.node.shutdownTimeoutMs / 2)),
    })
      .add(NodeService, nodeServiceImpl(this.statusSource()))
      .add(NamespaceService, namespaceServiceImpl(catalog, data, sites))
      .add(SiteService, siteServiceImpl(sites, catalog))
      .add(SnapshotService, snapshotServiceImpl(data, catalog, { spoolDir: path.join(c.node.dataDir, 'spool'), log: log.child({ subsystem: 'snapshots' }) }))
      .add(TableService, tableServiceImpl(data))
      .add(FileService, fileServiceImpl(data))
      .add(StreamService, streamServiceImpl(data))
      .add(ModelService, modelServiceImpl(registry, serving, catalog))
    this.registerMetrics()

    const domain = (name: string, s: { start(): Promise<void>; stop(): Promise<void> }): Service => ({ name, start: () => s.start(), stop: () => s.stop() })
    const scheduler = new SnapshotScheduler(catalog, data, c.node.site, log.child({ subsystem: 'snapshots' }))
    this.domainServices = [
      domain('catalog', catalog),
      domain('data', data),
      { name: 'sites', start: async () => sites.start(), stop: () => sites.stop() },
      { name: 'snapshot-schedules', start: async () => scheduler.start(), stop: () => scheduler.stop() },
      { name: 'models', start: async () => serving.start(), stop: () => serving.stop() },
    ]
    for (const service of [this.store, domain('chunks', chunks), this.nats, ...this.domainServices, this.http, this.api]) {
      if (this.stopping) throw FabricError.unavailable('node is stopping')
      await service.start()
      this.started.push(service)
    }
    const { leafnodeUrl, monitorUrl } = this.nats
    log.info({ nodeId: this.id, ...this.addresses, role: this.nats.role, ...(leafnodeUrl ? { leafnode: leafnodeUrl } : {}), ...(monitorUrl ? { monitor: monitorUrl } : {}) }, 'node ready')
  }

  private async stopStarted(): Promise<void> {
    while (this.started.length > 0) {
      const service = this.started.pop()!
      await service.stop().catch((err: unknown) => this.log.error({ err, service: service.name }, 'stop failed'))
      this.log.debug({ service: service.name }, 'service stopped')
    }
  }

  private readiness(): Record<string, boolean> {
    const running = (s: Service | undefined) => s !== undefined && this.started.includes(s) && !this.stopping
    return {
      store: running(this.store),
      nats: running(this.nats) && this.nats!.connected,
      data: this.domainServices.length > 0 && this.domainServices.every(running),
      api: running(this.api),
    }
  }

  private uptimeMs(): number {
    return this.startedAt ? Math.floor(performance.now() - this.startedAtMono) : 0
  }

  private statusSource(): NodeStatusSource {
    return async () => {
      const [nats, bytesUsed, storeBytes] = await Promise.all([this.nats!.status(), diskUsage(this.config.node.dataDir), this.store!.bytesUsed()])
      return {
        nodeId: this.nodeId,
        site: this.config.node.site,
        version: this.version,
        startedAt: timestampFromDate(this.startedAt!),
        uptimeMs: BigInt(this.uptimeMs()),
        ready: Object.values(this.readiness()).every(Boolean),
        nats: { ...nats, jetstreamBytes: BigInt(nats.jetstreamBytes) },
        storage: { dataDir: this.config.node.dataDir, bytesUsed: BigInt(bytesUsed), storeBytes: BigInt(storeBytes) },
      }
    }
  }

  private registerMetrics(): void {
    const m = this.metrics
    m.gauge('fabric_info', 'Constant 1, labelled with what this node is.', { labelNames: ['node_id', 'site', 'version'] }).set(
      { node_id: this.nodeId, site: this.config.node.site, version: this.version },
      1,
    )
    m.gauge('fabric_uptime_seconds', 'Seconds since this node started.', { collect: (g) => g.set(this.uptimeMs() / 1000) })
    m.gauge('fabric_ready', '1 when every subsystem is up and NATS is connected (as /readyz).', {
      collect: (g) => g.set(Object.values(this.readiness()).every(Boolean) ? 1 : 0),
    })
    m.gauge('fabric_nats_connected', '1 while the node is connected to NATS.', { collect: (g) => g.set(this.nats?.connected ? 1 : 0) })
    m.gauge('fabric_nats_server_restarts', 'Times the embedded nats-server was restarted after exiting unexpectedly.', {
      collect: (g) => g.set(this.nats?.restarts ?? 0),
    })
    m.gauge('fabric_log_regressions', 'Times a volume log was found to have lost records this node had applied (then republished from the outbox).', {
      collect: (g) => g.set(this.data?.logRegressions ?? 0),
    })
    m.gauge('fabric_store_bytes', 'Bytes the LevelDB store uses on disk.', { collect: async (g) => g.set((await this.store?.bytesUsed()) ?? 0) })
    m.gauge('fabric_chunk_pack_bytes', 'Bytes of file chunks in pack files (outside LevelDB).', { collect: async (g) => g.set((await this.chunks?.bytes().catch(() => 0)) ?? 0) })
    const replication = (pick: (r: ReplicaStatus) => number | undefined) => (g: Gauge<'volume' | 'site'>) => {
      g.reset()
      for (const site of this.sites?.listSites() ?? []) {
        for (const r of site.volumes) {
          const v = pick(r)
          if (v !== undefined) g.set({ volume: this.catalog?.volume(r.volumeId)?.path ?? r.volumeId, site: r.site }, v)
        }
      }
    }
    const labelNames = ['volume', 'site'] as const
    m.gauge('fabric_replication_applied_seq', 'Highest log position applied at a site holding the volume, as heard by this node.', { labelNames, collect: replication((r) => r.applied) })
    m.gauge('fabric_replication_lag_records', 'Records a site holding the volume is behind its home log.', { labelNames, collect: replication((r) => r.lagRecords) })
    m.gauge('fabric_replication_lag_bytes', "Bytes a site's copy of the volume log is short of the home's.", { labelNames, collect: replication((r) => r.lagBytes) })
    m.gauge('fabric_replication_lag_seconds', 'How far behind in time the applied state at a site is (0 when caught up).', { labelNames, collect: replication((r) => r.lagSeconds) })
    m.gauge('fabric_site_connected', '1 while a node of the site has been heard within three heartbeats.', {
      labelNames: ['site'] as const,
      collect: (g) => {
        g.reset()
        for (const s of this.sites?.listSites() ?? []) g.set({ site: s.name }, s.connected ? 1 : 0)
      },
    })
    m.gauge('fabric_site_last_seen_seconds', 'Seconds since a node of the site was last heard (0 for this site).', {
      labelNames: ['site'] as const,
      collect: (g) => {
        g.reset()
        const now = Date.now()
        for (const s of this.sites?.listSites(now) ?? []) if (s.lastSeenMs !== undefined) g.set({ site: s.name }, Math.max(0, (now - s.lastSeenMs) / 1000))
      },
    })
    m.gauge('fabric_data_dir_bytes', 'Bytes used on disk under the data dir.', { collect: async (g) => g.set(await diskUsage(this.config.node.dataDir)) })
  }

  private observeCalls() {
    const requests = this.metrics.counter('fabric_grpc_requests_total', 'gRPC calls served, by method and status code.', ['method', 'code'])
    const duration = this.metrics.histogram('fabric_grpc_request_duration_seconds', 'gRPC call duration in seconds, by method.', ['method'], [
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
    ])
    // The labelled children, looked up once per method and code: prom-client's lookup by a
    // label object hashes the labels on every call.
    const counters = new Map<string, { inc(): void }>()
    const timers = new Map<string, { observe(v: number): void }>()
    return (method: string, code: number, durationMs: number) => {
      const key = `${method} ${code}`
      let counter = counters.get(key)
      if (!counter) counters.set(key, (counter = requests.labels(method, String(code))))
      counter.inc()
      let timer = timers.get(method)
      if (!timer) timers.set(method, (timer = duration.labels(method)))
      timer.observe(durationMs / 1000)
    }
  }
}
