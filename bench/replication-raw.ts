/**
 * The raw baselines of the replication benchmarks: a plain JetStream mirror at the hub of a
 * stream at the edge, across a leafnode between two standalone nats-servers (JetStream domains
 * "hub" and "edge"). fabric's replication is measured against these on the same two servers.
 *
 * Both servers run in the global account with no auth: on 2.9.10 the leafnode then binds $G to
 * $G, and the domain isolation of docs/research/leafnodes-nats-2.9.md §1 holds just the same
 * (each server logs "JetStream Not Extended, adding deny [$JS.API.> ...]" for $G).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import { jetstream, jetstreamManager, StorageType, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream'
import { poll, tempDir, type Teardown } from '../test/harness/index.ts'
import { startProxy, type Proxy } from '../test/harness/proxy.ts'
import { records } from './content.ts'
import type { Scope } from './stack.ts'

export const HUB_DOMAIN = 'hub'
export const EDGE_DOMAIN = 'edge'

/** Publishes in flight at once (as bench/tables.ts rawPipelined), and at most this many bytes. */
export const PUBLISH_WINDOW = 1000
export const PUBLISH_WINDOW_BYTES = 16 * 1024 * 1024
/** How often the mirror's stream info is read while waiting for it to catch up. */
export const MIRROR_POLL_MS = 10
/** Messages replicated before the clock starts: the mirror's consumer is up and running. */
const WARMUP_MESSAGES = 200
const WARMUP_BYTES = 4 * 1024 * 1024

const encoder = new TextEncoder()

/** One standalone nats-server with JetStream, started from a generated config file. */
export interface SiteServer {
  /** The JetStream domain, also the server_name. */
  domain: string
  /** nats://127.0.0.1:PORT for clients. */
  url: string
  /** The real leafnode listen port (a hub), else undefined. */
  leafnodePort: number | undefined
  pid: number
  dir: string
  /** Recent stderr (nats-server's log), for error messages. */
  log(): string
}

export interface SiteServerOptions {
  domain: string
  /** The `leafnodes { ... }` block's content, or nothing. */
  leafnodes?: string
}

/**
 * Spawns nats-server with a config in a temp dir (listeners on 127.0.0.1 port -1) and resolves
 * once its ports file names the real ports. Killed at teardown.
 */
export async function startSiteServer(t: Teardown, options: SiteServerOptions): Promise<SiteServer> {
  const dir = await tempDir(t, `fabric-bench-${options.domain}-`)
  const conf = path.join(dir, 'server.conf')
  await writeFile(
    conf,
    [
      `server_name: ${JSON.stringify(options.domain)}`,
      'listen: 127.0.0.1:-1',
      `ports_file_dir: ${JSON.stringify(dir)}`,
      `jetstream { store_dir: ${JSON.stringify(path.join(dir, 'js'))}, domain: ${JSON.stringify(options.domain)} }`,
      ...(options.leafnodes ? [`leafnodes {\n${options.leafnodes}\n}`] : []),
      '',
    ].join('\n'),
  )
  const child: ChildProcess = spawn('nats-server', ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    stderr = (stderr + d).slice(-20_000)
  })
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()))
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
  })
  // 2.9.10's ports file has no leafnode entry: the real leafnode port comes from the log line.
  const listensForLeafnodes = /^\s*listen:/m.test(options.leafnodes ?? '')
  const ports = await poll(`nats-server ${options.domain} ports file`, async () => {
    if (child.exitCode !== null || child.signalCode !== null) return { exited: true as const }
    const name = (await readdir(dir)).find((n) => n.endsWith(`_${child.pid}.ports`))
    if (!name) return undefined
    const leaf = /Listening for leafnode connections on ([\d.]+):(\d+)/.exec(stderr)
    if (listensForLeafnodes && !leaf) return undefined
    const { nats } = JSON.parse(await readFile(path.join(dir, name), 'utf8')) as { nats: string[] }
    return { exited: false as const, url: nats[0]!, leafnodePort: leaf ? Number(leaf[2]) : undefined }
  })
  if (ports.exited) {
    await exited
    throw new Error(`nats-server ${options.domain} exited (code ${child.exitCode}): ${stderr}`)
  }
  const { url, leafnodePort } = ports
  return {
    domain: options.domain,
    url,
    leafnodePort,
    pid: child.pid!,
    dir,
    log: () => stderr,
  }
}

