/**
 * A hub and two edges, each a real node with its own nats-server, linked by leafnodes on
 * loopback: volumes homed at an edge replicate to the hub and the other edge, writes elsewhere
 * are forwarded to the home, and an edge keeps taking writes while its hub is down.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { poll, runCli, tempDir, type NodeProcess } from './harness/index.ts'
import { cli, json, startSites, tableAt, tableWith } from './harness/sites.ts'

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

