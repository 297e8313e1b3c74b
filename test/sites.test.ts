/**
 * A hub and two edges, each a real node with its own nats-server, linked by leafnodes on
 * loopback: volumes homed at an edge replicate to the hub and the other edge, writes elsewhere
 * are forwarded to the home, and an edge keeps taking writes while its hub is down.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { freePort, poll, runCli, runCliOk, startNode, stopNode, tempDir, type NodeProcess, type Teardown } from './harness/index.ts'

const cli = (node: NodeProcess, ...args: string[]) => runCliOk([...args, '--server', node.api])
const json = async (node: NodeProcess, ...args: string[]) => JSON.parse((await cli(node, ...args, '-o', 'json')).stdout)

/** The rows of a table as {key: value} at a node, or undefined while the table is unknown there. */
async function tableAt(node: NodeProcess, path: string): Promise<Record<string, unknown> | undefined> {
  const r = await runCli(['table', 'scan', path, '-o', 'json', '--server', node.api])
  if (r.code !== 0) return undefined
  const rows: Record<string, unknown> = {}
  for (const line of r.stdout.split('\n').filter(Boolean)) {
    const row = JSON.parse(line) as { key: string; value: unknown }
    rows[row.key] = row.value
  }
  return rows
}

/** Waits until the node's view of the table has exactly n keys and returns it. */
function tableWith(node: NodeProcess, path: string, n: number, what: string, timeoutMs = 45_000) {
  return poll(what, async () => {
    const rows = await tableAt(node, path)
    return rows && Object.keys(rows).length === n ? rows : undefined
  }, timeoutMs, 200)
}

interface Sites {
  hub: NodeProcess
  edge1: NodeProcess
  edge2: NodeProcess
  hubDir: string
  leafPort: number
}

async function startSites(t: Teardown): Promise<Sites> {
  // A fixed leafnode port, so the hub can be restarted where the edges look for it.
  const leafPort = await freePort()
  const hubDir = await tempDir(t, 'fabric-hub-')
  const hub = await startNode(t, { dir: hubDir, config: { node: { site: 'hub' }, nats: { leafnode_listen: `127.0.0.1:${leafPort}` } } })
  const edge = (site: string) => startNode(t, { config: { node: { site }, nats: { hub_urls: [`nats-leaf://127.0.0.1:${leafPort}`] } } })
  const [edge1, edge2] = await Promise.all([edge('edge1'), edge('edge2')])
  // Edges learn the catalog's home from the hub and then resolve names themselves.
  for (const e of [edge1, edge2]) {
    await poll(`${e.nodeId} to know the catalog home`, async () => {
      const vols = (await json(e, 'volume', 'ls').catch(() => [])) as Array<{ path: string; home: string }>
      return vols.find((v) => v.path === '/' && v.home === 'hub')
    }, 30_000, 200)
  }
  return { hub, edge1, edge2, hubDir, leafPort }
}