/** A site: its server and a raw client connection to it (local JetStream API, no domain prefix). */
export interface Site {
  server: SiteServer
  nc: NatsConnection
  js: JetStreamClient
  jsm: JetStreamManager
}

export interface RawSites {
  hub: Site
  edge: Site
  /** The leafnode link, edge → hub. */
  link: {
    /** Through a proxy (cut and restore work), or direct. */
    proxied: boolean
    proxy: Proxy | undefined
    /** Drops the leafnode connection and keeps it down until restore(). Needs the proxy. */
    cut(): Promise<void>
    restore(): Promise<void>
    /** True once the edge reaches the hub's JetStream API across the link. */
    isUp(): Promise<boolean>
    /** Resolves once isUp(); rejects after timeoutMs. */
    waitUp(timeoutMs?: number): Promise<void>
  }
}

export interface RawSitesOptions {
  /** Route the leafnode through a TCP proxy so the link can be cut (default true). */
  proxy?: boolean
}

/**
 * Starts a hub (domain "hub", leafnode port) and an edge (domain "edge", leafnode remote to the
 * hub) and resolves once the link is up. Through a proxy, the hub advertises the proxy's address
 * (else the edge would learn the real port and reconnect around the proxy).
 */
export async function startRawSites(scope: Scope, options: RawSitesOptions = {}): Promise<RawSites> {
  const proxied = options.proxy ?? true
  const proxy = proxied ? await startProxy(scope) : undefined
  const hubServer = await startSiteServer(scope, {
    domain: HUB_DOMAIN,
    leafnodes: ['  listen: 127.0.0.1:-1', ...(proxy ? [`  advertise: ${JSON.stringify(proxy.address)}`] : [])].join('\n'),
  })
  const leafnodeAddress = `127.0.0.1:${hubServer.leafnodePort}`
  proxy?.setTarget(leafnodeAddress)
  const edgeServer = await startSiteServer(scope, {
    domain: EDGE_DOMAIN,
    leafnodes: `  reconnect: 1\n  remotes: [ { urls: [ ${JSON.stringify(`nats-leaf://${proxy?.address ?? leafnodeAddress}`)} ] } ]`,
  })
  const hub = await connectSite(scope, hubServer)
  const edge = await connectSite(scope, edgeServer)
  const hubApi = `$JS.${HUB_DOMAIN}.API.INFO`
  const isUp = async () => {
    try {
      await edge.nc.request(hubApi, undefined, { timeout: 1_000 })
      return true
    } catch {
      return false
    }
  }
  const link: RawSites['link'] = {
    proxied,
    proxy,
    async cut() {
      if (!proxy) throw new Error('the link is direct: start the sites with { proxy: true } to cut it')
      await proxy.cut()
    },
    async restore() {
      if (!proxy) throw new Error('the link is direct: start the sites with { proxy: true } to cut it')
      await proxy.restore()
    },
    isUp,
    async waitUp(timeoutMs = 15_000) {
      await poll('the leafnode edge → hub', isUp, timeoutMs, 10)
    },
  }
  await link.waitUp().catch((err: unknown) => {
    throw new Error(`${String(err)}\nhub log:\n${hubServer.log()}\nedge log:\n${edgeServer.log()}`)
  })
  return { hub, edge, link }
}

async function connectSite(t: Teardown, server: SiteServer): Promise<Site> {
  const nc = await connect({ servers: server.url, name: `fabric-bench-raw-${server.domain}` })
  t.teardown(() => nc.close())
  return { server, nc, js: jetstream(nc, { timeout: 30_000 }), jsm: await jetstreamManager(nc, { timeout: 30_000 }) }
}

/** Records [0, n) as the bytes a raw producer publishes (their JSON, like bench/tables.ts). */
export function recordMessages(n: number): Uint8Array[] {
  return records(n).map((d) => encoder.encode(d.json))
}

