/**
 * Garbage collection of file content: chunks no kept file version refers to leave the volume and
 * every site's copy of its chunk stream; what a snapshot or the newest version needs stays
 * readable; content deduplicated against a collected chunk is sent again; chunks of an upload
 * that never committed go after the grace period.
 */
import t from 'tap'
import { randomBytes, createHash } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import type { MessageInitShape } from '@bufbuild/protobuf'
import { createClient } from '../node/api/index.ts'
import { isFabricError } from '../node/errors/index.ts'
import { FileService, type PutFileRequestSchema } from '../proto/gen/fabric/v1/file_pb.ts'
import { freePort, poll, runCli, runCliOk, startNode, tempDir, type NodeProcess } from './harness/index.ts'

const CHUNK = 256 * 1024
const cli = (node: NodeProcess, ...args: string[]) => runCliOk([...args, '--server', node.api])
const json = async (node: NodeProcess, ...args: string[]) => JSON.parse((await cli(node, ...args, '-o', 'json')).stdout)
const logBytes = async (node: NodeProcess, volume: string) => Number((await json(node, 'volume', 'stat', volume)).logBytes)
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')

t.test('chunks of collected versions go; the newest, snapshots and deduplicated uploads keep working', async (t) => {
  const node = await startNode(t)
  const dir = await tempDir(t)
  await cli(node, 'volume', 'create', '/cg')
  await cli(node, 'ds', 'create', '/cg/f', '--kind', 'files')
  // Three chunks each, all different.
  const content = { A: randomBytes(3 * CHUNK - 100), B: randomBytes(3 * CHUNK - 100), C: randomBytes(3 * CHUNK - 100), D: randomBytes(3 * CHUNK - 100) }
  const put = async (name: string, data: Uint8Array) => {
    await writeFile(path.join(dir, 'in'), data)
    return json(node, 'file', 'put', path.join(dir, 'in'), `/cg/f/${name}`)
  }
  const get = async (name: string, ...at: string[]) => {
    await cli(node, 'file', 'get', `/cg/f/${name}`, path.join(dir, 'out'), ...at)
    return sha256(await readFile(path.join(dir, 'out')))
  }
  await put('a.bin', content.A)
  await put('b.bin', content.B)
  await cli(node, 'snap', 'create', '/cg', '--name', 's1')
  await put('a.bin', content.C)
  await cli(node, 'file', 'rm', '/cg/f/b.bin')
  await put('d.bin', content.D)
  await cli(node, 'file', 'rm', '/cg/f/d.bin')

  // d.bin was seen by no snapshot and is gone: its version and its three chunks go. A (a.bin at
  // s1) and B (b.bin at s1) stay for the snapshot; C is the newest a.bin.
  const before = await logBytes(node, '/cg')
  const first = await json(node, 'volume', 'gc', '/cg')
  t.equal(Number(first.chunksRemoved), 3, 'the chunks of d.bin')
  t.ok(before - (await logBytes(node, '/cg')) > 2.5 * CHUNK, 'the chunk stream shrank by about its bytes')
  t.equal(await get('a.bin'), sha256(content.C), 'the newest a.bin reads back')
  t.equal(await get('a.bin', '--at', 's1'), sha256(content.A), 'a.bin at the snapshot reads back')
  t.equal(await get('b.bin', '--at', 's1'), sha256(content.B), 'the removed b.bin at the snapshot reads back')
  t.equal(Number((await json(node, 'volume', 'gc', '/cg')).chunksRemoved), 0, 'a second run finds nothing')

  // Without the snapshot, A and B are needed by nothing.
  await cli(node, 'snap', 'rm', '/cg', 's1')
  t.equal(Number((await json(node, 'volume', 'gc', '/cg')).chunksRemoved), 6, 'the chunks of A and B')
  t.equal(await get('a.bin'), sha256(content.C), 'the newest a.bin still reads back')

  // The same content as a collected file: the node must not deduplicate against chunks it
  // removed; the upload sends them again and the file reads back.
  const again = await put('a-again.bin', content.A)
  t.equal(again.sha256, sha256(content.A))
  t.equal(await get('a-again.bin'), sha256(content.A), 'content uploaded again after its chunks were collected reads back')
  // Content deduplicated against a live file is not sent again, and survives collection.
  const dup = await put('c-copy.bin', content.C)
  t.equal(Number(dup.chunksDeduplicated), 3, 'the copy of C deduplicated its three chunks')
  await cli(node, 'file', 'rm', '/cg/f/a.bin')
  t.equal(Number((await json(node, 'volume', 'gc', '/cg')).chunksRemoved), 0, 'the chunks of C are still referred to by the copy')
  t.equal(await get('c-copy.bin'), sha256(content.C), 'the copy reads back')

  // An upload that deduplicated against a chunk which GC then removed, before the upload's
  // commit: the commit is refused (at every node alike), nothing is stored, and a new upload works.
  const files = createClient(FileService, node.api)
  t.teardown(() => files.close())
  await cli(node, 'file', 'rm', '/cg/f/a-again.bin') // content A is now needed by nothing
  let release!: () => void
  const held = new Promise<void>((r) => (release = r))
  let sentFirst!: () => void
  const firstSent = new Promise<void>((r) => (sentFirst = r))
  const racing = randomBytes(CHUNK)
  async function* upload(): AsyncGenerator<MessageInitShape<typeof PutFileRequestSchema>> {
    yield { msg: { case: 'header', value: { path: '/cg/f/race.bin', size: BigInt(2 * CHUNK) } } }
    yield { msg: { case: 'data', value: content.A.subarray(0, CHUNK) } }
    sentFirst()
    await held
    yield { msg: { case: 'data', value: racing } }
  }
  const call = files.put(upload()).then(() => undefined, (err: unknown) => err)
  await firstSent
  // Give the node the chunk (it deduplicates it against A's, still the volume's), then collect.
  await new Promise((r) => setTimeout(r, 500))
  t.equal(Number((await json(node, 'volume', 'gc', '/cg')).chunksRemoved), 3, "A's chunks are collected while the upload holds one of them")
  release()
  const refused = await call
  t.ok(isFabricError(refused, 'FAILED_PRECONDITION'), `the commit is refused (${String(refused)})`)
  t.match(String((refused as Error).message), /garbage-collected while the upload ran; upload the file again/)
  t.equal((await runCli(['file', 'stat', '/cg/f/race.bin', '--server', node.api])).code, 3, 'nothing was stored')
  const retried = await put('race.bin', Buffer.concat([content.A.subarray(0, CHUNK), racing]))
  t.equal(await get('race.bin'), retried.sha256, 'uploading it again works')
})

