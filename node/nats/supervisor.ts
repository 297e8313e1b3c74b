/**
 * Runs the node's own nats-server as a child process: writes its config, starts it, waits until it
 * listens, restarts it when it dies, and stops it with the node.
 *
 * The child must never outlive the node, also when the node is killed with SIGKILL. The server is
 * started through a tiny shell watchdog that holds the read end of a pipe whose write end only the
 * node holds: when the node dies for any reason the pipe closes and the watchdog stops the server.
 * The shell `exec`s nats-server, so the pid we hold is the server's own. The child runs in its own
 * process group so that a Ctrl-C on the terminal reaches only the node, which then stops NATS in
 * order (drain first, server last) instead of racing it.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { EventEmitter } from 'node:events'
import { chmod, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { nkeys } from '@nats-io/transport-node'
import { formatHostPort, isLoopback, type HostPort } from '../config/index.ts'
import { FabricError } from '../errors/index.ts'
import type { Logger } from '../log/index.ts'
import { renderServerConfig, type SiteTopology } from './server-config.ts'
import { findExecutable } from './which.ts'

export interface SupervisorOptions extends SiteTopology {
  /** Where the server's config, ports file and JetStream store live (created if missing). */
  dir: string
  binary: string
  serverName: string
  domain: string
  host: string
  port: number
  /**
   * A clustered server's first start waits until the site's JetStream has a leader and this many
   * servers (the replicas of fabric's streams), so that the node's first streams can be placed.
   */
  clusterPeers?: number | undefined
  /** How long that wait may take before the start fails (default 60 s). */
  clusterWaitMs?: number | undefined
  log: Logger
  /** How long to wait for the server to listen after a spawn. */
  startTimeoutMs?: number
  /** How long a stop waits after SIGTERM before SIGKILL. */
  stopTimeoutMs?: number
}

/** Runs nats-server with the watchdog described above. $1 is the config path, the rest the command. */
const WATCHDOG = `
conf=$1; shift; pid=$$
exec 3<&0
(
  trap '' INT TERM
  while read -r _ <&3; do :; done
  if grep -qF -- "$conf" /proc/$pid/cmdline 2>/dev/null; then
    kill -TERM $pid 2>/dev/null
    i=0; while [ $i -lt 100 ] && kill -0 $pid 2>/dev/null; do sleep 0.1; i=$((i+1)); done
    kill -KILL $pid 2>/dev/null
  fi
) </dev/null >/dev/null 2>&1 &
exec "$@" <&- 3<&-
`

const MAX_STDERR_LINES = 30
/** The same server error or warning is forwarded at most once in this window (then as debug). */
const REPEAT_WINDOW_MS = 60_000
/** Distinct messages remembered for that, at most (a bound on memory, not a feature). */
const MAX_FORWARD_KEYS = 1_000
const CLUSTER_WAIT_MS = 60_000
/** How often a node waiting for its site's cluster says so. */
const CLUSTER_WAIT_LOG_MS = 10_000
const BACKOFF_MIN_MS = 200
const BACKOFF_MAX_MS = 5_000
/** A server that stayed up this long is considered healthy again: the backoff starts over. */
const STABLE_AFTER_MS = 30_000

export interface SupervisorEvents {
  /** The server listens for clients at url (after every start and restart). */
  ready: [url: string]
  /** The server exited when it was not asked to. */
  crash: [info: { code: number | null; signal: NodeJS.Signals | null }]
}

export class NatsSupervisor extends EventEmitter<SupervisorEvents> {
  /**
   * The node's NATS identity, fresh for every node process: the server's config holds only the
   * public key, the seed stays in this process's memory, so no secret is ever written to disk.
   */
  private readonly identity = nkeys.createUser()
  private child: ChildProcess | undefined
  private stopping = false
  private port: number
  private restartCount = 0
  private backoffMs = BACKOFF_MIN_MS
  private stderrTail: string[] = []
  private restartTimer: NodeJS.Timeout | undefined
  /** Restarts are for a server that ran; one that fails its first start fails the node's start. */
  private everReady = false
  private currentUrl: string | undefined
  /** Listener ports the server picked (from port 0), kept for restarts. */
  private leafnodePort: number | undefined
  private clusterPort: number | undefined
  private monitorPort: number | undefined
  /** The leafnode port the running server reported on stderr (2.9's ports file omits it). */
  private leafnodePortSeen: number | undefined
  private currentMonitorUrl: string | undefined
  /** When each (normalised) server error or warning was last forwarded. */
  private readonly lastForwarded = new Map<string, number>()
  private readonly configPath: string
  private readonly pidFile: string

