/** [nats] url: the node uses an operator's NATS and starts no server of its own. */
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { poll, runCli, runCliOk, startNatsServer, startNode, tempDir } from './harness/index.ts'

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

t.test('two nodes of one site share its volumes: writes through one read back through the other', async (t) => {
  const nats = await startNatsServer(t, { domain: 'plant' })
  const config = { node: { site: 'plant' }, nats: { url: nats.url } }
  const a = await startNode(t, { config })
  const b = await startNode(t, { config })
  const cli = (node: { api: string }, ...args: string[]) => runCliOk([...args, '--server', node.api])
  await cli(a, 'volume', 'create', '/plant')
  await cli(a, 'ds', 'create', '/plant/t', '--kind', 'table')
  await cli(a, 'ds', 'create', '/plant/f', '--kind', 'files')
  await cli(a, 'table', 'put', '/plant/t', 'k1', '{"v":1}')
  // Several chunks, one of them twice: node b holds none of them and fetches each from the
  // volume's chunk stream when it applies the commit.
  const chunk = randomBytes(256 * 1024)
  const content = Buffer.concat([chunk, randomBytes(256 * 1024), chunk, randomBytes(1000)])
  const dir = await tempDir(t)
  await writeFile(path.join(dir, 'in.bin'), content)
  await cli(a, 'file', 'put', path.join(dir, 'in.bin'), '/plant/f/data.bin')

  const row = await poll('node b to apply the table write', async () => {
    const r = await runCli(['table', 'get', '/plant/t', 'k1', '-o', 'json', '--server', b.api])
    return r.code === 0 ? JSON.parse(r.stdout) : undefined
  }, 30_000)
  t.same(row.value, { v: 1 }, 'the document written through a, read through b')
  await poll('node b to apply the file', async () => (await runCli(['file', 'stat', '/plant/f/data.bin', '--server', b.api])).code === 0, 30_000)
  await cli(b, 'file', 'get', '/plant/f/data.bin', path.join(dir, 'out.bin'))
  const back = await readFile(path.join(dir, 'out.bin'))
  t.equal(createHash('sha256').update(back).digest('hex'), createHash('sha256').update(content).digest('hex'), 'the file read through b has the bytes written through a')
  const stat = JSON.parse((await cli(b, 'ds', 'stat', '/plant/f', '-o', 'json')).stdout)
  t.equal(stat.count, 1, 'b counts the file')
})
