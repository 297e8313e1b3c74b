/** The fault-test proxy: real sockets on loopback, an echo server behind it. */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { createServer, Socket, type AddressInfo } from 'node:net'
import { poll, type Teardown } from './harness/index.ts'
import { parseTarget, startProxy } from './harness/proxy.ts'

/** An echo server that greets each connection first, so bytes flow server → client unprompted. */
async function startEcho(t: Teardown): Promise<{ port: number; open: () => number }> {
  const sockets = new Set<Socket>()
  const server = createServer((s) => {
    sockets.add(s)
    s.on('error', () => {})
    s.once('close', () => sockets.delete(s))
    s.write('hello\n')
    s.pipe(s)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const s of sockets) s.destroy()
    await new Promise((resolve) => server.close(resolve))
  })
  return { port: (server.address() as AddressInfo).port, open: () => sockets.size }
}

interface Client {
  socket: Socket
  /** Everything received so far. */
  received(): Buffer
  /** Resolves once n bytes have arrived (rejects if the socket closes first). */
  receivedBytes(n: number): Promise<Buffer>
  closed: Promise<void>
  isClosed(): boolean
}

function connectTo(t: Teardown, port: number): Client {
  const socket = new Socket()
  const chunks: Buffer[] = []
  let size = 0
  let done = false
  const waiters: Array<() => void> = []
  socket.on('error', () => {})
  socket.on('data', (d: Buffer) => {
    chunks.push(d)
    size += d.length
    waiters.splice(0).forEach((w) => w())
  })
  const closed = new Promise<void>((resolve) =>
    socket.once('close', () => {
      done = true
      waiters.splice(0).forEach((w) => w())
      resolve()
    }),
  )
  socket.connect(port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  const received = () => Buffer.concat(chunks)
  return {
    socket,
    received,
    closed,
    isClosed: () => done,
    receivedBytes: (n) =>
      new Promise<Buffer>((resolve, reject) => {
        const check = () => {
          if (size >= n) resolve(received())
          else if (done) reject(new Error(`socket closed after ${size} of ${n} bytes`))
          else waiters.push(check)
        }
        check()
      }),
  }
}

const GREETING = Buffer.from('hello\n')

/** True if a new connection through the proxy gets the greeting and an echo back. */
async function echoes(t: Teardown, port: number): Promise<boolean> {
  const c = connectTo(t, port)
  c.socket.write('ping')
  const got = await c.receivedBytes(GREETING.length + 4).catch(() => undefined)
  c.socket.destroy()
  await c.closed
  return got?.toString() === 'hello\nping'
}

t.test('bytes pass both ways, large writes included, and each side closing closes the other', async (t) => {
  const echo = await startEcho(t)
  const proxy = await startProxy(t, `127.0.0.1:${echo.port}`)
  t.match(proxy.address, /^127\.0\.0\.1:\d+$/)
  const c = connectTo(t, proxy.port)
  t.same(await c.receivedBytes(GREETING.length), GREETING, 'server → client before the client said anything')
  const payload = randomBytes(4 * 1024 * 1024)
  c.socket.write(payload)
  const got = await c.receivedBytes(GREETING.length + payload.length)
  t.ok(got.subarray(GREETING.length).equals(payload), '4 MiB echoed back intact')
  t.equal(proxy.connections(), 1)
  t.equal(echo.open(), 1)

  c.socket.destroy()
  await poll('the upstream side to close', () => echo.open() === 0 && proxy.connections() === 0, 5_000, 10)
  t.pass('client gone: the upstream connection is closed and forgotten')
})

t.test('cut drops open connections and refuses new ones; restore lets them through again', async (t) => {
  const echo = await startEcho(t)
  const proxy = await startProxy(t, { host: '127.0.0.1', port: echo.port })
  const a = connectTo(t, proxy.port)
  const b = connectTo(t, proxy.port)
  await Promise.all([a.receivedBytes(GREETING.length), b.receivedBytes(GREETING.length)])
  t.equal(proxy.connections(), 2)

  await proxy.cut()
  t.equal(proxy.isCut(), true)
  t.equal(proxy.connections(), 0, 'cut() resolves with no connection left')
  await Promise.all([a.closed, b.closed])
  t.pass('both clients saw their connection drop')
  await poll('the server side to close', () => echo.open() === 0, 5_000, 10)
  t.pass('and so did the server')

  const refused = connectTo(t, proxy.port)
  refused.socket.write('anyone?')
  await refused.closed
  t.equal(refused.received().length, 0, 'a new connection is closed at once, nothing passes')
  t.equal(echo.open(), 0, 'and never reaches the server')
  t.equal(await echoes(t, proxy.port), false, 'still refused')

  await proxy.restore()
  t.equal(proxy.isCut(), false)
  t.equal(await echoes(t, proxy.port), true, 'a new connection goes through after restore')
})

t.test('the target can be set after the proxy is listening (advertise the proxy first)', async (t) => {
  const proxy = await startProxy(t)
  t.equal(await echoes(t, proxy.port), false, 'no target yet: refused')
  const echo = await startEcho(t)
  proxy.setTarget(`127.0.0.1:${echo.port}`)
  t.equal(await echoes(t, proxy.port), true, 'through once the target is known')
  t.same(parseTarget('nats-leaf://u:p@localhost:7422'), { host: 'localhost', port: 7422 })
  t.same(parseTarget('[::1]:80'), { host: '::1', port: 80 })
  t.throws(() => parseTarget('nohost'), /expected "host:port"/)

  const cutAtStart = await startProxy(t, `127.0.0.1:${echo.port}`, { cut: true })
  t.equal(await echoes(t, cutAtStart.port), false, 'started cut: refused')
  await cutAtStart.restore()
  t.equal(await echoes(t, cutAtStart.port), true)
})

t.test('flap alternates cut and restore within its time bound and ends restored', async (t) => {
  const echo = await startEcho(t)
  const proxy = await startProxy(t, `127.0.0.1:${echo.port}`)
  const held = connectTo(t, proxy.port)
  await held.receivedBytes(GREETING.length)

  // Sample the link every 10 ms while it flaps: both states must be seen.
  const states: boolean[] = []
  const sampler = setInterval(() => states.push(proxy.isCut()), 10)
  const started = performance.now()
  await proxy.flap({ periodMs: 200, downMs: 80, forMs: 1_000 })
  const elapsed = performance.now() - started
  clearInterval(sampler)

  t.ok(elapsed >= 950 && elapsed < 1_500, `took ${elapsed.toFixed(0)} ms for forMs 1000`)
  t.equal(proxy.isCut(), false, 'restored at the end')
  t.ok(held.isClosed(), 'the connection open before the flap was dropped')
  const downs = states.filter(Boolean).length
  t.ok(downs > 10 && downs < states.length - 10, `both states seen (${downs} of ${states.length} samples cut)`)
  t.equal(await echoes(t, proxy.port), true, 'connections pass after the flap')
  await t.rejects(proxy.flap({ periodMs: 100, downMs: 100, forMs: 1_000 }), /downMs < periodMs/)
})

t.test('close (teardown) stops a flap, drops every connection and the listener, leaving no handle', async (t) => {
  const echo = await startEcho(t)
  const handlesBefore = tcpHandles()
  const fns: Array<() => unknown> = []
  const scope: Teardown = { teardown: (fn) => fns.push(fn) }
  const proxy = await startProxy(scope, `127.0.0.1:${echo.port}`)
  const c = connectTo(scope, proxy.port)
  await c.receivedBytes(GREETING.length)
  const flapping = proxy.flap({ periodMs: 1_000, downMs: 500, forMs: 60_000 })

  const started = performance.now()
  for (const fn of fns.reverse()) await fn()
  await flapping
  t.ok(performance.now() - started < 1_000, 'the 60 s flap ended with the teardown')
  await proxy.close()
  t.pass('close() is safe to call twice')
  t.ok(c.isClosed())
  t.equal(proxy.connections(), 0)
  await poll('the server side to close', () => echo.open() === 0, 5_000, 10)

  const late = connectTo(t, proxy.port)
  const error = await new Promise<NodeJS.ErrnoException>((resolve) => late.socket.once('error', resolve))
  t.equal(error.code, 'ECONNREFUSED', 'nothing listens on the port any more')
  await late.closed
  // Earlier tests' closed servers may still be counted in "before": compare kind by kind.
  const after = tcpHandles()
  t.ok(Object.entries(after).every(([kind, n]) => n <= (handlesBefore[kind] ?? 0)), `no TCP handle left behind (${JSON.stringify(after)} now, ${JSON.stringify(handlesBefore)} before)`)
})

/** Open TCP handles of this process by kind (servers and sockets). */
function tcpHandles(): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const kind of process.getActiveResourcesInfo()) if (kind.startsWith('TCP')) counts[kind] = (counts[kind] ?? 0) + 1
  return counts
}