  constructor(private readonly o: SupervisorOptions) {
    super()
    this.port = o.port
    this.leafnodePort = o.leafnodeListen?.port
    this.clusterPort = o.cluster?.listen.port
    this.monitorPort = this.monitorListen?.port
    this.configPath = path.join(o.dir, 'nats-server.conf')
    this.pidFile = path.join(o.dir, 'nats-server.pid')
  }

  /** The seed that authenticates the node to its server (kept in memory only). */
  get seed(): Uint8Array {
    return this.identity.getSeed()
  }

  /** Times the server was restarted after an unexpected exit. */
  get restarts(): number {
    return this.restartCount
  }

  /** Client URL while the server is up. */
  get url(): string | undefined {
    return this.currentUrl
  }

  /**
   * The address edges dial to join this hub (nats-leaf://host:port): the advertised address if
   * set, else the listen address (the host name for a wildcard listen). Undefined unless a hub.
   */
  get leafnodeUrl(): string | undefined {
    const listen = this.o.leafnodeListen
    if (!listen) return undefined
    if (this.o.leafnodeAdvertise) return `nats-leaf://${formatHostPort(this.o.leafnodeAdvertise)}`
    if (!this.leafnodePort) return undefined
    const host = listen.host === '0.0.0.0' || listen.host === '::' ? hostname() : listen.host
    return `nats-leaf://${formatHostPort({ host, port: this.leafnodePort })}`
  }

  /** The HTTP monitoring endpoint while the server is up (http://host:port), if configured. */
  get monitorUrl(): string | undefined {
    return this.o.monitorListen ? this.currentMonitorUrl : undefined
  }

  /**
   * Monitoring as configured; a clustered server without it still gets one on a loopback port of
   * its choosing, because the start watches the JetStream cluster form through /jsz.
   */
  private get monitorListen(): HostPort | undefined {
    return this.o.monitorListen ?? (this.o.cluster ? { host: '127.0.0.1', port: 0 } : undefined)
  }

  /** Pid of the running server, if any. */
  get pid(): number | undefined {
    return this.child?.exitCode === null ? this.child.pid : undefined
  }

  /** Starts the server and resolves with its client URL once it accepts connections. */
  async start(): Promise<string> {
    const binary = findExecutable(this.o.binary)
    if (!binary) {
      throw FabricError.failedPrecondition(
        `nats-server is not installed (looked for ${JSON.stringify(this.o.binary)} on PATH). ` +
          'Install it with "sudo apt-get install -y nats-server", set [nats] binary to its path, or set [nats] url to use an external NATS.',
        { details: { binary: this.o.binary } },
      )
    }
    const leaf = this.o.leafnodeListen
    if (leaf && !this.o.leafnodeAuth && !isLoopback(leaf.host)) {
      // Every leafnode joins the node's own account: without credentials, anyone who reaches the
      // port reads and writes all of this site's data.
      this.o.log.warn(
        { leafnodeListen: formatHostPort(leaf) },
        'the leafnode listener takes leafnodes without credentials: set nats.leafnode_user and nats.leafnode_password unless only trusted networks reach it',
      )
    }
    await mkdir(this.o.dir, { recursive: true })
    await this.killStale()
    const url = await this.spawnOnce(binary)
    if (this.o.cluster) {
      await this.waitForJetStreamCluster().catch(async (err: unknown) => {
        await this.stop()
        throw err
      })
    }
    return url
  }