t.test('a volume homed at an edge replicates to its replicas; writes elsewhere go to its home', async (t) => {
  const { hub, edge1, edge2 } = await startSites(t)

  // Created through the hub, homed at edge1: its log is created in edge1's domain.
  const vol = await json(hub, 'volume', 'create', '/acme', '--home', 'edge1', '--replicas', 'hub,edge2')
  t.match(vol, { path: '/acme', home: 'edge1', replicas: ['hub', 'edge2'] })
  await cli(hub, 'ds', 'create', '/acme/temps', '--kind', 'table')
  await cli(hub, 'ds', 'create', '/acme/files', '--kind', 'files')
  await cli(hub, 'ds', 'create', '/acme/events', '--kind', 'stream')

  // The catalog reaches every site; wait until edge1 knows the dataset, then write at the home.
  await poll('edge1 to know /acme/temps', async () => (await runCli(['ds', 'stat', '/acme/temps', '--server', edge1.api])).code === 0, 30_000, 200)
  for (let i = 0; i < 20; i++) await cli(edge1, 'table', 'put', '/acme/temps', `k${i}`, JSON.stringify({ i, at: 'edge1' }))
  for (const [name, node] of [['hub', hub], ['edge2', edge2]] as const) {
    const rows = await tableWith(node, '/acme/temps', 20, `${name} to apply 20 records written at edge1`)
    t.same(rows.k7, { i: 7, at: 'edge1' }, `${name} holds the records written at the home`)
  }

  // A write through the hub (a replica) is forwarded to edge1, and is readable at once at the hub.
  await cli(hub, 'table', 'put', '/acme/temps', 'from-hub', '{"at":"hub"}')
  t.same(JSON.parse((await cli(hub, 'table', 'get', '/acme/temps', 'from-hub', '-o', 'json')).stdout).value, { at: 'hub' }, 'read-your-writes at the forwarding site')
  await tableWith(edge1, '/acme/temps', 21, 'the forwarded write at the home')
  // A conditional write that fails at the home fails at the forwarding site, with the home's reason.
  const stale = await runCli(['table', 'put', '/acme/temps', 'k1', '{}', '--expect-version', '1', '--server', edge2.api])
  t.equal(stale.code, 8, 'FAILED_PRECONDITION from the home')
  t.match(stale.stderr, /version/)

  // A file written at edge2: chunks go to the home's chunk stream, the commit is forwarded; the
  // hub fetches the chunks from its mirror and serves the same bytes.
  const dir = await tempDir(t)
  const content = randomBytes(600 * 1024)
  await writeFile(path.join(dir, 'in.bin'), content)
  await cli(edge2, 'file', 'put', path.join(dir, 'in.bin'), '/acme/files/a.bin')
  const out = path.join(dir, 'out.bin')
  await poll('the hub to serve the file written at edge2', async () => (await runCli(['file', 'get', '/acme/files/a.bin', out, '--server', hub.api])).code === 0, 45_000, 200)
  t.ok((await readFile(out)).equals(content), 'same bytes at the hub')

  // Events published at two sites land in the home's one order, the same everywhere.
  await cli(edge2, 'stream', 'pub', '/acme/events', '{"n":1}')
  await cli(edge1, 'stream', 'pub', '/acme/events', '{"n":2}')
  const events = async (node: NodeProcess) => (await runCli(['stream', 'sub', '/acme/events', '-o', 'json', '--server', node.api])).stdout.trim()
  const atHome = await events(edge1)
  await poll('the same events in the same order at every site', async () => (await events(hub)) === atHome && (await events(edge2)) === atHome, 30_000, 200)
  t.equal(atHome.split('\n').length, 2)

  // Replication status: every site that holds the volume, caught up, seen from the hub.
  const status = await poll('replication to be in sync at every site', async () => {
    const v = await json(hub, 'volume', 'stat', '/acme')
    const reps = v.replication as Array<{ site: string; lagRecords: number | null; home: boolean }>
    return reps.length === 3 && reps.every((r) => r.home || r.lagRecords === 0) ? v : undefined
  }, 30_000, 500)
  t.same(status.replication.map((r: { site: string }) => r.site).sort(), ['edge1', 'edge2', 'hub'])
  const sites = (await json(hub, 'site', 'ls')) as Array<{ name: string; connected: boolean; nodes: unknown[] }>
  t.same(sites.map((s) => [s.name, s.connected, s.nodes.length]), [['edge1', true, 1], ['edge2', true, 1], ['hub', true, 1]], 'site ls at the hub')
  const nodes = (await json(edge2, 'node', 'ls')) as Array<{ site: string; connected: boolean }>
  t.same(nodes.map((n) => n.site).sort(), ['edge1', 'edge2', 'hub'], 'node ls at an edge sees every node')

  // Every site holds the same log as the home: the rolling hashes agree.
  const verified = (await json(edge2, 'volume', 'verify', '/acme')) as Array<{ site: string; agrees: boolean; comparedAt: number; problems: string[] }>
  t.same(verified.map((x) => [x.site, x.agrees, x.problems]), [['edge1', true, []], ['hub', true, []], ['edge2', true, []]], 'verify: the same log everywhere')
  t.ok(verified.every((x) => x.comparedAt > 0), 'compared at a real position')
  // Re-seeding: refused at the home (its log is the reference); a replica drops its copy and
  // takes it again from the home, ending with the same content and log.
  const atHomeRefused = await runCli(['volume', 'reseed', '/acme', '--yes', '--server', edge1.api])
  t.equal(atHomeRefused.code, 8, 'reseed at the home: FAILED_PRECONDITION')
  const before = await tableAt(hub, '/acme/temps')
  await cli(hub, 'volume', 'reseed', '/acme', '--yes')
  await poll('the re-seeded hub to hold the volume again', async () => JSON.stringify(await tableAt(hub, '/acme/temps')) === JSON.stringify(before), 45_000, 200)
  const again = (await json(hub, 'volume', 'verify', '/acme')) as Array<{ site: string; agrees: boolean }>
  t.same(again.map((x) => [x.site, x.agrees]), [['edge1', true], ['hub', true], ['edge2', true]], 'verify after the re-seed')
})

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
