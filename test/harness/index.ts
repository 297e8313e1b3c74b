/**
 * Test harness: real fabric nodes and real nats-servers on free loopback ports with temp dirs,
 * started the way users start them and killed at teardown. Readiness is awaited by watching what
 * the process says (its JSON log lines, nats-server's ports file), never by sleeping.
 */
import { isFabricError, type FabricError } from '../../node/errors/index.ts'
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as delay } from 'node:timers/promises'
import { stringify as stringifyToml } from 'smol-toml'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
export const CLI = path.join(ROOT, 'dist', 'cli', 'main.js')

/** What tap's Test offers that the harness needs (keeps the harness free of tap's types). */
export interface Teardown {
  teardown(fn: () => unknown): void
}

function assertBuilt(): void {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" first (npm test does)`)
}

/** Polls check until it returns a truthy value; fails with `what` after timeoutMs. */
export async function poll<T>(what: string, check: () => T | Promise<T>, timeoutMs = 15_000, intervalMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const value = await check()
      if (value) return value as NonNullable<T>
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`)
    await delay(intervalMs)
  }
}

export async function tempDir(t: Teardown, prefix = 'fabric-test-'): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

/** A port that was free a moment ago (prefer port 0 in configs; this is for what cannot take 0). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port
      srv.close(() => resolve(port))
    })
  })
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

export interface CliResult {
  code: number
  stdout: string
  stderr: string
}

/** Runs the fabric CLI to completion. */
export function runCli(args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  assertBuilt()
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: options.cwd ?? ROOT,
      env: { ...cleanEnv(), ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 30_000)
    child.once('error', reject)
    child.once('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code: code ?? (signal ? 128 : -1), stdout, stderr })
    })
  })
}

/** Runs the fabric CLI for a test's set-up: throws, with its stderr, unless it exits 0. */
export async function runCliOk(args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  const r = await runCli(args, options)
  if (r.code !== 0) throw new Error(`fabric ${args.join(' ')}: exit ${r.code}: ${r.stderr}`)
  return r
}

/** The environment without FABRIC_* variables a developer may have set. */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('FABRIC_')))
}

export interface LogLine {
  level: string
  msg: string
  [key: string]: unknown
}

export interface NodeProcess {
  readonly child: ChildProcess
  readonly pid: number
  readonly dir: string
  readonly dataDir: string
  readonly configFile: string | undefined
  /** Every JSON log line so far. */
  readonly logs: LogLine[]
  /** Raw stderr so far. */
  stderr(): string
  /** Set once the node logged "node ready". */
  api: string
  http: string
  nats: string
  /** The address edges dial (nats-leaf://host:port) when the node is a hub, else ''. */
  leafnode: string
  /** The embedded nats-server's HTTP monitoring (http://host:port) when configured, else ''. */
  monitor: string
  nodeId: string
  /** Resolves with the first log line (past or future) matching pred. */
  waitForLog(pred: (l: LogLine) => boolean, what: string, timeoutMs?: number): Promise<LogLine>
  /** Resolves with the exit code (or 128+signal number style: -1 when killed by a signal). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** Pid of the node's embedded nats-server (from its log). */
  natsPid(): number | undefined
}

export interface StartNodeOptions {
  /** Config sections merged over the harness's own (free ports, data dir, debug JSON logs). */
  config?: Record<string, Record<string, unknown>>
  /** Write no config file at all: the node runs on embedded defaults in `dir`. */
  defaults?: boolean
  /** Reuse a directory (for restarts on the same data dir). */
  dir?: string
  env?: NodeJS.ProcessEnv
  /** Resolve once spawned instead of once ready (for start-up failures). */
  waitReady?: boolean
  timeoutMs?: number
}

/**
 * Starts `fabric node start` as a separate process, as a user would. By default the config puts
 * every listener on 127.0.0.1 port 0 and the node reports the real addresses in its "node ready"
 * log line, so tests run in parallel without port races.
 */
export async function startNode(t: Teardown, options: StartNodeOptions = {}): Promise<NodeProcess> {
  assertBuilt()
  const dir = options.dir ?? (await tempDir(t, 'fabric-node-'))
  const dataDir = path.join(dir, 'data')
  let configFile: string | undefined
  if (!options.defaults) {
    configFile = path.join(dir, 'fabric.toml')
    const config: Record<string, Record<string, unknown>> = {
      node: { data_dir: dataDir },
      api: { listen: '127.0.0.1:0' },
      http: { listen: '127.0.0.1:0' },
      nats: { port: 0 },
      log: { level: 'debug', format: 'json' },
    }
    for (const [section, values] of Object.entries(options.config ?? {})) config[section] = { ...config[section], ...values }
    await writeFile(configFile, stringifyToml(config))
  }
  const args = [...(process.env.FABRIC_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean), CLI, 'node', 'start', ...(configFile ? ['--config', configFile] : [])]
  const child = spawn(process.execPath, args, {
    cwd: dir,
    env: { ...cleanEnv(), ...(options.defaults ? { FABRIC_LOG_FORMAT: 'json', FABRIC_LOG_LEVEL: 'debug' } : {}), ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const logs: LogLine[] = []
  const waiters: Array<{ pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }> = []
  let stderr = ''
  let partial = ''
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    const lines = (partial + chunk).split('\n')
    partial = lines.pop() ?? ''
    for (const text of lines) {
      if (!text.trim()) continue
      let line: LogLine
      try {
        line = JSON.parse(text) as LogLine
      } catch {
        line = { level: 'raw', msg: text }
      }
      logs.push(line)
      for (const w of [...waiters]) {
        if (w.pred(line)) {
          waiters.splice(waiters.indexOf(w), 1)
          w.resolve(line)
        }
      }
    }
  })
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })))

  const node: NodeProcess = {
    child,
    pid: child.pid!,
    dir,
    dataDir: options.defaults ? path.join(dir, '.fabric') : dataDir,
    configFile,
    logs,
    stderr: () => stderr,
    api: '',
    http: '',
    nats: '',
    leafnode: '',
    monitor: '',
    nodeId: '',
    exited,
    waitForLog(pred, what, timeoutMs = options.timeoutMs ?? 30_000) {
      const found = logs.find(pred)
      if (found) return Promise.resolve(found)
      return new Promise<LogLine>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for log: ${what}\nstderr: ${stderr}\nlast logs: ${logs.slice(-5).map((l) => JSON.stringify(l)).join('\n')}`)), timeoutMs)
        const waiter = {
          pred,
          resolve: (l: LogLine) => {
            clearTimeout(timer)
            resolve(l)
          },
        }
        waiters.push(waiter)
        void exited.then(({ code, signal }) => {
          if (!waiters.includes(waiter)) return
          clearTimeout(timer)
          reject(new Error(`node exited (code ${code}, signal ${signal}) before: ${what}\nstderr: ${stderr}`))
        })
      })
    },
    natsPid() {
      const ready = [...logs].reverse().find((l) => l.msg === 'nats-server ready')
      return ready ? Number(ready.serverPid) : undefined
    },
  }
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await exited
    }
    // The watchdog stops an orphaned nats-server; make sure before the data dir is removed.
    const natsPid = node.natsPid()
    if (natsPid) await poll('nats-server to exit after its node', () => !isAlive(natsPid), 15_000).catch(() => process.kill(natsPid, 'SIGKILL'))
  })
  if (options.waitReady === false) return node
  const ready = await node.waitForLog((l) => l.msg === 'node ready', 'node ready')
  node.api = String(ready.api)
  node.http = String(ready.http)
  node.nats = String(ready.nats)
  node.leafnode = String(ready.leafnode ?? '')
  node.monitor = String(ready.monitor ?? '')
  node.nodeId = String(ready.nodeId)
  return node
}