t.test('chunks of an upload that never committed go once the grace period is over', async (t) => {
  const node = await startNode(t, { config: { gc: { unclaimed_chunk_grace: '3s' } } })
  await cli(node, 'volume', 'create', '/up')
  await cli(node, 'ds', 'create', '/up/f', '--kind', 'files')
  const files = createClient(FileService, node.api)
  t.teardown(() => files.close())
  const data = randomBytes(2 * CHUNK)
  type PutMsg = MessageInitShape<typeof PutFileRequestSchema>
  const log0 = await logBytes(node, '/up')
  async function* broken(): AsyncGenerator<PutMsg> {
    yield { msg: { case: 'header', value: { path: '/up/f/partial.bin' } } }
    yield { msg: { case: 'data', value: data.subarray(0, CHUNK) } }
    yield { msg: { case: 'data', value: data.subarray(CHUNK) } }
    // Wait until the node has stored both chunks in the stream, then fail the sender.
    await poll('the node to store the chunks', async () => (await logBytes(node, '/up')) - log0 >= 2 * CHUNK)
    throw new Error('the sender gives up')
  }
  const outcome = await files.put(broken()).then(() => 'completed', (err: unknown) => err)
  t.ok(outcome instanceof Error && !isFabricError(outcome), 'the upload failed for the sender')
  t.equal((await runCli(['file', 'stat', '/up/f/partial.bin', '--server', node.api])).code, 3, 'no file was committed')
  // Within the grace period the chunks are left alone (an upload may still be going on)...
  const early = await json(node, 'volume', 'gc', '/up')
  t.equal(Number(early.chunksRemoved), 0, 'within the grace period: kept')
  // ...after it they go.
  await new Promise((r) => setTimeout(r, 3_500))
  const late = await json(node, 'volume', 'gc', '/up')
  t.equal(Number(late.chunksRemoved), 2, 'after the grace period: both chunks removed')
  t.ok((await logBytes(node, '/up')) - log0 < CHUNK, 'the chunk stream gave their bytes back')
})

t.test('chunk GC at the home removes the chunks from a replica site too', async (t) => {
  const leafPort = await freePort()
  const hub = await startNode(t, { config: { node: { site: 'hub' }, nats: { leafnode_listen: `127.0.0.1:${leafPort}` } } })
  const edge = await startNode(t, { config: { node: { site: 'edge' }, nats: { hub_urls: [`nats-leaf://127.0.0.1:${leafPort}`] } } })
  await poll('the edge to know the catalog home', async () => ((await json(edge, 'volume', 'ls').catch(() => [])) as Array<{ path: string; home: string }>).find((v) => v.path === '/' && v.home === 'hub'), 30_000, 200)
  await cli(hub, 'volume', 'create', '/plant', '--home', 'edge', '--replicas', 'hub')
  await cli(hub, 'ds', 'create', '/plant/f', '--kind', 'files')
  await poll('the edge to know /plant/f', async () => (await runCli(['ds', 'stat', '/plant/f', '--server', edge.api])).code === 0, 30_000, 200)
  const dir = await tempDir(t)
  const keep = randomBytes(2 * CHUNK)
  const drop = randomBytes(4 * CHUNK)
  await writeFile(path.join(dir, 'keep'), keep)
  await writeFile(path.join(dir, 'drop'), drop)
  await cli(edge, 'file', 'put', path.join(dir, 'keep'), '/plant/f/keep.bin')
  const last = await json(edge, 'file', 'put', path.join(dir, 'drop'), '/plant/f/drop.bin')
  await poll('the hub to apply both files', async () => Number((await json(hub, 'volume', 'stat', '/plant')).appliedSeq) >= Number(last.version), 30_000, 200)
  const hubBefore = await logBytes(hub, '/plant')
  await cli(edge, 'file', 'rm', '/plant/f/drop.bin')

  // At the hub (a replica) gc collects versions only; at the edge (the home) chunks too.
  t.equal(Number((await json(hub, 'volume', 'gc', '/plant')).chunksRemoved), 0, 'a replica does not decide about chunks')
  t.equal(Number((await json(edge, 'volume', 'gc', '/plant')).chunksRemoved), 4, 'the home removes the four chunks of drop.bin')
  await poll("the hub's copy of the chunk stream to give their bytes back", async () => hubBefore - (await logBytes(hub, '/plant')) > 3.5 * CHUNK, 30_000, 200)
  await cli(hub, 'file', 'get', '/plant/f/keep.bin', path.join(dir, 'back'))
  t.equal(sha256(await readFile(path.join(dir, 'back'))), sha256(keep), 'the file that stays reads back at the replica')
})
