/**
 * Sites joined by their embedded nats-servers, as an operator sets them up: a hub that edges join
 * as leafnodes, and a hub of three clustered nodes. What a user checks is what nats-server's
 * monitoring reports (/leafz, /routez, /jsz).
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { stat, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'
import { renderServerConfig, type EmbeddedServerOptions } from '../node/nats/index.ts'
import { freePort, poll, runCli, runCliOk, startNode, stopNode, tempDir, type NodeProcess } from './harness/index.ts'

const LEAF_PASSWORD = 'leaf-s3cret-pw'

async function monitor<T = Record<string, unknown>>(node: NodeProcess, endpoint: string): Promise<T> {
  const res = await fetch(`${node.monitor}/${endpoint}`)
  if (!res.ok) throw new Error(`${endpoint}: HTTP ${res.status}`)
  return (await res.json()) as T
}

interface Leafz {
  leafnodes: number
  leafs: Array<{ account: string; subscriptions_list?: string[] }>
}

/** A leaf connection carries the edge's JetStream API subjects: that names its site (domain). */
const leafOf = (site: string) => (l: Leafz['leafs'][number]) => (l.subscriptions_list ?? []).includes(`$JS.${site}.API.INFO`)

const BASE: EmbeddedServerOptions = {
  serverName: 'n-1',
  domain: 'hub',
  host: '127.0.0.1',
  port: 0,
  storeDir: '/d/nats',
  portsFileDir: '/d/nats',
  pidFile: '/d/nats/nats-server.pid',
  // A valid public user nkey (nats-server -t checks it).
  userNkey: 'UAGZB5MKFDHI55QFYXR6DPRFZOFVWA2TCFJEEF7KGNSARGM4Y7KT65OA',
}

/** nats-server's own verdict on a config: `nats-server -t -c FILE` exits 0 for a valid one. */
async function natsServerAccepts(t: Parameters<typeof tempDir>[0], text: string): Promise<string> {
  const file = path.join(await tempDir(t), 'nats-server.conf')
  await writeFile(file, text)
  const { stdout, stderr } = await promisify(execFile)('nats-server', ['-t', '-c', file])
  return stdout + stderr
}