  /**
   * Waits until the site's JetStream meta group has a leader and clusterPeers servers. Before
   * that, JetStream requests time out (no leader) or streams cannot be placed (too few servers).
   */
  private async waitForJetStreamCluster(): Promise<void> {
    const want = Math.max(1, this.o.clusterPeers ?? 1)
    const waitMs = this.o.clusterWaitMs ?? CLUSTER_WAIT_MS
    const started = Date.now()
    let lastLog = 0
    let seen = { leader: '', servers: 1 }
    for (;;) {
      const endpoint = this.currentMonitorUrl
      if (endpoint) {
        const jsz = (await fetch(`${endpoint}/jsz`, { signal: AbortSignal.timeout(2_000) })
          .then((r) => r.json())
          .catch(() => undefined)) as { meta_cluster?: { leader?: string; cluster_size?: number; replicas?: unknown[] } } | undefined
        const meta = jsz?.meta_cluster
        // Only the leader lists its followers (replicas); every server knows the group's size.
        seen = { leader: meta?.leader ?? '', servers: Math.max(meta?.cluster_size ?? 1, 1 + (meta?.replicas?.length ?? 0)) }
        if (seen.leader && seen.servers >= want) {
          this.o.log.info({ cluster: this.o.cluster!.name, leader: seen.leader, servers: seen.servers }, 'JetStream cluster ready')
          return
        }
      }
      if (this.stopping) throw FabricError.unavailable('nats-server stopped while waiting for the JetStream cluster')
      const now = Date.now()
      if (now - started > waitMs) {
        throw FabricError.unavailable(
          `the site's JetStream cluster ${JSON.stringify(this.o.cluster!.name)} has ${seen.leader ? `a leader and ${seen.servers}` : `no leader and ${seen.servers}`} of the ${want} servers it needs ` +
            `after ${Math.round(waitMs / 1000)} s: start the site's other nodes, and check nats.routes and nats.cluster_listen`,
          { details: { cluster: this.o.cluster!.name } },
        )
      }
      if (now - lastLog >= CLUSTER_WAIT_LOG_MS) {
        lastLog = now
        this.o.log.info({ cluster: this.o.cluster!.name, leader: seen.leader || null, servers: seen.servers, want }, 'waiting for the site\'s JetStream cluster')
      }
      await delay(200)
    }
  }

