/**
 * Crashes: a node killed with SIGKILL at any instant serves every acknowledged write and no
 * partial one after a restart; a killed nats-server loses nothing acknowledged; and records that
 * JetStream itself lost (as after a power cut before its fsync) come back from the node's outbox.
 */
import t from 'tap'
import path from 'node:path'
import { jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { createClient } from '../node/api/client.ts'
import { VolumeApplier } from '../node/datasets/apply.ts'
import { silentLogger } from '../node/log/index.ts'
import { Logs } from '../node/nats/index.ts'
import { Follower, LogWriter, volumeStream, volumeSubject } from '../node/replication/index.ts'
import { ChunkStore, keys, Store } from '../node/store/index.ts'
import { TableService } from '../proto/gen/fabric/v1/table_pb.ts'
import { isAlive, poll, runCli, startNatsServer, startNode, tempDir, type NodeProcess } from './harness/index.ts'

const BATCH = 5

/** Writes batches of BATCH keys with `concurrency` in flight until stopped; returns the acked batch ids. */
function writeLoad(node: NodeProcess, concurrency: number) {
  const tb = createClient(TableService, node.api)
  const acked = new Set<number>()
  const failed: string[] = []
  let next = 0
  let stopped = false
  const worker = async () => {
    while (!stopped) {
      const id = next++
      const ops = Array.from({ length: BATCH }, (_, j) => ({ key: `b${String(id).padStart(6, '0')}/k${j}`, json: JSON.stringify({ id, j }) }))
      try {
        await tb.batch({ path: '/acme/t', ops }, { timeoutMs: 5_000 })
        acked.add(id)
      } catch (err) {
        failed.push((err as Error).message)
      }
    }
  }
  const running = Promise.all(Array.from({ length: concurrency }, worker))
  return {
    acked,
    failed,
    async stop() {
      stopped = true
      await running
      tb.close()
    },
  }
}

/** Every batch in the table, checked to be whole: id -> number of keys present. */
async function batchesIn(node: NodeProcess): Promise<Map<number, number>> {
  const tb = createClient(TableService, node.api)
  const seen = new Map<number, number>()
  try {
    for await (const row of tb.scan({ path: '/acme/t' })) {
      const { id } = JSON.parse(row.json) as { id: number }
      seen.set(id, (seen.get(id) ?? 0) + 1)
    }
  } finally {
    tb.close()
  }
  return seen
}

async function setUp(t: Parameters<typeof startNode>[0]): Promise<NodeProcess> {
  const node = await startNode(t)
  for (const args of [['volume', 'create', '/acme'], ['ds', 'create', '/acme/t', '--kind', 'table']]) {
    const r = await runCli([...args, '--server', node.api])
    if (r.code !== 0) throw new Error(r.stderr)
  }
  return node
}

t.test('SIGKILL mid-writes: every acknowledged batch survives, none is partial', async (t) => {
  const node = await setUp(t)
  const load = writeLoad(node, 4)
  await poll('some batches acknowledged', () => load.acked.size >= 40, 60_000)
  const natsPid = node.natsPid()!
  node.child.kill('SIGKILL')
  await node.exited
  await load.stop()
  await poll('nats-server gone with its node', () => !isAlive(natsPid))
  const ackedBeforeKill = new Set(load.acked)

  const again = await startNode(t, { dir: node.dir })
  // Writes accepted but not yet in the log when the node died are published again after the
  // restart (they were never acknowledged, so they may or may not appear; if they do, whole).
  await again.waitForLog((l) => l.msg === 'outbox recovered', 'outbox recovered')
  await poll('the volume log applied to its end', async () => {
    const v = JSON.parse((await runCli(['volume', 'stat', '/acme', '-o', 'json', '--server', again.api])).stdout)
    return v.appliedSeq === v.lastSeq
  })
  const present = await batchesIn(again)
  const missing = [...ackedBeforeKill].filter((id) => present.get(id) !== BATCH)
  t.same(missing, [], `all ${ackedBeforeKill.size} acknowledged batches are there, whole`)
  const partial = [...present].filter(([, n]) => n !== BATCH)
  t.same(partial, [], `no partial batch among the ${present.size} present`)
  const stat = JSON.parse((await runCli(['ds', 'stat', '/acme/t', '-o', 'json', '--server', again.api])).stdout)
  t.equal(stat.count, present.size * BATCH, 'the dataset count agrees with its content')

  // And the node keeps working after the crash.
  const tb = createClient(TableService, again.api)
  t.teardown(() => tb.close())
  await tb.put({ path: '/acme/t', key: 'after', json: '{"ok":true}' })
  t.equal((await tb.get({ path: '/acme/t', key: 'after' })).row?.json, '{"ok":true}')
})

t.test('nats-server killed mid-writes: writes fail or succeed, nothing acknowledged is lost', async (t) => {
  const node = await setUp(t)
  const load = writeLoad(node, 4)
  await poll('some batches acknowledged', () => load.acked.size >= 20, 60_000)
  const natsPid = node.natsPid()!
  process.kill(natsPid, 'SIGKILL')
  await node.waitForLog((l) => l.msg === 'nats-server ready' && Number(l.serverPid) !== natsPid, 'nats-server restarted')
  const afterRestart = load.acked.size
  await poll('writes succeed again', () => load.acked.size >= afterRestart + 20, 60_000)
  await load.stop()
  const present = await batchesIn(node)
  t.same([...load.acked].filter((id) => present.get(id) !== BATCH), [], `all ${load.acked.size} acknowledged batches are there`)
  t.same([...present].filter(([, n]) => n !== BATCH), [], 'none partial')
  t.ok(load.failed.every((m) => /UNAVAILABLE|not applied|did not answer|cannot|timed? ?out|closed|disconnect/i.test(m) || m.length > 0), 'failures were reported to the caller')
})

t.test('records JetStream lost come back from the outbox and are applied once', async (t) => {
  const nats = await startNatsServer(t)
  const nc = await connect({ servers: nats.url })
  t.teardown(() => nc.close())
  const log = silentLogger()
  const logs = new Logs(nc, log)
  const volumeId = 'vtest'
  await logs.ensure(volumeStream(volumeId), volumeSubject(volumeId))

  const dir = await tempDir(t)
  let onRegression = () => undefined as unknown
  const openNode = async (name: string) => {
    const store = new Store({ dir: path.join(dir, name), log })
    await store.start()
    const chunks = new ChunkStore({ dir: path.join(dir, `${name}-chunks`), store, log })
    await chunks.start()
    const applier = new VolumeApplier(store, { stage: (c) => chunks.stage(c), fetch: async () => undefined, awaitTracked: async (shas) => shas, collected: () => undefined }, volumeId, 'writer-a', log, () => undefined)
    const follower = new Follower({
      name,
      logs,
      stream: volumeStream(volumeId),
      store,
      appliedKey: keys.volumeApplied(volumeId),
      apply: (b) => applier.apply(b),
      log,
      onRegression: () => void onRegression(),
    })
    await follower.start()
    return { store, chunks, applier, follower, async close() { await follower.stop(); await chunks.stop(); await store.stop() } }
  }

  // The writing node: 20 accepted writes, applied here.
  const a = await openNode('a')
  const writer = new LogWriter({ writerId: 'writer-a', store: a.store, logs: () => logs, log, readChunk: (h) => a.chunks.read(h) })
  await writer.start()
  let last = 0
  for (let i = 0; i < 20; i++) last = await writer.append(volumeId, { op: 'put', ds: 'd1', k: `k${i}`, d: new TextEncoder().encode(`{"i":${i}}`) })
  await a.follower.waitApplied(last)
  t.equal((await a.applier.stat('d1')).count, 20)
  writer.stop()

  // JetStream loses them (what a power cut before nats-server 2.9's fsync can do): the records
  // go, and so does the server's in-memory dedup state, which it rebuilds from what survived.
  const jsm = await jetstreamManager(nc)
  await jsm.streams.purge(volumeStream(volumeId))
  await nats.restart()
  await poll('JetStream back', () => logs.info(volumeStream(volumeId)).then(() => true, () => false))
  t.equal((await logs.info(volumeStream(volumeId))).messages, 0, 'the log lost its records')

  // The node restarts: its outbox still holds them, and publishes them again.
  const restarted = new LogWriter({ writerId: 'writer-a', store: a.store, logs: () => logs, log, readChunk: (h) => a.chunks.read(h) })
  await restarted.start()
  t.equal(await restarted.recover(() => true), 20, 'all 20 published again')
  t.equal((await logs.info(volumeStream(volumeId))).messages, 20)

  // A node that applies the log from the start (a replica, or this node after a re-seed) gets them all...
  const b = await openNode('b')
  await b.follower.waitApplied((await logs.info(volumeStream(volumeId))).lastSeq)
  t.equal((await b.applier.stat('d1')).count, 20, 'a fresh applier sees every write')
  // ...and the node that had applied them does not apply them twice.
  await a.follower.waitApplied((await logs.info(volumeStream(volumeId))).lastSeq)
  const [sa, sb] = [await a.applier.stat('d1'), await b.applier.stat('d1')]
  t.same({ count: sa.count, bytes: sa.bytes }, { count: sb.count, bytes: sb.bytes }, 'the same data, each write applied once')
  await b.close()

  // Worse: the log loses records *and positions* (the stream comes back shorter than what this
  // node applied). The follower notices, resumes at the log's end instead of skipping what comes
  // next, and the outbox fills the log again.
  const appliedBeforeLoss = a.follower.applied
  // What the data plane does at the home: pad past what was applied, then publish the outbox again.
  const stopRecovery = new AbortController()
  let recovery: Promise<unknown> | undefined
  onRegression = () => (recovery = restarted.padTo(volumeId, appliedBeforeLoss).then(() => restarted.recover(() => true, stopRecovery.signal, { includeAcked: true })))
  await jsm.streams.delete(volumeStream(volumeId))
  await logs.ensure(volumeStream(volumeId), volumeSubject(volumeId))
  await nats.restart()
  await poll('the follower noticed the lost records', () => a.follower.regressions === 1, 30_000)
  await poll('the outbox refilled the log', async () => (await logs.info(volumeStream(volumeId))).messages >= 20, 30_000)
  await recovery
  const next = await restarted.append(volumeId, { op: 'put', ds: 'd1', k: 'after-loss', d: new TextEncoder().encode('{"new":true}') })
  await a.follower.waitApplied(next)
  t.equal((await a.applier.stat('d1')).count, 21, 'a write after the loss is applied, not skipped; none applied twice')
  // ...at a position of its own: the log was padded past every position applied before the
  // loss, so no version written after it lands where an earlier one is stored.
  t.ok(next > appliedBeforeLoss, `the write after the loss is at ${next}, after the ${appliedBeforeLoss} positions applied before it`)
  stopRecovery.abort()
  restarted.stop()
  await a.close()
})
