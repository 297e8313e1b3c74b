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
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { nkeys } from '@nats-io/transport-node'
import { FabricError } from '../errors/index.ts'
import type { Logger } from '../log/index.ts'
import { renderServerConfig } from './server-config.ts'
import { findExecutable } from './which.ts'

export interface SupervisorOptions {
  /** Where the server's config, ports file and JetStream store live (created if missing). */
  dir: string
  binary: string
  serverName: string
  domain: string
  host: string
  port: number
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
  private readonly configPath: string
  private readonly pidFile: string

  constructor(private readonly o: SupervisorOptions) {
    super()
    this.port = o.port
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
    await mkdir(this.o.dir, { recursive: true })
    await this.killStale()
    return this.spawnOnce(binary)
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
      }),
      { mode: 0o600 },
    )
    await this.removePortsFiles()
    this.stderrTail = []
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
      if (this.stopping || !this.everReady) return
      this.o.log.error({ code, signal, stderr: this.stderrTail.slice(-5) }, 'nats-server exited unexpectedly; restarting it')
      this.emit('crash', { code, signal })
      if (Date.now() - startedAt > STABLE_AFTER_MS) this.backoffMs = BACKOFF_MIN_MS
      this.scheduleRestart(binary)
    })

    const url = await Promise.race([
      this.waitForPortsFile(child.pid!),
      exited.then(() => {
        throw FabricError.unavailable(`nats-server exited during start-up: ${this.stderrTail.slice(-3).join(' | ') || 'no output'}`, {
          details: { config: this.configPath },
        })
      }),
    ])
    this.currentUrl = url
    this.everReady = true
    this.port = Number(new URL(url).port) // pin a port picked by the server, so restarts keep it
    this.o.log.info({ url, serverPid: child.pid }, 'nats-server ready')
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
    switch (m?.[1]) {
      case 'ERR':
      case 'FTL':
        this.o.log.error({ source: 'nats-server' }, msg)
        break
      case 'WRN':
        this.o.log.warn({ source: 'nats-server' }, msg)
        break
      default:
        this.o.log.debug({ source: 'nats-server' }, msg)
    }
  }

  /** Resolves with the client URL the server writes to its ports file once it listens. */
  private async waitForPortsFile(pid: number): Promise<string> {
    const deadline = Date.now() + (this.o.startTimeoutMs ?? 20_000)
    while (Date.now() < deadline) {
      const names = await readdir(this.o.dir).catch(() => [] as string[])
      const name = names.find((n) => n.endsWith(`_${pid}.ports`))
      if (name) {
        try {
          const ports = JSON.parse(await readFile(path.join(this.o.dir, name), 'utf8')) as { nats?: string[] }
          const url = ports.nats?.[0]
          if (url) return url
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

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}