/** Sends a signal and resolves with how the process exited. */
export async function stopNode(node: NodeProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  node.child.kill(signal)
  return node.exited
}

export interface NatsServerProcess {
  url: string
  pid: number
  storeDir: string
  stop(): Promise<void>
  /** Stops the server and starts it again on the same port and store (clients reconnect). */
  restart(): Promise<void>
}

/**
 * A standalone nats-server with JetStream on a free loopback port, as an operator would run one
 * (for nodes configured with [nats] url). Readiness comes from its ports file.
 */
export async function startNatsServer(t: Teardown, options: { domain?: string; args?: string[]; config?: string } = {}): Promise<NatsServerProcess> {
  const dir = await tempDir(t, 'nats-')
  const args = ['-a', '127.0.0.1', '--ports_file_dir', dir, '-js', '-sd', dir, ...(options.args ?? [])]
  if (options.domain || options.config) {
    // `config`: more nats-server config (e.g. a leafnodes block), appended as it is.
    const conf = path.join(dir, 'server.conf')
    await writeFile(conf, `${options.domain ? `jetstream { domain: ${JSON.stringify(options.domain)} }\n` : ''}${options.config ?? ''}\n`)
    args.push('-c', conf)
  }
  let child: ChildProcess
  let exited: Promise<void>
  const spawnServer = async (port: number) => {
    const c = spawn('nats-server', [...args, '-p', String(port)], { stdio: ['ignore', 'ignore', 'pipe'] })
    child = c
    let stderr = ''
    c.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    exited = new Promise<void>((resolve) => c.once('close', () => resolve()))
    return poll(`nats-server ports file`, async () => {
      if (c.exitCode !== null) throw new Error(`nats-server exited: ${stderr}`)
      const name = (await readdir(dir)).find((n) => n.endsWith(`_${c.pid}.ports`))
      if (!name) return undefined
      return (JSON.parse(await readFile(path.join(dir, name), 'utf8')) as { nats: string[] }).nats[0]
    })
  }
  t.teardown(async () => {
    child.kill('SIGKILL')
    await exited
  })
  const url = await spawnServer(-1)
  const port = Number(new URL(url).port)
  const server: NatsServerProcess = {
    url,
    pid: child!.pid!,
    storeDir: dir,
    async stop() {
      child.kill('SIGTERM')
      await exited
    },
    async restart() {
      await server.stop()
      await spawnServer(port)
      server.pid = child.pid!
    },
  }
  return server
}