  private async spawnOnce(binary: string): Promise<string> {
    await writeFile(
      this.configPath,
      renderServerConfig({
        serverName: this.o.serverName,
        domain: this.o.domain,
        host: this.o.host,
        port: this.port,
        storeDir: this.o.dir,
        portsFileDir: this.o.dir,
        pidFile: this.pidFile,
        userNkey: this.identity.getPublicKey(),
        leafnodeListen: this.o.leafnodeListen && { host: this.o.leafnodeListen.host, port: this.leafnodePort ?? 0 },
        leafnodeAdvertise: this.o.leafnodeAdvertise,
        leafnodeAuth: this.o.leafnodeAuth,
        hubUrls: this.o.hubUrls,
        cluster: this.o.cluster && { ...this.o.cluster, listen: { host: this.o.cluster.listen.host, port: this.clusterPort ?? 0 } },
        monitorListen: this.monitorListen && { host: this.monitorListen.host, port: this.monitorPort ?? 0 },
      }),
      { mode: 0o600 },
    )
    // The mode above applies only when the file is created; a file from an older version may not
    // have it, and a hub's leafnode password is in it.
    await chmod(this.configPath, 0o600)
    await this.removePortsFiles()
    this.stderrTail = []
    this.leafnodePortSeen = undefined
    const child = spawn('/bin/sh', ['-c', WATCHDOG, 'fabric-nats-watchdog', this.configPath, binary, '-c', this.configPath], {
      stdio: ['pipe', 'ignore', 'pipe'],
      detached: true,
    })
    this.child = child
    const startedAt = Date.now()
    child.stdin!.on('error', () => undefined) // EPIPE once the watchdog is gone; nothing to do
    child.stderr!.setEncoding('utf8')
    let partial = ''
    child.stderr!.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n')
      partial = lines.pop() ?? ''
      for (const line of lines) this.onServerLine(line)
    })
    // 'close' comes after 'exit' once stderr is drained, so the tail holds the server's last words.
    const exited = new Promise<void>((resolve) => child.once('close', () => resolve()))
    child.once('close', (code, signal) => {
      child.stdin!.destroy() // lets this run's watchdog go
      if (this.child !== child) return
      this.child = undefined
      this.currentUrl = undefined
      this.currentMonitorUrl = undefined
      if (this.stopping || !this.everReady) return
      this.o.log.error({ code, signal, stderr: this.stderrTail.slice(-5) }, 'nats-server exited unexpectedly; restarting it')
      this.emit('crash', { code, signal })
      if (Date.now() - startedAt > STABLE_AFTER_MS) this.backoffMs = BACKOFF_MIN_MS
      this.scheduleRestart(binary)
    })

    const ports = await Promise.race([
      this.waitForPortsFile(child.pid!),
      exited.then(() => {
        throw FabricError.unavailable(`nats-server exited during start-up: ${this.stderrTail.slice(-3).join(' | ') || 'no output'}`, {
          details: { config: this.configPath },
        })
      }),
    ])
    const url = ports.url
    this.currentUrl = url
    this.currentMonitorUrl = ports.monitor
    this.everReady = true
    // Pin the ports picked by the server, so restarts keep them (edges and routes dial them).
    this.port = Number(new URL(url).port)
    if (ports.leafnodePort !== undefined) this.leafnodePort = ports.leafnodePort
    if (ports.cluster) this.clusterPort = Number(new URL(ports.cluster).port)
    if (ports.monitor) this.monitorPort = Number(new URL(ports.monitor).port)
    this.o.log.info(
      {
        url,
        serverPid: child.pid,
        ...(this.leafnodeUrl ? { leafnode: this.leafnodeUrl } : {}),
        ...(ports.cluster ? { cluster: ports.cluster } : {}),
        ...(this.monitorUrl ? { monitor: this.monitorUrl } : {}),
      },
      'nats-server ready',
    )
    this.emit('ready', url)
    return url
  }

  private scheduleRestart(binary: string): void {
    const wait = this.backoffMs
    this.backoffMs = Math.min(this.backoffMs * 2, BACKOFF_MAX_MS)
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined
      if (this.stopping) return
      this.restartCount++
      this.spawnOnce(binary).catch((err: unknown) => {
        this.o.log.error({ err }, 'nats-server restart failed')
        // A server that exited has already scheduled the next try; one that never spawned has not.
        if (!this.stopping && !this.restartTimer && this.child === undefined) this.scheduleRestart(binary)
      })
    }, wait)
  }

  /** Stops the server: SIGTERM, then SIGKILL after the stop timeout. Safe to call twice. */
  async stop(): Promise<void> {
    this.stopping = true
    if (this.restartTimer) clearTimeout(this.restartTimer)
    const child = this.child
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise<void>((resolve) => child.once('close', () => resolve()))
    child.kill('SIGTERM')
    const timeout = this.o.stopTimeoutMs ?? 10_000
    const timer = setTimeout(() => child.kill('SIGKILL'), timeout)
    await exited
    clearTimeout(timer)
    this.o.log.info('nats-server stopped')
  }

  /** Last resort on a forced exit: kill the server now, synchronously. */
  killNow(): void {
    this.stopping = true
    if (this.restartTimer) clearTimeout(this.restartTimer)
    this.child?.kill('SIGKILL')
  }

  private onServerLine(line: string): void {
    if (!line.trim()) return
    this.stderrTail.push(line)
    if (this.stderrTail.length > MAX_STDERR_LINES) this.stderrTail.shift()
    // nats-server lines look like "[pid] date time [LVL] message".
    const m = /\[(INF|WRN|ERR|FTL|DBG|TRC)\] (.*)$/.exec(line)
    const msg = m?.[2] ?? line
    const level = m?.[1]
    const leafListen = /^Listening for leafnode connections on (.+):(\d+)$/.exec(msg)
    if (leafListen) this.leafnodePortSeen = Number(leafListen[2])
    if (level !== 'ERR' && level !== 'FTL' && level !== 'WRN') {
      this.o.log.debug({ source: 'nats-server' }, msg)
      return
    }
    // A refused leafnode retries every second, and each try logs the same error: forward it once
    // a minute, with what it means for fabric.
    const key = msg.replace(/\b(lid|cid|rid|gid):\d+/g, '').replace(/(\d+\.\d+\.\d+\.\d+|\[[0-9A-Fa-f:.]+\]):\d+ - /, '$1 - ').replace(/\(attempt \d+\)/, '')
    const now = Date.now()
    if (level !== 'FTL' && now - (this.lastForwarded.get(key) ?? -Infinity) < REPEAT_WINDOW_MS) {
      this.o.log.debug({ source: 'nats-server' }, msg)
      return
    }
    if (this.lastForwarded.size >= MAX_FORWARD_KEYS) this.lastForwarded.clear()
    this.lastForwarded.set(key, now)
    const hint = leafnodeHint(msg)
    const fields = { source: 'nats-server', ...(hint ? { reason: msg } : {}) }
    if (level === 'WRN') this.o.log.warn(fields, hint ?? msg)
    else this.o.log.error(fields, hint ?? msg)
  }

  /**
   * Resolves with the addresses the server listens on, from the ports file it writes once it
   * listens. nats-server 2.9 leaves leafnode ports out of that file: then the port comes from its
   * "Listening for leafnode connections" line (printed before the client listener starts).
   */
  private async waitForPortsFile(pid: number): Promise<ListenPorts> {
    const deadline = Date.now() + (this.o.startTimeoutMs ?? 20_000)
    while (Date.now() < deadline) {
      const names = await readdir(this.o.dir).catch(() => [] as string[])
      const name = names.find((n) => n.endsWith(`_${pid}.ports`))
      if (name) {
        try {
          const ports = JSON.parse(await readFile(path.join(this.o.dir, name), 'utf8')) as PortsFile
          const url = ports.nats?.[0]
          const leafnodePort = this.o.leafnodeListen ? (portOf(ports.leafnode?.[0]) ?? this.leafnodePortSeen) : undefined
          const cluster = this.o.cluster ? pick(ports.cluster, this.o.cluster.listen.host) : undefined
          const monitorListen = this.monitorListen
          const monitor = monitorListen ? pick(ports.monitoring, monitorListen.host) : undefined
          const complete = (!this.o.leafnodeListen || leafnodePort !== undefined) && (!this.o.cluster || cluster) && (!monitorListen || monitor)
          if (url && complete) return { url, leafnodePort, cluster, monitor }
        } catch {
          // written but not complete yet: read it again
        }
      }
      await delay(25)
    }
    this.child?.kill('SIGKILL')
    throw FabricError.unavailable(`nats-server did not start listening within ${this.o.startTimeoutMs ?? 20_000} ms`, {
      details: { config: this.configPath },
    })
  }

  private async removePortsFiles(): Promise<void> {
    const names = await readdir(this.o.dir).catch(() => [] as string[])
    await Promise.all(names.filter((n) => n.endsWith('.ports')).map((n) => rm(path.join(this.o.dir, n), { force: true })))
  }

  /**
   * A server left over from a node that died before its watchdog could act (for instance the
   * whole process group was SIGKILLed) would hold the port and the store. Stop it if the pid file
   * names a live nats-server running our config.
   */
  private async killStale(): Promise<void> {
    const pid = Number((await readFile(this.pidFile, 'utf8').catch(() => '')).trim())
    if (!Number.isInteger(pid) || pid <= 0) return
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')
    if (!cmdline.includes(this.configPath)) return
    this.o.log.warn({ serverPid: pid }, 'stopping a nats-server left running by an earlier node process')
    try {
      process.kill(pid, 'SIGTERM')
    } catch {
      return
    }
    for (let i = 0; i < 100; i++) {
      if (!isAlive(pid)) return
      await delay(50)
    }
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // already gone
    }
  }
}

