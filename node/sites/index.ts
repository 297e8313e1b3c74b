/**
 * Sites and their nodes as this node sees them: every node broadcasts a heartbeat (who it is,
 * which volumes it holds and how far it has applied them) to every site it is linked to, and
 * keeps the latest heartbeat of every other node. From those, replication status per volume and
 * site follows: the home's log end against each replica's applied position. Nothing here is
 * stored: a node that restarts knows the others again within one heartbeat.
 */
import { FabricError } from '../errors/index.ts'
import type { Logger } from '../log/index.ts'
import type { Bus } from '../nats/index.ts'
import { pack, unpack, type VolumeEntry } from '../replication/index.ts'

/** A node's view of one volume it holds. */
export interface HeldVolume {
  id: string
  /** Last log position applied to this node's store. */
  applied: number
  /** JetStream time of that record (ms), 0 if unknown. */
  appliedTimeMs: number
  /** This site's copy of the log: its end, its time and its bytes. */
  logLast: number
  logLastTimeMs: number
  logBytes: number
}

/** One model version on a node, as its heartbeat tells (model serving). */
export interface ServedVersion {
  version: string
  state: 'waiting' | 'loading' | 'ready' | 'failed'
  error?: string
  shadow: boolean
  requests: number
  errors: number
  differed: number
  p50Ms: number
  p99Ms: number
}

export interface ServedModel {
  name: string
  versions: ServedVersion[]
}

export interface Heartbeat {
  site: string
  node: string
  role: string
  api: string
  version: string
  startedMs: number
  sentMs: number
  volumes: HeldVolume[]
  /** Model versions the node serves or is loading (absent from nodes older than model serving). */
  models?: ServedModel[]
}

export interface NodeView extends Heartbeat {
  self: boolean
  connected: boolean
  /** When this node last heard from it (now, for itself). */
  lastSeenMs: number
}

/** Replication of one volume to one site that holds it. */
export interface ReplicaStatus {
  volumeId: string
  site: string
  home: boolean
  /** Highest position applied by a node of the site; undefined when no node of it was heard. */
  applied: number | undefined
  /** End of the home's log as last heard. */
  homeLast: number | undefined
  lagRecords: number | undefined
  lagBytes: number | undefined
  lagSeconds: number | undefined
  /** Last heartbeat from the site (ms), undefined if never heard. */
  lastContactMs: number | undefined
}

export interface SiteView {
  name: string
  self: boolean
  connected: boolean
  lastSeenMs: number | undefined
  nodes: NodeView[]
  volumes: ReplicaStatus[]
}

export interface SitesOptions {
  bus: () => Bus
  site: string
  nodeId: string
  role: () => string
  api: () => string
  version: string
  /** What this node holds, for its heartbeat. */
  held: () => Promise<HeldVolume[]>
  /** The models this node serves, for its heartbeat. */
  models?: () => ServedModel[]
  volumes: () => VolumeEntry[]
  log: Logger
  intervalMs?: number
}

const SUBJECT_PREFIX = 'fabric.hb'
/** A node not heard for this many intervals is shown as disconnected. */
const MISSED_BEATS = 3
/** Nodes not heard for this long are forgotten (their site stays known through the catalog). */
const FORGET_MS = 24 * 3600_000

export class Sites {
  private readonly nodes = new Map<string, { hb: Heartbeat; receivedMs: number }>()
  private self: Heartbeat | undefined
  private timer: NodeJS.Timeout | undefined
  private stopSub: (() => void) | undefined
  private readonly startedMs = Date.now()
  private beating: Promise<void> | undefined

  constructor(private readonly o: SitesOptions) {}

  get intervalMs(): number {
    return this.o.intervalMs ?? 2_000
  }

  start(): void {
    this.stopSub = this.o.bus().subscribe(`${SUBJECT_PREFIX}.>`, (_subject, data) => {
      try {
        const hb = unpack<Heartbeat>(data)
        if (hb.node === this.o.nodeId) return
        this.nodes.set(hb.node, { hb, receivedMs: Date.now() })
      } catch {
        this.o.log.debug('undecodable heartbeat ignored')
      }
    })
    const beat = () => {
      this.beating ??= this.beat()
        .catch((err: unknown) => this.o.log.warn({ err }, 'heartbeat failed'))
        .finally(() => (this.beating = undefined))
    }
    beat()
    this.timer = setInterval(beat, this.intervalMs)
    this.timer.unref()
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    this.stopSub?.()
    await this.beating
  }