t.test('the server config of a hub, an edge and a clustered server', async (t) => {
  const plain = renderServerConfig(BASE)
  t.notMatch(plain, /leafnodes|cluster|http:/, 'a standalone site has no leafnode, cluster or monitoring listener')

  const hub = renderServerConfig({
    ...BASE,
    leafnodeListen: { host: '0.0.0.0', port: 7422 },
    leafnodeAdvertise: { host: 'hub.example.net', port: 17422 },
    leafnodeAuth: { user: 'leaf', password: 'p"w {x}#' },
    monitorListen: { host: '127.0.0.1', port: 0 },
  })
  t.match(hub, /leafnodes \{\n {2}host: "0\.0\.0\.0"\n {2}port: 7422\n {2}advertise: "hub\.example\.net:17422"\n {2}authorization \{ user: "leaf", password: "p\\"w \{x\}#" \}\n\}/)
  t.match(hub, /^http: "127\.0\.0\.1:-1"$/m, 'monitoring on any free port')
  t.notMatch(hub, /remotes/, 'a hub alone has no remote')
  t.match(await natsServerAccepts(t, hub), /is valid/, 'nats-server accepts the hub config')

  const edge = renderServerConfig({ ...BASE, domain: 'edge1', hubUrls: ['nats-leaf://leaf:pw@hub1.example.net:7422', 'nats-leaf://leaf:pw@[2001:db8::2]:7422'] })
  t.match(edge, /leafnodes \{\n {2}remotes: \[ \{ urls: \[ "nats-leaf:\/\/leaf:pw@hub1\.example\.net:7422", "nats-leaf:\/\/leaf:pw@\[2001:db8::2\]:7422" \] \} \]\n\}/, 'one remote: the servers of one hub')
  t.notMatch(edge, /host: "0|authorization \{ user/, 'an edge listens for no leafnodes')
  t.match(await natsServerAccepts(t, edge), /is valid/, 'nats-server accepts the edge config')

  const clustered = renderServerConfig({
    ...BASE,
    leafnodeListen: { host: '::', port: 0 },
    hubUrls: ['nats-leaf://upper.example.net:7422'],
    cluster: { name: 'hub', listen: { host: '10.0.0.1', port: 0 }, routes: ['nats-route://10.0.0.1:6222', 'nats-route://10.0.0.2:6222'] },
    monitorListen: { host: '::1', port: 8222 },
  })
  t.match(clustered, /cluster \{\n {2}name: "hub"\n {2}host: "10\.0\.0\.1"\n {2}port: -1\n {2}routes: \[ "nats-route:\/\/10\.0\.0\.1:6222", "nats-route:\/\/10\.0\.0\.2:6222" \]\n\}/)
  t.match(clustered, /leafnodes \{\n {2}host: "::"\n {2}port: -1\n {2}remotes:/, 'a hub that is also the edge of an upper hub')
  t.match(clustered, /^http: "\[::1\]:8222"$/m)
  t.match(await natsServerAccepts(t, clustered), /is valid/, 'nats-server accepts the clustered config')
})

t.test('an edge site joins the hub as a leafnode; a wrong password is refused and said so', async (t) => {
  const hub = await startNode(t, {
    config: {
      node: { site: 'hub' },
      nats: { leafnode_listen: '127.0.0.1:0', leafnode_user: 'leaf', leafnode_password: LEAF_PASSWORD, monitor_listen: '127.0.0.1:0' },
    },
  })
  t.match(hub.leafnode, /^nats-leaf:\/\/127\.0\.0\.1:\d+$/, 'the hub reports the address edges dial')
  t.match(hub.monitor, /^http:\/\/127\.0\.0\.1:\d+$/, 'and its monitoring endpoint')
  t.equal(hub.logs.find((l) => l.msg === 'node ready')?.role, 'hub')
  const leafPort = new URL(hub.leafnode).port

  const edge = await startNode(t, {
    config: {
      node: { site: 'edge1' },
      nats: { hub_urls: [`nats-leaf://leaf:${LEAF_PASSWORD}@127.0.0.1:${leafPort}`], monitor_listen: '127.0.0.1:0' },
    },
  })
  t.equal(edge.leafnode, '', 'an edge is no hub')
  t.equal(edge.logs.find((l) => l.msg === 'node ready')?.role, 'edge')
  const leafz = await poll('the hub to see the edge', async () => {
    const l = await monitor<Leafz>(hub, 'leafz?subs=1')
    return l.leafs.some(leafOf('edge1')) ? l : undefined
  })
  t.equal(leafz.leafnodes, 1, 'one leafnode')
  t.equal(leafz.leafs[0]?.account, '$G', 'bridging the account the nodes use')
  const edgeLeafz = await monitor<Leafz>(edge, 'leafz')
  t.equal(edgeLeafz.leafnodes, 1, 'the edge holds one connection to the hub')

  const bad = await startNode(t, {
    config: {
      node: { site: 'edge2' },
      nats: { hub_urls: [`nats-leaf://leaf:not-the-${LEAF_PASSWORD}@127.0.0.1:${leafPort}`], monitor_listen: '127.0.0.1:0' },
    },
  })
  const refused = await bad.waitForLog((l) => /refused this site's leafnode credentials/.test(l.msg), 'the edge to log why it is not connected')
  t.equal(refused.level, 'error')
  t.match(refused.msg, new RegExp(`the hub at 127\\.0\\.0\\.1:${leafPort} refused`), 'naming the hub')
  await hub.waitForLog((l) => /a leafnode from 127\.0\.0\.1 was refused/.test(l.msg), 'the hub to log the refused leafnode')
  t.equal((await monitor<Leafz>(bad, 'leafz')).leafnodes, 0, 'the edge with the wrong password is not connected')
  const hubLeafs = await monitor<Leafz>(hub, 'leafz?subs=1')
  t.equal(hubLeafs.leafnodes, 1, 'the hub still has only the good edge')
  t.notOk(hubLeafs.leafs.some(leafOf('edge2')))

  for (const node of [hub, edge, bad]) {
    t.notMatch(JSON.stringify(node.logs) + node.stderr(), LEAF_PASSWORD, `the password is not in ${node === hub ? 'the hub' : 'an edge'}'s log`)
  }
  const conf = await stat(path.join(hub.dataDir, 'nats', 'nats-server.conf'))
  t.equal(conf.mode & 0o777, 0o600, 'the server config that holds the password is private to its owner')
})

t.test('three nodes of one site cluster their servers: routes and a JetStream meta group of 3', async (t) => {
  // nats-server 2.9 starts a JetStream cluster only with configured routes, so the first server
  // lists itself (a fixed port); the others listen on any port and route to it.
  const seedPort = await freePort()
  const routes = [`nats-route://127.0.0.1:${seedPort}`]
  const nats = (clusterListen: string) => ({ cluster_listen: clusterListen, routes, replicas: 3, monitor_listen: '127.0.0.1:0', leafnode_listen: '127.0.0.1:0' })
  const first = await startNode(t, { config: { node: { site: 'hub' }, nats: nats(`127.0.0.1:${seedPort}`) }, waitReady: false })
  await first.waitForLog((l) => l.msg === 'nats-server ready', 'the first server to listen')
  const [second, third] = await Promise.all([0, 1].map(() => startNode(t, { config: { node: { site: 'hub' }, nats: nats('127.0.0.1:0') } })))
  const ready = await first.waitForLog((l) => l.msg === 'node ready', 'the first node to be ready')
  first.monitor = String(ready.monitor)
  first.api = String(ready.api)
  first.nodeId = String(ready.nodeId)
  first.leafnode = String(ready.leafnode)
  const nodes = [first, second!, third!]

  const clusters = await Promise.all(nodes.map(async (n) => (await monitor<{ cluster: { name: string; cluster_port: number } }>(n, 'varz')).cluster))
  t.same(clusters.map((c) => c.name), ['hub', 'hub', 'hub'], 'the cluster is named after the site')
  t.equal(clusters[0]!.cluster_port, seedPort, 'the first server listens for routes where the others dial')
  t.equal(new Set(clusters.map((c) => c.cluster_port)).size, 3, 'the others picked their own route ports')
  for (const node of nodes) {
    const routez = await poll('each server to route to the two others', async () => {
      const r = await monitor<{ num_routes: number; routes: Array<{ port: number; remote_id: string }> }>(node, 'routez')
      return r.num_routes === 2 ? r : undefined
    })
    t.equal(routez.num_routes, 2)
  }
  const jsz = await poll('a JetStream meta group of 3 with a leader', async () => {
    const j = await monitor<{ meta_cluster?: { name: string; leader?: string; cluster_size?: number; replicas?: unknown[] } }>(first, 'jsz')
    return j.meta_cluster?.leader && j.meta_cluster.cluster_size === 3 && j.meta_cluster.replicas?.length === 2 ? j : undefined
  })
  t.equal(jsz.meta_cluster?.name, 'hub')
  t.ok(nodes.map((n) => n.nodeId).includes(jsz.meta_cluster!.leader!), 'one of the nodes leads')
  // Each hub server reports its own leafnode address: an edge lists all three in hub_urls.
  t.equal(new Set(nodes.map((n) => n.leafnode)).size, 3, 'each server has its own leafnode listener')

  // fabric on the cluster: R3 logs, a write through one node read through another, and writes
  // going on through the others when a node is killed.
  const cli = (n: NodeProcess, ...args: string[]) => runCliOk([...args, '--server', n.api])
  await cli(first, 'volume', 'create', '/plant')
  await cli(first, 'ds', 'create', '/plant/t', '--kind', 'table')
  await cli(first, 'table', 'put', '/plant/t', 'k1', '{"v":1}')
  const read = (n: NodeProcess, key: string) =>
    poll(`${key} readable through ${n.nodeId}`, async () => {
      const r = await runCli(['table', 'get', '/plant/t', key, '-o', 'json', '--server', n.api])
      return r.code === 0 ? (JSON.parse(r.stdout) as { value: unknown }).value : undefined
    }, 30_000, 200)
  t.same(await read(third!, 'k1'), { v: 1 }, 'written through the first node, read through the third')
  const streams = await monitor<{ account_details?: Array<{ stream_detail?: Array<{ name: string; config?: { num_replicas: number } }> }> }>(first, 'jsz?streams=1&config=1')
  const logs = (streams.account_details ?? []).flatMap((a) => a.stream_detail ?? []).filter((d) => d.name.startsWith('FABRIC_'))
  t.ok(logs.length >= 4, `fabric's logs are in JetStream (${logs.map((l) => l.name).join(', ')})`)
  t.same([...new Set(logs.map((l) => l.config?.num_replicas))], [3], 'every fabric log has 3 replicas')
  await stopNode(first, 'SIGKILL')
  // A new stream leader is elected and the followers' consumers on the dead server are re-created
  // (several seconds each, slower on a loaded machine): the write is retried until then.
  await poll('a write through the second node while the first is down', async () => {
    const r = await runCli(['table', 'put', '/plant/t', 'k2', '{"v":2}', '--server', second!.api])
    if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.stderr.trim()}`) // shown if it never succeeds
    return true
  }, 120_000, 1_000)
  t.same(await read(third!, 'k2'), { v: 2 }, 'the cluster goes on with two of three servers')
})