/**
 * The TCP addresses a process listens on, read from /proc (Linux): its socket inodes matched
 * against the kernel's tables of listening sockets. "127.0.0.1:7400", "[::]:80", ...
 */
export async function listeningAddresses(pid: number): Promise<string[]> {
  const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])
  const inodes = new Set<string>()
  for (const fd of fds) {
    const link = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')
    const m = /^socket:\[(\d+)\]$/.exec(link)
    if (m) inodes.add(m[1]!)
  }
  const out: string[] = []
  for (const [file, v6] of [['/proc/net/tcp', false], ['/proc/net/tcp6', true]] as const) {
    const rows = (await readFile(file, 'utf8').catch(() => '')).split('\n').slice(1)
    for (const row of rows) {
      const cols = row.trim().split(/\s+/)
      if (cols.length < 10 || cols[3] !== '0A' || !inodes.has(cols[9]!)) continue // 0A = LISTEN
      const [hexAddr, hexPort] = cols[1]!.split(':') as [string, string]
      out.push(`${v6 ? `[${ipv6(hexAddr)}]` : ipv4(hexAddr)}:${parseInt(hexPort, 16)}`)
    }
  }
  return out
}

function ipv4(hex: string): string {
  // /proc/net/tcp prints the address as a little-endian 32-bit word.
  return [6, 4, 2, 0].map((i) => parseInt(hex.slice(i, i + 2), 16)).join('.')
}

function ipv6(hex: string): string {
  const words: string[] = []
  for (let i = 0; i < 32; i += 8) {
    const w = hex.slice(i, i + 8)
    const le = w.slice(6, 8) + w.slice(4, 6) + w.slice(2, 4) + w.slice(0, 2)
    words.push(le.slice(0, 4), le.slice(4, 8))
  }
  return words.map((w) => parseInt(w, 16).toString(16)).join(':').replace(/(^|:)0(:0)+(:|$)/, '::')
}

/** The FabricError a promise rejects with; throws if it resolves or rejects with anything else. */
export async function refusal(promise: Promise<unknown>): Promise<FabricError> {
  try {
    await promise
  } catch (err) {
    if (isFabricError(err)) return err
    throw err
  }
  throw new Error('expected a FabricError, got a result')
}

/** The FabricError fn throws; throws if it returns or throws anything else. */
export function thrown(fn: () => unknown): FabricError {
  try {
    fn()
  } catch (err) {
    if (isFabricError(err)) return err
    throw err
  }
  throw new Error('expected a FabricError')
}
