/**
 * The node's NATS: either its own supervised nats-server (embedded, the default) or an external
 * deployment ([nats] url). Only this folder knows nats.js and nats-server configs; the rest of the
 * node gets a connected client and a status.
 */
import { connect, nkeyAuthenticator, type NatsConnection } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { FabricError, messageOf } from '../errors/index.ts'
import { Lifecycle, type Service } from '../lifecycle/index.ts'
import { redactUrl, type Logger } from '../log/index.ts'
import { Bus } from './bus.ts'
import { Logs } from './logs.ts'
import type { SiteTopology } from './server-config.ts'
import { NatsSupervisor } from './supervisor.ts'

export { renderServerConfig, type EmbeddedServerOptions, type SiteTopology } from './server-config.ts'
export { findExecutable } from './which.ts'
export { Bus, NoResponders } from './bus.ts'
export { DEDUP_WINDOW_MS, Logs, MAX_RECORD_BYTES, WrongLastSequence, type AppendOptions, type LogInfo, type LogMessage } from './logs.ts'
export type { NatsConnection } from '@nats-io/transport-node'

export type NatsOptions =
  | (SiteTopology & {
      mode: 'embedded'
      /** Directory for the server's config, pid/ports files and JetStream store. */
      dir: string
      binary: string
      serverName: string
      /** JetStream domain (the site). */
      domain: string
      host: string
      port: number
      log: Logger
      /** Name the client announces to the server. */
      clientName: string
      startTimeoutMs?: number
      stopTimeoutMs?: number
      /** JetStream replicas of fabric's streams at this site (default 1). */
      replicas?: number | undefined
    })
  | {
      mode: 'external'
      url: string
      log: Logger
      clientName: string
      /** JetStream domain to address; undefined uses the server's own. */
      domain?: string | undefined
      connectTimeoutMs?: number
      /** JetStream replicas of fabric's streams at this site (default 1). */
      replicas?: number | undefined
    }

/** How this site's NATS is linked to others, from the config: hub for edges, edge of a hub, both. */
export type NatsRole = 'standalone' | 'hub' | 'edge' | 'hub+edge'

export interface NatsStatus {
  connected: boolean
  mode: 'embedded' | 'external'
  /** Without credentials. */
  url: string
  serverVersion: string
  jetstream: boolean
  domain: string
  restarts: number
  jetstreamBytes: number
  role: NatsRole
  /** The address edges dial, when this site is a hub; '' otherwise. */
  leafnodeUrl: string
}

export class NatsService implements Service {
  readonly name = 'nats'
  private readonly lifecycle = new Lifecycle(() => this.doStart(), () => this.doStop())
  private readonly supervisor: NatsSupervisor | undefined
  private nc: NatsConnection | undefined
  private isConnected = false
  private logsInstance: Logs | undefined
  /** JetStream domain in use (undefined: the server's default, no domain). */
  private jsDomain: string | undefined

  constructor(private readonly o: NatsOptions) {
    if (o.mode === 'embedded') {
      this.supervisor = new NatsSupervisor({
        dir: o.dir,
        binary: o.binary,
        serverName: o.serverName,
        domain: o.domain,
        host: o.host,
        port: o.port,
        leafnodeListen: o.leafnodeListen,
        leafnodeAdvertise: o.leafnodeAdvertise,
        leafnodeAuth: o.leafnodeAuth,
        hubUrls: o.hubUrls,
        cluster: o.cluster,
        monitorListen: o.monitorListen,
        clusterPeers: o.replicas,
        log: o.log,
        startTimeoutMs: o.startTimeoutMs,
        stopTimeoutMs: o.stopTimeoutMs,
      })
    }
  }

  start(): Promise<void> {
    return this.lifecycle.start()
  }

  stop(): Promise<void> {
    return this.lifecycle.stop()
  }

  /** The connected client. Throws UNAVAILABLE before start. */
  get connection(): NatsConnection {
    if (!this.nc) throw FabricError.unavailable('NATS is not connected yet')
    return this.nc
  }

  get connected(): boolean {
    return this.isConnected
  }

  /** fabric's logs on this connection (JetStream streams in the site's domain). */
  logs(): Logs {
    this.logsInstance ??= new Logs(this.connection, this.o.log, this.jsDomain, this.replicas)
    return this.logsInstance
  }

  private readonly remoteLogs = new Map<string, Logs>()

  /** The logs of another site (its JetStream domain), reached across the leafnode. */
  logsAt(site: string): Logs {
    if (site === this.jsDomain || (this.jsDomain === undefined && site === (this.o as { domain?: string }).domain)) return this.logs()
    let logs = this.remoteLogs.get(site)
    if (!logs) this.remoteLogs.set(site, (logs = new Logs(this.connection, this.o.log, site)))
    return logs
  }

  private busInstance: Bus | undefined

  /** Requests and broadcasts between nodes, across sites. */
  bus(): Bus {
    this.busInstance ??= new Bus(this.connection, this.o.log)
    return this.busInstance
  }

  /** Client URL of the server in use, without credentials. */
  get url(): string {
    return redactUrl(this.supervisor?.url ?? (this.o.mode === 'external' ? this.o.url : ''))
  }

  /** The address edges dial to join this hub (nats-leaf://host:port); undefined unless a hub. */
  get leafnodeUrl(): string | undefined {
    return this.supervisor?.leafnodeUrl
  }

  /** The embedded server's HTTP monitoring (http://host:port) while it runs, if configured. */
  get monitorUrl(): string | undefined {
    return this.supervisor?.monitorUrl
  }

  /** JetStream replicas of the streams fabric creates at this site. */
  get replicas(): number {
    return this.o.replicas ?? 1
  }

