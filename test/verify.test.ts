/**
 * volume verify against a replica whose copy of the log really lost a record (as a corrupted
 * JetStream store that nats-server 2.9 restores with fewer messages), and the re-seed that repairs
 * it. The hub runs on an operator's nats-server ([nats] url) so the test can damage its store.
 */
import t from 'tap'
import { connect } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { freePort, poll, runCli, startNatsServer, startNode, stopNode } from './harness/index.ts'
import { cli, json, tableAt } from './harness/sites.ts'

t.test('verify finds a replica whose log copy lost a record; reseed makes it whole again', async (t) => {
  const leafPort = await freePort()
  const hubNats = await startNatsServer(t, { domain: 'hub', config: `leafnodes { listen: "127.0.0.1:${leafPort}" }` })
  const hubConfig = { node: { site: 'hub' }, nats: { url: hubNats.url } }
  let hub = await startNode(t, { config: hubConfig })
  const edge = await startNode(t, { config: { node: { site: 'edge1' }, nats: { hub_urls: [`nats-leaf://127.0.0.1:${leafPort}`] } } })
  await poll('the edge to know the catalog home', async () => (await runCli(['volume', 'ls', '-o', 'json', '--server', edge.api])).stdout.includes('"home": "hub"'), 30_000, 200)
  const vol = await json(hub, 'volume', 'create', '/v', '--home', 'edge1', '--replicas', 'hub')
  await cli(hub, 'ds', 'create', '/v/t', '--kind', 'table')
  await poll('the edge to know /v/t', async () => (await runCli(['ds', 'stat', '/v/t', '--server', edge.api])).code === 0, 30_000, 200)
  for (let i = 0; i < 5; i++) await cli(edge, 'table', 'put', '/v/t', `k${i}`, JSON.stringify({ i }))
  await poll('the hub to apply the first writes', async () => Object.keys((await tableAt(hub, '/v/t')) ?? {}).length === 5, 30_000, 200)

  // The hub's node is down while its mirror takes more records; one of them is then lost from
  // the hub's copy of the log before the node could apply it.
  await stopNode(hub)
  for (let i = 5; i < 10; i++) await cli(edge, 'table', 'put', '/v/t', `k${i}`, JSON.stringify({ i }))
  const nc = await connect({ servers: hubNats.url })
  t.teardown(() => nc.close())
  const jsm = await jetstreamManager(nc, { domain: 'hub' })
  const stream = `FABRIC_VOL_${vol.id}`
  const last = await poll('the hub mirror to receive the records', async () => {
    const s = (await jsm.streams.info(stream)).state
    return s.last_seq >= 10 ? s.last_seq : undefined
  }, 30_000, 100)
  t.ok(await jsm.streams.deleteMessage(stream, last - 2), 'a record gone from the hub copy of the log')
  hub = await startNode(t, { dir: hub.dir, config: hubConfig })
  await poll('the hub to apply what it has', async () => Object.keys((await tableAt(hub, '/v/t')) ?? {}).length === 9, 30_000, 200)

  const found = await runCli(['volume', 'verify', '/v', '-o', 'json', '--server', edge.api])
  t.equal(found.code, 8, 'verify exits with FAILED_PRECONDITION')
  t.match(found.stderr, /volume \/v has diverged at site hub/)
  const sites = JSON.parse(found.stdout) as Array<{ site: string; agrees: boolean | null; problems: string[] }>
  const atHub = sites.find((s) => s.site === 'hub')!
  t.equal(atHub.agrees, false, 'the hub copy hashes differently')
  t.match(atHub.problems.join('\n'), /gaps: 1 of positions/, 'and the gap is named')
  t.same(sites.find((s) => s.site === 'edge1')?.problems, [], 'the home is the reference')

  // Re-seed the hub from the home: the whole log again, the same hashes, every record.
  await cli(hub, 'volume', 'reseed', '/v', '--yes')
  await poll('the re-seeded hub to hold every record', async () => Object.keys((await tableAt(hub, '/v/t')) ?? {}).length === 10, 45_000, 200)
  const again = await runCli(['volume', 'verify', '/v', '-o', 'json', '--server', edge.api])
  t.equal(again.code, 0, 'verify passes after the re-seed')
  t.same((JSON.parse(again.stdout) as Array<{ site: string; agrees: boolean }>).map((s) => [s.site, s.agrees]), [['edge1', true], ['hub', true]])
})