/** The ports file nats-server writes to ports_file_dir (2.9 has no leafnode entry; later ones do). */
interface PortsFile {
  nats?: string[]
  monitoring?: string[]
  cluster?: string[]
  leafnode?: string[]
}

interface ListenPorts {
  url: string
  leafnodePort: number | undefined
  cluster: string | undefined
  monitor: string | undefined
}

function portOf(url: string | undefined): number | undefined {
  if (!url) return undefined
  try {
    return Number(new URL(url).port) || undefined
  } catch {
    return undefined
  }
}

/** A wildcard listener is listed once per interface: prefer loopback, which this machine can reach. */
function pick(urls: string[] | undefined, host: string): string | undefined {
  if (!urls?.length) return undefined
  if (host !== '0.0.0.0' && host !== '::') return urls[0]
  return urls.find((u) => /\/\/(127\.0\.0\.1|\[::1\]):/.test(u)) ?? urls[0]
}

/** What a leafnode error from nats-server means for a fabric operator; undefined for others. */
function leafnodeHint(msg: string): string | undefined {
  // Edge side: the hub refused the credentials in the hub URL.
  if (/Leafnode Error 'Authorization Violation'/.test(msg)) {
    const hub = /^(\S+) - /.exec(msg)?.[1] ?? 'the hub'
    return `the hub at ${hub} refused this site's leafnode credentials: check the user and password in nats.hub_urls against the hub's nats.leafnode_user and nats.leafnode_password`
  }
  // Hub side: a leafnode connection (lid) presented wrong credentials.
  if (/ - lid:\d+ - authentication error/.test(msg)) {
    const from = /^(\S+?)(:\d+)? - /.exec(msg)?.[1] ?? 'a remote'
    return `a leafnode from ${from} was refused: it did not present this hub's nats.leafnode_user and nats.leafnode_password`
  }
  return undefined
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}
