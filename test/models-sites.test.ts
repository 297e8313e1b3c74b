/**
 * Models across sites: a model published at the hub replicates to the edge it is deployed to and
 * is served there; other sites' requests are forwarded to it; with the hub down the edge keeps
 * serving, also after a restart, and a site that cannot reach it is told so.
 */
import t from 'tap'
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import { createClient } from '../node/api/index.ts'
import { isFabricError } from '../node/errors/index.ts'
import { tensorFromBytes, tensorToBytes } from '../node/models/index.ts'
import { ElementType, ModelService } from '../proto/gen/fabric/v1/model_pb.ts'
import { freePort, poll, startNode, stopNode, tempDir } from './harness/index.ts'
import { scaleModel } from './harness/onnx.ts'
import { cli, json } from './harness/sites.ts'

const x = { name: 'x', type: ElementType.FLOAT32, dims: [1n, 4n], data: tensorToBytes({ type: 'float32', dims: [1, 4], data: Float32Array.from([1, 2, 3, 4]) }) }
const y = (r: { outputs: Array<{ dims: bigint[]; data: Uint8Array }> }) => [...(tensorFromBytes('float32', r.outputs[0]!.dims.map(Number), r.outputs[0]!.data).data as Float32Array)]

t.test('a model deployed to an edge is served there, reached from other sites, and keeps serving with the hub down', async (t) => {
  const leafPort = await freePort()
  const hub = await startNode(t, { config: { node: { site: 'hub' }, nats: { leafnode_listen: `127.0.0.1:${leafPort}` } } })
  const edgeConfig = (site: string) => ({ node: { site }, nats: { hub_urls: [`nats-leaf://127.0.0.1:${leafPort}`] } })
  const edge1Dir = await tempDir(t, 'fabric-edge1-')
  const [edge1, edge2] = await Promise.all([startNode(t, { dir: edge1Dir, config: edgeConfig('edge1') }), startNode(t, { config: edgeConfig('edge2') })])
  for (const e of [edge1, edge2]) {
    await poll(`${e.nodeId} to know the catalog home`, async () => ((await json(e, 'volume', 'ls').catch(() => [])) as Array<{ path: string; home: string }>).find((v) => v.path === '/' && v.home === 'hub'), 30_000, 200)
  }
  const dir = await tempDir(t)
  await writeFile(path.join(dir, 'm.onnx'), scaleModel(3))
  // Published at the hub: its bytes go to /acme/models in the root volume, which every site holds.
  await cli(hub, 'model', 'publish', 'acme/scale', path.join(dir, 'm.onnx'))
  t.equal((await json(hub, 'model', 'show', 'acme/scale')).versions.length, 1, 'published at the hub')
  await cli(hub, 'model', 'deploy', 'acme/scale', '--version', '1', '--sites', 'edge1')

  const clients = { hub: createClient(ModelService, hub.api), edge1: createClient(ModelService, edge1.api), edge2: createClient(ModelService, edge2.api) }
  t.teardown(() => Object.values(clients).forEach((c) => c.close()))
  const atEdge1 = await poll('edge1 to serve the model', () => clients.edge1.predict({ model: 'acme/scale', inputs: [x] }).catch(() => undefined), 45_000, 200)
  t.equal(atEdge1.site, 'edge1', 'answered at edge1')
  t.same(y(atEdge1), [3, 6, 9, 12])
  // The hub and the other edge do not serve it: their requests go to edge1.
  const fromHub = await poll('the hub to forward to edge1', () => clients.hub.predict({ model: 'acme/scale', inputs: [x] }).catch(() => undefined), 30_000, 200)
  t.equal(fromHub.site, 'edge1', 'a request at the hub is answered by edge1')
  t.same(y(fromHub), [3, 6, 9, 12])
  const fromEdge2 = await poll('edge2 to forward to edge1', () => clients.edge2.predict({ model: 'acme/scale', inputs: [x] }).catch(() => undefined), 30_000, 200)
  t.equal(fromEdge2.site, 'edge1', 'a request at edge2 is answered by edge1, through the hub')
  const status = await json(hub, 'model', 'status', 'acme/scale')
  t.same(status.nodes.map((n: { site: string }) => n.site), ['edge1'], 'the hub sees edge1 serving it')
  t.equal(status.nodes[0].versions[0].state, 'ready')

  // A bad input is refused as such, also when forwarded (not retried elsewhere, not UNAVAILABLE).
  const bad = await clients.hub.predict({ model: 'acme/scale', inputs: [{ ...x, dims: [1n, 3n], data: x.data.subarray(0, 12) }] }).then(() => undefined, (e: unknown) => e)
  t.ok(isFabricError(bad, 'INVALID_ARGUMENT'), `a bad input forwarded: INVALID_ARGUMENT (${String(bad)})`)

  // The hub goes down: edge1 goes on serving, also after a restart of its node.
  await stopNode(hub)
  t.same(y(await clients.edge1.predict({ model: 'acme/scale', inputs: [x] })), [3, 6, 9, 12], 'edge1 serves with the hub down')
  const cut = await poll('edge2 to see edge1 out of reach', () => clients.edge2.predict({ model: 'acme/scale', inputs: [x] }).then(() => undefined, (e: unknown) => (isFabricError(e, 'UNAVAILABLE') ? e : undefined)), 30_000, 500)
  t.match(cut.message, /acme\/scale is deployed at site edge1, not at site edge2/, `edge2 is told where it is served (${cut.message})`)
  await stopNode(edge1)
  const again = await startNode(t, { dir: edge1Dir, config: edgeConfig('edge1') })
  const client = createClient(ModelService, again.api)
  t.teardown(() => client.close())
  const restarted = await poll('edge1 to serve after a restart with the hub down', () => client.predict({ model: 'acme/scale', inputs: [x] }).catch(() => undefined), 45_000, 200)
  t.same(y(restarted), [3, 6, 9, 12], 'edge1 serves after a restart, offline, from what it holds')
  t.equal(restarted.site, 'edge1')
})