  /** From the config: an external NATS is 'standalone' as far as fabric knows. */
  get role(): NatsRole {
    const o = this.o
    if (o.mode !== 'embedded') return 'standalone'
    const hub = o.leafnodeListen !== undefined
    const edge = (o.hubUrls?.length ?? 0) > 0
    return hub && edge ? 'hub+edge' : hub ? 'hub' : edge ? 'edge' : 'standalone'
  }

  /** Times the embedded nats-server was restarted after exiting unexpectedly. */
  get restarts(): number {
    return this.supervisor?.restarts ?? 0
  }

  /** Pid of the embedded nats-server while it runs. */
  get serverPid(): number | undefined {
    return this.supervisor?.pid
  }

  private async doStart(): Promise<void> {
    const o = this.o
    const url = this.supervisor ? await this.supervisor.start() : (o as { url: string }).url
    const authenticator = this.supervisor ? nkeyAuthenticator(this.supervisor.seed) : undefined
    const { server, user, pass } = splitCredentials(url)
    try {
      this.nc = await connect({
        servers: server,
        name: o.clientName,
        ...(authenticator ? { authenticator } : {}),
        ...(user !== undefined ? { user, pass } : {}),
        // A node never gives up on its NATS: an embedded server is restarted by the supervisor,
        // an external one by its operators. Reads keep working from the local store meanwhile.
        maxReconnectAttempts: -1,
        reconnectTimeWait: 250,
        timeout: o.mode === 'external' ? (o.connectTimeoutMs ?? 10_000) : 10_000,
        // An Error (with its stack) per request costs about 70 us: most of a publish's client
        // time for small records. Our errors name what failed; the stack adds nothing.
        noAsyncTraces: true,
      })
    } catch (cause) {
      await this.supervisor?.stop()
      throw FabricError.unavailable(`cannot connect to NATS at ${redactUrl(url)}: ${messageOf(cause)}`, { cause, details: { url: redactUrl(url) } })
    }
    this.isConnected = true
    this.jsDomain = o.mode === 'embedded' ? o.domain : await this.externalDomain(this.nc)
    this.watchStatus(this.nc)
    o.log.info({ url: redactUrl(url), mode: o.mode, serverVersion: this.nc.info?.version }, 'connected to NATS')
  }

  /**
   * The JetStream domain of an external NATS, as the server reports it. A site is one domain; a
   * server without a domain serves JetStream without one, so the node must not ask for its site's.
   */
  private async externalDomain(nc: NatsConnection): Promise<string | undefined> {
    try {
      const info = await (await jetstreamManager(nc, { timeout: 5_000 })).getAccountInfo()
      const site = (this.o as { domain?: string }).domain
      if (info.domain && site && info.domain !== site) {
        this.o.log.warn({ site, domain: info.domain }, 'the external NATS serves JetStream under another domain than the site name; using its domain')
      }
      return info.domain || undefined
    } catch (cause) {
      throw FabricError.unavailable(`the NATS at ${this.url} has no JetStream for this account: ${messageOf(cause)}`, { cause })
    }
  }

  private watchStatus(nc: NatsConnection): void {
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === 'disconnect') {
          this.isConnected = false
          this.o.log.warn('NATS connection lost; reconnecting')
        } else if (s.type === 'reconnect') {
          this.isConnected = true
          this.o.log.info('NATS connection restored')
        }
      }
    })().catch(() => undefined)
    void nc.closed().then(() => {
      this.isConnected = false
    })
  }

  private async doStop(): Promise<void> {
    this.busInstance?.close()
    const nc = this.nc
    if (nc && !nc.isClosed()) {
      // Drain lets in-flight publishes and subscriptions finish; bounded so a dead server cannot
      // hold the shutdown.
      await Promise.race([nc.drain().catch(() => undefined), new Promise((r) => setTimeout(r, 3_000).unref())])
      if (!nc.isClosed()) await nc.close().catch(() => undefined)
    }
    this.isConnected = false
    await this.supervisor?.stop()
  }

  /** Kills the embedded server synchronously; for a forced exit only. */
  killNow(): void {
    this.supervisor?.killNow()
  }

  /** A live view: asks the server for JetStream account info (bounded by timeoutMs). */
  async status(timeoutMs = 1_000): Promise<NatsStatus> {
    const o = this.o
    const nc = this.nc
    const base: NatsStatus = {
      connected: this.isConnected,
      mode: o.mode,
      url: this.url,
      serverVersion: nc?.info?.version ?? '',
      jetstream: false,
      domain: '',
      restarts: this.restarts,
      jetstreamBytes: 0,
      role: this.role,
      leafnodeUrl: this.leafnodeUrl ?? '',
    }
    if (!nc || !this.isConnected) return base
    try {
      const domain = this.jsDomain
      const jsm = await jetstreamManager(nc, { timeout: timeoutMs, checkAPI: false, ...(domain ? { domain } : {}) })
      const info = await jsm.getAccountInfo()
      return { ...base, jetstream: true, domain: info.domain ?? domain ?? '', jetstreamBytes: info.storage }
    } catch (err) {
      this.o.log.debug({ err: messageOf(err) }, 'JetStream account info unavailable')
      return base
    }
  }
}

/** nats.js takes credentials as options, not in the URL: "nats://u:p@h:4222" -> server, user, pass. */
function splitCredentials(url: string): { server: string; user?: string; pass?: string } {
  try {
    const u = new URL(url)
    if (!u.username) return { server: url }
    return { server: redactUrl(url), user: decodeURIComponent(u.username), pass: decodeURIComponent(u.password) }
  } catch {
    return { server: url }
  }
}
