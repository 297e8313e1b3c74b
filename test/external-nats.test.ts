/** [nats] url: the node uses an operator's NATS and starts no server of its own. */
import t from 'tap'
import { existsSync } from 'node:fs'
import path from 'node:path'
import { runCli, startNatsServer, startNode } from './harness/index.ts'

t.test('with [nats] url the node uses that NATS and starts no child', async (t) => {
  const nats = await startNatsServer(t, { domain: 'dc-east' })
  const node = await startNode(t, { config: { node: { site: 'dc-east' }, nats: { url: nats.url } } })
  t.equal(node.natsPid(), undefined, 'no embedded nats-server was started')
  t.notOk(existsSync(path.join(node.dataDir, 'nats')), 'no embedded server files')
  const s = JSON.parse((await runCli(['status', '--server', node.api, '-o', 'json'])).stdout)
  t.match(s.nats, { connected: true, mode: 'external', url: nats.url, jetstream: true, domain: 'dc-east' })
  t.equal(s.ready, true)
})

t.test('credentials in the URL are used but never shown or logged', async (t) => {
  const nats = await startNatsServer(t, { args: ['--user', 'fab', '--pass', 's3cr3t-pw'] })
  const url = nats.url.replace('nats://', 'nats://fab:s3cr3t-pw@')
  const node = await startNode(t, { config: { nats: { url } } })
  const r = await runCli(['status', '--server', node.api, '-o', 'json'])
  const s = JSON.parse(r.stdout)
  t.equal(s.nats.connected, true, 'authenticated with the URL credentials')
  t.equal(s.nats.url, nats.url, 'shown without credentials')
  t.notMatch(JSON.stringify(node.logs), /s3cr3t-pw/, 'not in the log')
  t.notMatch(r.stdout, /s3cr3t-pw/)
})

t.test('an unreachable external NATS fails the start with UNAVAILABLE naming the URL', async (t) => {
  const node = await startNode(t, { config: { nats: { url: 'nats://127.0.0.1:1' } }, waitReady: false })
  const exit = await node.exited
  t.equal(exit.code, 9, 'UNAVAILABLE')
  t.match(node.stderr(), /cannot connect to NATS at nats:\/\/127\.0\.0\.1:1/)
})
