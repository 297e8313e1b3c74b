/**
 * A hub and two edges (see sites.test.ts): an edge keeps taking writes, and snapshots, while its
 * hub is down, and every site converges after; replica sites come and go.
 */
import t from 'tap'
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import { poll, runCli, startNode, stopNode, tempDir } from './harness/index.ts'
import { cli, json, startSites, tableAt, tableWith } from './harness/sites.ts'

t.test('an edge takes writes while the hub is down; after it returns every site converges, nothing lost or doubled', async (t) => {
  const s = await startSites(t)
  await cli(s.hub, 'volume', 'create', '/plant', '--home', 'edge1', '--replicas', 'hub,edge2')
  await cli(s.hub, 'ds', 'create', '/plant/t', '--kind', 'table')
  await poll('edge1 to know /plant/t', async () => (await runCli(['ds', 'stat', '/plant/t', '--server', s.edge1.api])).code === 0, 30_000, 200)
  await cli(s.edge1, 'table', 'put', '/plant/t', 'before', '{"n":0}')
  await tableWith(s.edge2, '/plant/t', 1, 'edge2 to apply the first write')

  await stopNode(s.hub)
  // Offline: the home keeps taking writes and serving them.
  const lines = Array.from({ length: 200 }, (_, i) => JSON.stringify({ id: `k${i}`, n: i })).join('\n')
  const dir = await tempDir(t)
  await writeFile(path.join(dir, 'rows.jsonl'), lines)
  await cli(s.edge1, 'table', 'import', '/plant/t', path.join(dir, 'rows.jsonl'), '--key', 'id')
  for (let i = 0; i < 10; i++) await cli(s.edge1, 'table', 'put', '/plant/t', `single${i}`, JSON.stringify({ i }))
  t.equal(Object.keys((await tableAt(s.edge1, '/plant/t'))!).length, 211, 'the home serves its offline writes')
  // A snapshot taken at the home while the hub is away, then a change after it.
  const snap = await json(s.edge1, 'snap', 'create', '/plant', '--name', 'offline-1')
  await cli(s.edge1, 'table', 'put', '/plant/t', 'k5', '{"n":"changed after the snapshot"}')
  // edge2 cannot reach the home (edge1 is reached through the hub): refused, naming the home.
  const refused = await runCli(['table', 'put', '/plant/t', 'x', '{}', '--server', s.edge2.api])
  t.equal(refused.code, 9, 'UNAVAILABLE')
  t.match(refused.stderr, /homed at site edge1, which is unreachable from site edge2/)
  // ...and still reads what it had.
  t.same(await tableAt(s.edge2, '/plant/t'), { before: { n: 0 } }, 'edge2 serves its copy while cut off')

  // The hub comes back on the same data dir and leafnode port.
  const hub = await startNode(t, { dir: s.hubDir, config: { node: { site: 'hub' }, nats: { leafnode_listen: `127.0.0.1:${s.leafPort}` } } })
  const expected = (await tableAt(s.edge1, '/plant/t'))!
  for (const [name, node] of [['hub', hub], ['edge2', s.edge2]] as const) {
    const rows = await poll(`${name} to converge`, async () => {
      const r = await tableAt(node, '/plant/t')
      return r && JSON.stringify(r) === JSON.stringify(expected) ? r : undefined
    }, 60_000, 200)
    t.same(rows, expected, `${name} holds exactly what the home holds`)
    const stat = await json(node, 'ds', 'stat', '/plant/t')
    t.equal(stat.count, 211, `${name}: the count matches (no record applied twice)`)
  }
  // The snapshot is at the same position with the same content at every site, including the
  // hub, which was down when it was taken.
  const hashes = await Promise.all([s.edge1, hub, s.edge2].map(async (node) => {
    const shown = await poll('the snapshot to reach every site', async () => {
      const r = await runCli(['snap', 'show', '/plant', 'offline-1', '-o', 'json', '--server', node.api])
      return r.code === 0 ? JSON.parse(r.stdout) : undefined
    }, 30_000, 200)
    t.equal(shown.seq, snap.seq, `${node.nodeId}: same position`)
    return shown.contentHash as string
  }))
  t.match(hashes[0], /^[0-9a-f]{64}$/)
  t.same(hashes, [hashes[0], hashes[0], hashes[0]], 'same content hash at every site')
  const now = JSON.parse((await cli(hub, 'table', 'get', '/plant/t', 'k5', '-o', 'json')).stdout)
  const then = JSON.parse((await cli(hub, 'table', 'get', '/plant/t', 'k5', '--at', 'offline-1', '-o', 'json')).stdout)
  t.same([now.value, then.value], [{ n: 'changed after the snapshot' }, { id: 'k5', n: 5 }], 'reads at the snapshot see the cut, not what came after')
  const listed = await json(s.edge2, 'snap', 'ls', '/plant')
  t.same(listed.map((x: { name: string; seq: number }) => [x.name, x.seq]), [['offline-1', snap.seq]], 'snap ls')

  // A restore made through the hub is new log entries at the home, so it replicates.
  await cli(hub, 'snap', 'restore', '/plant', 'offline-1')
  await poll('edge2 to see the restore', async () => JSON.stringify((await tableAt(s.edge2, '/plant/t'))?.k5) === JSON.stringify({ id: 'k5', n: 5 }), 30_000, 200)
  // A clone homed at edge1 with a replica at edge2, made through the hub: the same content there.
  await cli(hub, 'snap', 'clone', '/plant', 'offline-1', '/plant-copy', '--home', 'edge1', '--replicas', 'edge2')
  const cloned = await poll('the clone to reach edge2', async () => {
    const rows = await tableAt(s.edge2, '/plant-copy/t')
    return rows && Object.keys(rows).length === 211 ? rows : undefined
  }, 45_000, 200)
  t.same(cloned.k5, { id: 'k5', n: 5 }, 'the clone holds the snapshot, at a replica of the new volume')
  const missing = await runCli(['table', 'get', '/plant/t', 'x', '--server', hub.api])
  t.equal(missing.code, 3, 'NOT_FOUND: the refused write left nothing behind')
})

t.test('replica sites can be added and removed; a new replica catches up from the start', async (t) => {
  const { hub, edge1, edge2 } = await startSites(t)
  await cli(hub, 'volume', 'create', '/lab', '--home', 'edge1')
  await cli(hub, 'ds', 'create', '/lab/t', '--kind', 'table')
  await poll('edge1 to know /lab/t', async () => (await runCli(['ds', 'stat', '/lab/t', '--server', edge1.api])).code === 0, 30_000, 200)
  for (let i = 0; i < 30; i++) await cli(edge1, 'table', 'put', '/lab/t', `k${i}`, '{}')
  const notHeld = await runCli(['table', 'get', '/lab/t', 'k1', '--server', edge2.api])
  t.equal(notHeld.code, 8, 'edge2 does not hold the volume: FAILED_PRECONDITION')
  t.match(notHeld.stderr, /not held at site edge2 \(home edge1\)/)

  await cli(hub, 'volume', 'set-replicas', '/lab', 'edge2')
  await tableWith(edge2, '/lab/t', 30, 'the new replica to catch up from the start')
  await cli(hub, 'volume', 'set-replicas', '/lab', '')
  await poll('edge2 to let go of the volume', async () => (await runCli(['table', 'get', '/lab/t', 'k1', '--server', edge2.api])).code === 8, 30_000, 200)
})