  private async beat(): Promise<void> {
    const hb: Heartbeat = {
      site: this.o.site,
      node: this.o.nodeId,
      role: this.o.role(),
      api: this.o.api(),
      version: this.o.version,
      startedMs: this.startedMs,
      sentMs: Date.now(),
      volumes: await this.o.held(),
      models: this.o.models?.() ?? [],
    }
    this.self = hb
    this.o.bus().publish(`${SUBJECT_PREFIX}.${this.o.site}.${this.o.nodeId}`, pack(hb))
    const now = Date.now()
    for (const [id, n] of this.nodes) if (now - n.receivedMs > FORGET_MS) this.nodes.delete(id)
  }

  /** Every node heard from (and this one), by site then id. */
  listNodes(now = Date.now()): NodeView[] {
    const out: NodeView[] = []
    if (this.self) out.push({ ...this.self, self: true, connected: true, lastSeenMs: now })
    for (const { hb, receivedMs } of this.nodes.values()) {
      out.push({ ...hb, self: false, connected: now - receivedMs <= MISSED_BEATS * this.intervalMs, lastSeenMs: receivedMs })
    }
    return out.sort((a, b) => a.site.localeCompare(b.site) || a.node.localeCompare(b.node))
  }

  /** Sites known from heartbeats and from volume placement, with replication status. */
  listSites(now = Date.now()): SiteView[] {
    const nodes = this.listNodes(now)
    const volumes = this.o.volumes()
    const names = new Set<string>([this.o.site, ...nodes.map((n) => n.site)])
    for (const v of volumes) {
      if (v.home) names.add(v.home)
      for (const r of v.replicas) names.add(r)
    }
    return [...names].sort().map((name) => {
      const here = nodes.filter((n) => n.site === name)
      const lastSeen = here.length ? Math.max(...here.map((n) => n.lastSeenMs)) : undefined
      return {
        name,
        self: name === this.o.site,
        connected: name === this.o.site || here.some((n) => n.connected),
        lastSeenMs: lastSeen,
        nodes: here,
        volumes: volumes.filter((v) => v.home === name || v.replicas.includes(name)).map((v) => this.status(v, name, nodes)),
      }
    })
  }

  /** Replication status of volume v at every site that holds it. */
  replication(v: VolumeEntry, now = Date.now()): ReplicaStatus[] {
    const nodes = this.listNodes(now)
    const sites = [v.home, ...v.replicas].filter(Boolean)
    return sites.map((s) => this.status(v, s, nodes))
  }

  private status(v: VolumeEntry, site: string, nodes: NodeView[]): ReplicaStatus {
    const held = (s: string) => nodes.filter((n) => n.site === s).flatMap((n) => n.volumes.filter((h) => h.id === v.id).map((h) => ({ n, h })))
    const home = held(v.home)
    const at = held(site)
    const homeLog = home.length ? home.reduce((a, b) => (b.h.logLast > a.h.logLast ? b : a)).h : undefined
    const best = at.length ? at.reduce((a, b) => (b.h.applied > a.h.applied ? b : a)).h : undefined
    const lastContactMs = at.length ? Math.max(...at.map((x) => x.n.lastSeenMs)) : undefined
    if (!best || !homeLog) {
      return { volumeId: v.id, site, home: site === v.home, applied: best?.applied, homeLast: homeLog?.logLast, lagRecords: undefined, lagBytes: undefined, lagSeconds: undefined, lastContactMs }
    }
    const lagRecords = Math.max(0, homeLog.logLast - best.applied)
    return {
      volumeId: v.id,
      site,
      home: site === v.home,
      applied: best.applied,
      homeLast: homeLog.logLast,
      lagRecords,
      // Bytes the site's copy of the log is short of the home's (what is still to be sent).
      lagBytes: Math.max(0, homeLog.logBytes - best.logBytes),
      // How far behind in time the site's applied state is: 0 when it has everything.
      lagSeconds: lagRecords === 0 ? 0 : Math.max(0, (homeLog.logLastTimeMs - best.appliedTimeMs) / 1000),
      lastContactMs,
    }
  }

  /** One site's view; NOT_FOUND naming it when no node or volume mentions it. */
  site(name: string): SiteView {
    const s = this.listSites().find((x) => x.name === name)
    if (!s) throw FabricError.notFound(`site ${name} is not known here (no node of it has been heard, and no volume is placed there)`, { details: { site: name } })
    return s
  }
}