/**
 * Publishes every message, a window at a time (PUBLISH_WINDOW messages or PUBLISH_WINDOW_BYTES,
 * whichever is reached first), each window's acks awaited.
 */
export async function publishPipelined(js: JetStreamClient, subject: string, messages: Uint8Array[]): Promise<void> {
  let i = 0
  while (i < messages.length) {
    const window: Promise<unknown>[] = []
    let bytes = 0
    while (i < messages.length && window.length < PUBLISH_WINDOW && (window.length === 0 || bytes + messages[i]!.length <= PUBLISH_WINDOW_BYTES)) {
      bytes += messages[i]!.length
      window.push(js.publish(subject, messages[i++]!))
    }
    await Promise.all(window)
  }
}

/** A stream's last sequence (0 while empty). */
export async function lastSeq(jsm: JetStreamManager, stream: string): Promise<number> {
  return (await jsm.streams.info(stream)).state.last_seq
}

/**
 * Resolves with the time (performance.now()) at which the stream's last_seq was first seen at or
 * past seq, reading its info every MIRROR_POLL_MS.
 */
export async function waitForSeq(jsm: JetStreamManager, stream: string, seq: number, timeoutMs: number): Promise<number> {
  const deadline = performance.now() + timeoutMs
  let last = -1
  for (;;) {
    last = await lastSeq(jsm, stream).catch(() => last)
    const now = performance.now()
    if (last >= seq) return now
    if (now > deadline) throw new Error(`stream ${stream}: last_seq ${last} after ${timeoutMs} ms, waiting for ${seq}`)
    await delay(MIRROR_POLL_MS)
  }
}

let pairs = 0

/** An origin stream at the edge and its mirror at the hub; warmed up (the mirror is running). */
export interface MirrorPair {
  origin: string
  mirror: string
  subject: string
  /** Messages already in both (the warm-up). */
  seq: number
  /** Deletes both streams. */
  remove(): Promise<void>
}

/**
 * Creates a file-storage origin stream at the edge and its hub-side mirror
 * (`mirror: { name, external: { api: '$JS.edge.API' } }`), then publishes warm-up messages and
 * waits for the mirror to hold them: the 2.9 mirror start-up delay stays off the clock.
 */
export async function createMirrorPair(sites: RawSites, warmup: Uint8Array[]): Promise<MirrorPair> {
  const id = ++pairs
  const origin = `RAW_REPL_${id}`
  const mirror = `RAW_REPL_${id}_HUB`
  const subject = `raw.repl.${id}`
  await sites.edge.jsm.streams.add({ name: origin, subjects: [subject], storage: StorageType.File, num_replicas: 1 })
  await sites.hub.jsm.streams.add({
    name: mirror,
    storage: StorageType.File,
    num_replicas: 1,
    mirror: { name: origin, external: { api: `$JS.${EDGE_DOMAIN}.API` } },
  })
  await publishPipelined(sites.edge.js, subject, warmup)
  await waitForSeq(sites.hub.jsm, mirror, warmup.length, 30_000)
  return {
    origin,
    mirror,
    subject,
    seq: warmup.length,
    async remove() {
      await sites.hub.jsm.streams.delete(mirror)
      await sites.edge.jsm.streams.delete(origin)
    },
  }
}

/** The first messages, up to WARMUP_MESSAGES and WARMUP_BYTES (at least one). */
function warmupOf(messages: Uint8Array[]): Uint8Array[] {
  const out: Uint8Array[] = []
  let bytes = 0
  for (const m of messages) {
    if (out.length >= WARMUP_MESSAGES || (out.length > 0 && bytes + m.length > WARMUP_BYTES)) break
    out.push(m)
    bytes += m.length
  }
  return out
}

const sizeOf = (messages: Uint8Array[]) => messages.reduce((sum, m) => sum + m.length, 0)

export interface ThroughputResult {
  /** From the first publish at the edge until the hub mirror holds the last message. */
  seconds: number
  /** Until the edge acknowledged the last publish (the producer's side alone). */
  publishSeconds: number
  bytes: number
  messages: number
}

