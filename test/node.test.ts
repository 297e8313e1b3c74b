/** The daemon's life as a user sees it: start, inspect, restart, crash, stop. */
import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { isAlive, poll, runCli, startNode, stopNode } from './harness/index.ts'

t.test('starts on embedded defaults: site local, data in ./.fabric, gRPC on 127.0.0.1:7400', async (t) => {
  const node = await startNode(t, { defaults: true })
  t.equal(node.api, '127.0.0.1:7400')
  t.equal(node.http, '127.0.0.1:7480')
  t.equal(node.nats, 'nats://127.0.0.1:4250')
  t.ok(existsSync(path.join(node.dir, '.fabric', 'node-id')), 'node id kept under ./.fabric')
  t.ok(existsSync(path.join(node.dir, '.fabric', 'store')), 'LevelDB store under ./.fabric')

  const r = await runCli(['status'])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, new RegExp(`node\\s+${node.nodeId}`))
  t.match(r.stdout, /site\s+local/)
  t.match(r.stdout, /nats\s+connected \(embedded\) nats:\/\/127\.0\.0\.1:4250/)
  t.match(r.stdout, /jetstream\s+on, domain local/)
  t.equal((await stopNode(node, 'SIGINT')).code, 0)
})

t.test('fabric status over gRPC: id, site, version, uptime, NATS/JetStream, storage', async (t) => {
  const node = await startNode(t, { config: { node: { site: 'plant-3', id: 'edge-a' } } })
  const r = await runCli(['status', '--server', node.api, '-o', 'json'])
  t.equal(r.code, 0, r.stderr)
  const s = JSON.parse(r.stdout)
  t.equal(s.nodeId, 'edge-a')
  t.equal(s.site, 'plant-3')
  t.equal(s.version, JSON.parse(readFileSync(path.join(import.meta.dirname, '..', 'package.json'), 'utf8')).version)
  t.equal(s.ready, true)
  t.ok(s.uptimeMs >= 0 && s.uptimeMs < 120_000, 'uptime in ms')
  t.ok(Date.parse(s.startedAt) <= Date.now())
  t.match(s.nats, { connected: true, mode: 'embedded', jetstream: true, domain: 'plant-3', restarts: 0, serverVersion: /^2\./ })
  t.equal(s.nats.url, node.nats)
  t.equal(s.storage.dataDir, node.dataDir)
  t.ok(s.storage.bytesUsed > 0 && s.storage.storeBytes > 0 && s.storage.bytesUsed >= s.storage.storeBytes)

  const viaEnv = await runCli(['status', '-o', 'json'], { env: { FABRIC_SERVER: node.api } })
  t.equal(JSON.parse(viaEnv.stdout).nodeId, 'edge-a', '$FABRIC_SERVER picks the node')
})

t.test('a restart on the same data dir keeps the node id', async (t) => {
  const first = await startNode(t)
  t.match(first.nodeId, /^n-[0-9a-f]{12}$/)
  t.equal((await stopNode(first)).code, 0)
  const second = await startNode(t, { dir: first.dir })
  t.equal(second.nodeId, first.nodeId)
})

t.test('a clean stop drains, closes and leaves no nats-server behind', async (t) => {
  const node = await startNode(t)
  const natsPid = node.natsPid()!
  t.ok(isAlive(natsPid), 'nats-server child runs')
  const started = Date.now()
  const exit = await stopNode(node, 'SIGTERM')
  t.same(exit, { code: 0, signal: null }, 'exit code 0')
  t.ok(Date.now() - started < 10_000, 'within a few seconds')
  t.notOk(isAlive(natsPid), 'nats-server stopped with the node')
  const order = node.logs.map((l) => l.msg).filter((m) => ['api stopped', 'nats-server stopped', 'node stopped'].includes(m))
  t.same(order, ['api stopped', 'nats-server stopped', 'node stopped'], 'API first, NATS after')
})

t.test('a killed nats-server child is restarted and the node reconnects', async (t) => {
  const node = await startNode(t)
  const firstPid = node.natsPid()!
  process.kill(firstPid, 'SIGKILL')
  await node.waitForLog((l) => l.msg === 'nats-server ready' && Number(l.serverPid) !== firstPid, 'nats-server restarted')
  const s = await poll('reconnected status', async () => {
    const r = await runCli(['status', '--server', node.api, '-o', 'json'])
    const j = JSON.parse(r.stdout)
    return j.nats.connected && j.nats.jetstream ? j : undefined
  })
  t.equal(s.nats.restarts, 1)
  t.equal(s.nats.url, node.nats, 'same client port after the restart')
  t.equal(s.ready, true)
})

t.test('a node killed with SIGKILL takes its nats-server with it', async (t) => {
  const node = await startNode(t)
  const natsPid = node.natsPid()!
  node.child.kill('SIGKILL')
  await node.exited
  await poll('nats-server to exit after its node was killed', () => !isAlive(natsPid), 15_000)
  t.pass('the watchdog stopped the orphaned server')
  const again = await startNode(t, { dir: node.dir })
  t.equal(again.nodeId, node.nodeId, 'and the node starts again on the same data dir')
})

t.test('a second signal forces the exit', async (t) => {
  const node = await startNode(t, { config: { node: { shutdown_timeout: '30s' } } })
  const natsPid = node.natsPid()!
  // SIGSTOP the server so the graceful NATS drain cannot finish; the second signal must not wait.
  process.kill(natsPid, 'SIGSTOP')
  t.teardown(() => {
    if (isAlive(natsPid)) process.kill(natsPid, 'SIGKILL')
  })
  node.child.kill('SIGTERM')
  await node.waitForLog((l) => l.msg === 'api stopped', 'api stopped')
  node.child.kill('SIGTERM')
  const exit = await node.exited
  t.equal(exit.code, 130, 'forced exit code')
  await poll('nats-server killed', () => !isAlive(natsPid))
})

t.test('two nodes on one data dir: the second refuses to start', async (t) => {
  const first = await startNode(t)
  const second = await startNode(t, { dir: first.dir, waitReady: false })
  const exit = await second.exited
  t.equal(exit.code, 8, 'FAILED_PRECONDITION')
  t.match(second.stderr(), /in use by another process/)
  const r = await runCli(['status', '--server', first.api, '-o', 'json'])
  t.equal(JSON.parse(r.stdout).ready, true, 'the first node is unharmed')
})

t.test('without nats-server installed the node says how to install it', async (t) => {
  const node = await startNode(t, { config: { nats: { binary: 'nats-server-not-here' } }, waitReady: false })
  const exit = await node.exited
  t.equal(exit.code, 8, 'FAILED_PRECONDITION')
  t.match(node.stderr(), /nats-server is not installed .*apt-get install -y nats-server/)
})
