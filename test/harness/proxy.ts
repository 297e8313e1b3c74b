/**
 * A TCP proxy on loopback for fault tests on a link (a leafnode between two sites): bytes pass
 * both ways until the test cuts the link, then every connection is dropped and new ones are
 * refused until it is restored.
 *
 * A proxy in front of a nats-server's leafnode port only stays in the path if the server
 * advertises the proxy's address (leafnodes.advertise); otherwise the remote learns the real
 * port from the INFO and reconnects around the proxy (docs/research/leafnodes-nats-2.9.md §4).
 * Hence the order a test follows: start the proxy with no target, start the hub advertising
 * proxy.address, then proxy.setTarget(the hub's real leafnode port), then start the edge.
 */
import { createServer, Socket, type AddressInfo, type Server } from 'node:net'
import { setTimeout as delay } from 'node:timers/promises'
import type { Teardown } from './index.ts'

const HOST = '127.0.0.1'

export interface ProxyTarget {
  host: string
  port: number
}

export interface ProxyOptions {
  /** Start with the link cut: connections are refused until restore(). */
  cut?: boolean
}

export interface FlapOptions {
  /** One cycle: down for downMs, then up for the rest of the period. */
  periodMs: number
  downMs: number
  /** Total duration; flap() resolves after it with the link restored. */
  forMs: number
}

export interface Proxy {
  readonly host: string
  readonly port: number
  /** "127.0.0.1:PORT": what the proxied server must advertise and its peers must dial. */
  readonly address: string
  /** Where new connections go from now on (open ones keep their upstream). */
  setTarget(target: ProxyTarget | string): void
  /** Drops every open connection (both sides, with a reset) and refuses new ones until restore(). */
  cut(): Promise<void>
  /** Lets new connections through again. */
  restore(): Promise<void>
  /** Alternates cut and restore; resolves with the link restored after forMs (or on close()). */
  flap(options: FlapOptions): Promise<void>
  /** Connections open now (each is a client socket and its upstream socket). */
  connections(): number
  /** True between cut() and restore(). */
  isCut(): boolean
  /** Stops listening and drops every connection. Safe to call twice; teardown calls it. */
  close(): Promise<void>
}

interface Pair {
  client: Socket
  upstream: Socket | undefined
  closed: Promise<void>
}

export function parseTarget(target: ProxyTarget | string): ProxyTarget {
  if (typeof target !== 'string') return target
  const m = /^(?:[a-z+-]+:\/\/)?(?:[^@/]*@)?(\[[^\]]+\]|[^:/]+):(\d+)\/?$/i.exec(target)
  if (!m) throw new Error(`proxy target: expected "host:port", got ${JSON.stringify(target)}`)
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port: Number(m[2]) }
}

/**
 * Starts a proxy on 127.0.0.1 on a free port towards target (which may be given later with
 * setTarget: until then, connections are refused). Closed at teardown.
 */
export async function startProxy(t: Teardown, target?: ProxyTarget | string, options: ProxyOptions = {}): Promise<Proxy> {
  let upstreamTarget = target === undefined ? undefined : parseTarget(target)
  let cut = options.cut ?? false
  let closed = false
  const pairs = new Set<Pair>()
  const stopFlapping = new AbortController()

  /** Ends a connection abruptly, as a dropped link does (RST rather than an orderly FIN). */
  const drop = (socket: Socket | undefined) => {
    if (socket && !socket.destroyed) socket.resetAndDestroy()
  }

  const server: Server = createServer((client) => {
    client.on('error', () => {})
    if (cut || closed || !upstreamTarget) {
      drop(client)
      return
    }
    client.setNoDelay(true)
    const upstream = new Socket()
    upstream.on('error', () => {})
    upstream.setNoDelay(true)
    const pair: Pair = {
      client,
      upstream,
      closed: Promise.all([once(client, 'close'), once(upstream, 'close')]).then(() => {
        pairs.delete(pair)
      }),
    }
    pairs.add(pair)
    // Either side gone: the other goes too. pipe() forwards data and back-pressure both ways.
    client.once('close', () => drop(upstream))
    upstream.once('close', () => drop(client))
    upstream.connect(upstreamTarget.port, upstreamTarget.host)
    client.pipe(upstream)
    upstream.pipe(client)
  })

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, HOST, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const port = (server.address() as AddressInfo).port

  const dropAll = async () => {
    const waiting = [...pairs].map((p) => p.closed)
    for (const p of pairs) {
      drop(p.client)
      drop(p.upstream)
    }
    await Promise.all(waiting)
  }

  const proxy: Proxy = {
    host: HOST,
    port,
    address: `${HOST}:${port}`,
    setTarget(next) {
      upstreamTarget = parseTarget(next)
    },
    async cut() {
      cut = true
      await dropAll()
    },
    async restore() {
      cut = false
    },
    async flap({ periodMs, downMs, forMs }) {
      if (!(downMs > 0 && periodMs > downMs && forMs > 0)) {
        throw new Error(`flap: expected 0 < downMs < periodMs and forMs > 0, got periodMs ${periodMs}, downMs ${downMs}, forMs ${forMs}`)
      }
      const signal = stopFlapping.signal
      const end = performance.now() + forMs
      const wait = (ms: number) => delay(Math.max(0, Math.min(ms, end - performance.now())), undefined, { signal }).catch(() => {})
      try {
        while (!signal.aborted && performance.now() < end) {
          await proxy.cut()
          await wait(downMs)
          await proxy.restore()
          await wait(periodMs - downMs)
        }
      } finally {
        if (!closed) await proxy.restore()
      }
    },
    connections: () => pairs.size,
    isCut: () => cut,
    async close() {
      if (closed) return
      closed = true
      stopFlapping.abort()
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()))
      await dropAll()
      await stopped
    },
  }
  t.teardown(() => proxy.close())
  return proxy
}

function once(emitter: Socket, event: string): Promise<void> {
  return new Promise((resolve) => emitter.once(event, () => resolve()))
}

/**
 * A loopback port that was free a moment ago. Prefer port 0 (or -1 for nats-server) and reading
 * the real port back; this is for what must be known before the listener exists.
 */
export { freePort } from './index.ts'