/**
 * Raw replication throughput: messages published (pipelined) to a stream at the edge, mirrored by
 * a stream at the hub across the leafnode. The clock runs from the first publish until the
 * mirror's last_seq reaches the origin's.
 */
export async function rawMirrorThroughput(sites: RawSites, messages: Uint8Array[]): Promise<ThroughputResult> {
  const pair = await createMirrorPair(sites, warmupOf(messages))
  const target = pair.seq + messages.length
  const started = performance.now()
  const [publishedAt, mirroredAt] = await Promise.all([
    publishPipelined(sites.edge.js, pair.subject, messages).then(() => performance.now()),
    waitForSeq(sites.hub.jsm, pair.mirror, target, 120_000),
  ])
  const origin = await lastSeq(sites.edge.jsm, pair.origin)
  if (origin !== target) throw new Error(`origin ${pair.origin}: last_seq ${origin}, expected ${target}`)
  await pair.remove()
  return { seconds: (mirroredAt - started) / 1000, publishSeconds: (publishedAt - started) / 1000, bytes: sizeOf(messages), messages: messages.length }
}

export interface BacklogResult {
  /** From restoring the link until the hub mirror holds the whole backlog. */
  seconds: number
  /** From the restore until the first backlog message reached the hub mirror. */
  reconnectSeconds: number
  /** The rest: seconds - reconnectSeconds, the transfer itself. */
  transferSeconds: number
  /** From the restore until the leafnode was up again (the edge reaches the hub's JS API). */
  leafnodeSeconds: number
  /** How long the link was down while the backlog was written at the edge. */
  outageSeconds: number
  bytes: number
  messages: number
}

export interface BacklogOptions {
  /**
   * Keep the link down at least this long (from the cut), however fast the backlog was written.
   * How long a 2.9 mirror takes to resume depends on how long it was cut off (stall detection,
   * retry back-off), so fabric and raw runs compare fairly only with the same outage.
   */
  minOutageMs?: number
}

/**
 * Raw offline catch-up: with the link cut, a backlog is published at the edge (n records, or the
 * messages given); then the link is restored and the clock runs until the hub mirror holds all
 * of it. In 2.9 the mirror's own
 * restart (consumer create timeouts and stall detection, research pitfall 1) adds seconds after
 * the leafnode is back: reconnectSeconds separates that fixed part from transferSeconds.
 */
export async function rawBacklogCatchUp(sites: RawSites, backlog: number | Uint8Array[], options: BacklogOptions = {}): Promise<BacklogResult> {
  if (!sites.link.proxied) throw new Error('rawBacklogCatchUp needs the sites started with { proxy: true }')
  const messages = typeof backlog === 'number' ? recordMessages(backlog) : backlog
  const n = messages.length
  const pair = await createMirrorPair(sites, warmupOf(messages))
  const target = pair.seq + n

  await sites.link.cut()
  const cutAt = performance.now()
  await poll('the leafnode to drop', async () => !(await sites.link.isUp()), 10_000, 10)
  await publishPipelined(sites.edge.js, pair.subject, messages)
  if ((await lastSeq(sites.hub.jsm, pair.mirror)) !== pair.seq) throw new Error('the mirror moved while the link was cut')
  await delay(Math.max(0, (options.minOutageMs ?? 0) - (performance.now() - cutAt)))

  await sites.link.restore()
  const restoredAt = performance.now()
  const [leafAt, firstAt, doneAt] = await Promise.all([
    poll('the leafnode to come back', () => sites.link.isUp(), 30_000, 10).then(() => performance.now()),
    waitForSeq(sites.hub.jsm, pair.mirror, pair.seq + 1, 60_000),
    waitForSeq(sites.hub.jsm, pair.mirror, target, 120_000),
  ])
  await pair.remove()
  const seconds = (doneAt - restoredAt) / 1000
  const reconnectSeconds = (firstAt - restoredAt) / 1000
  return {
    seconds,
    reconnectSeconds,
    transferSeconds: seconds - reconnectSeconds,
    leafnodeSeconds: (leafAt - restoredAt) / 1000,
    outageSeconds: (restoredAt - cutAt) / 1000,
    bytes: sizeOf(messages),
    messages: n,
  }
}
