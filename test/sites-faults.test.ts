/**
 * Faults between sites: a leafnode link that flaps for a minute while the edge writes, and nodes
 * killed with SIGKILL while they replicate. Every acknowledged write must arrive at every site
 * holding the volume exactly once, in the home's order.
 */
import t from 'tap'
import { createClient } from '../node/api/index.ts'
import { StreamService } from '../proto/gen/fabric/v1/stream_pb.ts'
import { freePort, poll, runCli, runCliOk, startNode, stopNode, tempDir, type NodeProcess, type Teardown } from './harness/index.ts'
import { startProxy } from './harness/proxy.ts'

const cli = (node: NodeProcess, ...args: string[]) => runCliOk([...args, '--server', node.api])

/** The events of a stream at a node, as their JSON texts in order (position order). */
async function eventsAt(node: NodeProcess, path: string): Promise<string[] | undefined> {
  const r = await runCli(['stream', 'sub', path, '-o', 'json', '--server', node.api], { timeoutMs: 60_000 })
  if (r.code !== 0) return undefined
  return r.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.stringify((JSON.parse(l) as { seq: number; event: unknown }).event))
}

/** Publishes events {w: label, n} one by one through gRPC until stop(); returns the acknowledged ones. */
function writer(node: NodeProcess, path: string, pauseMs: number, label: string) {
  const client = createClient(StreamService, node.api)
  const acked: string[] = []
  let failed = 0
  let stopped = false
  const done = (async () => {
    for (let n = 0; !stopped; n++) {
      const event = JSON.stringify({ w: label, n })
      try {
        await client.publish({ path, events: [event] }, { timeoutMs: 15_000 })
        acked.push(event)
      } catch {
        failed++
      }
      await new Promise((r) => setTimeout(r, pauseMs))
    }
  })()
  return {
    acked,
    get failed() {
      return failed
    },
    stop: async () => {
      stopped = true
      await done
      client.close()
    },
  }
}

async function hubAndEdge(t: Teardown, viaProxy: boolean) {
  const leafPort = await freePort()
  const proxy = viaProxy ? await startProxy(t, `127.0.0.1:${leafPort}`) : undefined
  const hubDir = await tempDir(t, 'fabric-hub-')
  const hubConfig = { node: { site: 'hub' }, nats: { leafnode_listen: `127.0.0.1:${leafPort}`, ...(proxy ? { leafnode_advertise: proxy.address } : {}) } }
  const hub = await startNode(t, { dir: hubDir, config: hubConfig })
  const edgeDir = await tempDir(t, 'fabric-edge-')
  const edgeConfig = { node: { site: 'edge1' }, nats: { hub_urls: [`nats-leaf://${proxy?.address ?? `127.0.0.1:${leafPort}`}`] } }
  const edge = await startNode(t, { dir: edgeDir, config: edgeConfig })
  await poll('the edge to know the catalog home', async () => (await runCli(['volume', 'ls', '-o', 'json', '--server', edge.api])).stdout.includes('"home": "hub"'), 30_000, 200)
  await cli(hub, 'volume', 'create', '/f', '--home', 'edge1', '--replicas', 'hub')
  await cli(hub, 'ds', 'create', '/f/events', '--kind', 'stream')
  await poll('the edge to know /f/events', async () => (await runCli(['ds', 'stat', '/f/events', '--server', edge.api])).code === 0, 30_000, 200)
  return { hub, edge, proxy, hubDir, edgeDir, hubConfig, edgeConfig }
}

t.test('a leafnode link that flaps for a minute: every event written at the edge reaches the hub once, in order', async (t) => {
  const s = await hubAndEdge(t, true)
  const w = writer(s.edge, '/f/events', 40, 'flap')
  await s.proxy!.flap({ periodMs: 5_000, downMs: 2_000, forMs: 60_000 })
  await w.stop()
  t.equal(w.failed, 0, 'the home took every write while its link flapped')
  t.ok(w.acked.length > 100, `${w.acked.length} events written during the flapping`)
  const atHub = await poll('the hub to converge', async () => {
    const events = await eventsAt(s.hub, '/f/events')
    return events && events.length >= w.acked.length ? events : undefined
  }, 90_000, 500)
  t.same(atHub, w.acked, 'the hub holds exactly the acknowledged events, once each, in order')
  t.same(await eventsAt(s.edge, '/f/events'), w.acked, 'and so does the home')
})

t.test('nodes killed with SIGKILL mid-replication come back and converge, nothing lost or doubled', async (t) => {
  const s = await hubAndEdge(t, false)
  // The hub (a replica) is killed while it applies, and restarted.
  let w = writer(s.edge, '/f/events', 10, 'before')
  await poll('replication to be under way', async () => ((await eventsAt(s.hub, '/f/events'))?.length ?? 0) > 20, 30_000, 100)
  await stopNode(s.hub, 'SIGKILL')
  await new Promise((r) => setTimeout(r, 1_000))
  const hub = await startNode(t, { dir: s.hubDir, config: s.hubConfig })
  await new Promise((r) => setTimeout(r, 2_000))
  // The home is killed while it writes: writes not acknowledged may or may not be there, but every
  // acknowledged one must be, once.
  await stopNode(s.edge, 'SIGKILL')
  await w.stop()
  const ackedBefore = [...w.acked]
  const edge = await startNode(t, { dir: s.edgeDir, config: s.edgeConfig })
  w = writer(edge, '/f/events', 10, 'after')
  await new Promise((r) => setTimeout(r, 2_000))
  await w.stop()
  const atHome = (await eventsAt(edge, '/f/events'))!
  for (const e of [...ackedBefore, ...w.acked]) if (!atHome.includes(e)) t.fail(`acknowledged event ${e} is missing at the home`)
  t.equal(new Set(atHome).size, atHome.length, `no event twice at the home (${atHome.length} events)`)
  const atHub = await poll('the hub to converge with the home', async () => {
    const events = await eventsAt(hub, '/f/events')
    return events && events.length === atHome.length ? events : undefined
  }, 60_000, 500)
  t.same(atHub, atHome, 'the hub holds the same events in the same order')
})
