/** Pure pieces: address parsing, durations, the generated nats-server config, lifecycles, tables. */
import t from 'tap'
import grpc from '@grpc/grpc-js'
import { formatHostPort, isLoopback, parseDurationMs, parseHostPort } from '../node/config/index.ts'
import { ERROR_CODES, FabricError } from '../node/errors/index.ts'
import { ERROR_CODE_OF, GRPC_STATUS_OF } from '../node/api/index.ts'
import { Lifecycle } from '../node/lifecycle/index.ts'
import { redactUrl } from '../node/log/index.ts'
import { renderServerConfig } from '../node/nats/index.ts'

t.test('host:port', async (t) => {
  t.same(parseHostPort('127.0.0.1:7400'), { host: '127.0.0.1', port: 7400 })
  t.same(parseHostPort('[::1]:0'), { host: '::1', port: 0 })
  t.same(parseHostPort('node-1.example.com:443'), { host: 'node-1.example.com', port: 443 })
  for (const bad of ['7400', 'host', ':7400', '1.2.3.4:', '1.2.3.4:65536', '::1:7400', 'a b:1', '300.1.1.1:1']) t.equal(parseHostPort(bad), undefined, bad)
  t.equal(formatHostPort({ host: '::1', port: 5 }), '[::1]:5')
  t.ok(isLoopback('127.0.0.1') && isLoopback('::1') && isLoopback('localhost'))
  t.notOk(isLoopback('0.0.0.0') || isLoopback('10.0.0.1'))
})

t.test('durations', async (t) => {
  t.equal(parseDurationMs('250ms'), 250)
  t.equal(parseDurationMs('10s'), 10_000)
  t.equal(parseDurationMs('1.5m'), 90_000)
  t.equal(parseDurationMs('2h'), 7_200_000)
  for (const bad of ['10', 's', '-1s', '1d', '']) t.equal(parseDurationMs(bad), undefined, bad)
})

t.test('the embedded server config: loopback, JetStream domain = site, nkey auth, no secret', async (t) => {
  const text = renderServerConfig({
    serverName: 'n-1',
    domain: 'plant-3',
    host: '127.0.0.1',
    port: 0,
    storeDir: '/d/nats',
    portsFileDir: '/d/nats',
    pidFile: '/d/nats/nats-server.pid',
    userNkey: 'UABC',
  })
  t.match(text, /^host: "127\.0\.0\.1"$/m)
  t.match(text, /^port: -1$/m, 'port 0 asks the server for a free port')
  t.match(text, /jetstream \{\n {2}store_dir: "\/d\/nats"\n {2}domain: "plant-3"\n\}/)
  t.match(text, /users: \[ \{ nkey: "UABC" \} \]/)
  t.notMatch(text, /password|seed/i)
})

t.test('lifecycle: start and stop are idempotent; stop waits for start', async (t) => {
  const calls: string[] = []
  let finishStart!: () => void
  const lc = new Lifecycle(
    () => new Promise<void>((r) => ((finishStart = r), calls.push('start'))),
    async () => void calls.push('stop'),
  )
  const a = lc.start()
  const b = lc.start()
  t.equal(a, b, 'one start')
  const s1 = lc.stop()
  const s2 = lc.stop()
  t.equal(lc.state, 'starting')
  finishStart()
  await Promise.all([a, s1, s2])
  t.same(calls, ['start', 'stop'])
  t.equal(lc.state, 'stopped')
  await t.rejects(lc.start(), /stopped/)
})

t.test('error codes map one-to-one onto gRPC statuses and back', async (t) => {
  for (const code of ERROR_CODES) t.equal(ERROR_CODE_OF[GRPC_STATUS_OF[code]], code, code)
  t.equal(ERROR_CODE_OF[grpc.status.DEADLINE_EXCEEDED], 'UNAVAILABLE')
  t.equal(FabricError.from(new Error('x')).code, 'INTERNAL')
  const fe = FabricError.notFound('gone')
  t.equal(FabricError.from(fe), fe, 'a FabricError passes through')
})

t.test('URLs lose their credentials before they are shown', async (t) => {
  t.equal(redactUrl('nats://u:pw@127.0.0.1:4222'), 'nats://127.0.0.1:4222')
  t.equal(redactUrl('nats://127.0.0.1:4222'), 'nats://127.0.0.1:4222')
})
