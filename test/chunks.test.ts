/** The chunk store: bytes in pack files, located through LevelDB entries the caller commits. */
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { appendFile, readdir, stat, truncate } from 'node:fs/promises'
import path from 'node:path'
import { isFabricError } from '../node/errors/index.ts'
import { silentLogger } from '../node/log/index.ts'
import { ChunkStore, Store } from '../node/store/index.ts'
import { packName } from '../node/store/chunks.ts'
import { tempDir, type Teardown } from './harness/index.ts'

const log = silentLogger()

interface Chunk {
  sha256: string
  data: Uint8Array
}

const chunkOf = (data: Uint8Array): Chunk => ({ sha256: createHash('sha256').update(data).digest('hex'), data })
const randomChunk = (bytes: number): Chunk => chunkOf(new Uint8Array(randomBytes(bytes)))

/** A started Store and ChunkStore on `dir`, stopped at teardown (stop is idempotent, so tests may stop first). */
async function open(t: Teardown, dir: string, packBytes?: number, compactMinAgeMs?: number): Promise<{ store: Store; chunks: ChunkStore }> {
  const store = new Store({ dir: path.join(dir, 'db'), log })
  await store.start()
  const chunks = new ChunkStore({ dir: path.join(dir, 'packs'), store, log, ...(packBytes === undefined ? {} : { packBytes }), ...(compactMinAgeMs === undefined ? {} : { compactMinAgeMs }) })
  await chunks.start()
  t.teardown(async () => {
    await chunks.stop()
    await store.stop()
  })
  return { store, chunks }
}

/** Stages and commits, as a caller does. */
async function put(store: Store, chunks: ChunkStore, list: Chunk[]): Promise<void> {
  await store.batch(await chunks.stage(list), { sync: true })
}

async function packs(dir: string): Promise<string[]> {
  return (await readdir(path.join(dir, 'packs'))).filter((n) => n.endsWith('.pack')).sort()
}

async function assertReadable(t: { ok(value: unknown, message: string): unknown }, chunks: ChunkStore, list: Chunk[]): Promise<void> {
  for (const c of list) {
    const data = await chunks.read(c.sha256)
    t.ok(data, `chunk ${c.sha256.slice(0, 8)} (${c.data.byteLength} bytes) is readable`)
    t.ok(data && Buffer.from(data).equals(Buffer.from(c.data)), `chunk ${c.sha256.slice(0, 8)} has its bytes`)
  }
}

t.test('staged and committed chunks read back, the empty one included; repeats are stored once', async (t) => {
  const dir = await tempDir(t)
  const { store, chunks } = await open(t, dir)
  const list = [randomChunk(1), randomChunk(1000), chunkOf(new Uint8Array(0)), randomChunk(256 * 1024)]
  const ops = await chunks.stage([...list, list[1]!, list[3]!])
  t.equal(ops.length, list.length, 'one index entry per distinct chunk')
  await store.batch(ops, { sync: true })
  await assertReadable(t, chunks, list)
  for (const c of list) t.ok(await chunks.has(c.sha256))
  const empty = await chunks.read(list[2]!.sha256)
  t.equal(empty?.byteLength, 0)
  t.equal(await chunks.bytes(), 1 + 1000 + 0 + 256 * 1024, 'each byte written once')
  t.equal(await chunks.read(randomChunk(8).sha256), undefined, 'an unknown chunk reads as undefined')
})

t.test('a chunk staged but not committed is invisible', async (t) => {
  const dir = await tempDir(t)
  const { store, chunks } = await open(t, dir)
  const committed = randomChunk(100)
  const staged = randomChunk(100)
  await put(store, chunks, [committed])
  const ops = await chunks.stage([staged])
  t.equal(ops.length, 1)
  t.equal(await chunks.has(staged.sha256), false)
  t.equal(await chunks.read(staged.sha256), undefined)
  t.equal(await chunks.bytes(), 200, 'its bytes are in the pack all the same')
  await assertReadable(t, chunks, [committed])
})

t.test('packs rotate at packBytes and chunks read across them', async (t) => {
  const dir = await tempDir(t)
  const { store, chunks } = await open(t, dir, 100)
  const list = Array.from({ length: 7 }, () => randomChunk(40))
  const big = randomChunk(250)
  await put(store, chunks, list.slice(0, 3)) // one call spanning two packs
  await put(store, chunks, [...list.slice(3), big])
  t.same(await packs(dir), ['00000001.pack', '00000002.pack', '00000003.pack', '00000004.pack', '00000005.pack'])
  for (const name of (await packs(dir)).slice(0, 3)) t.equal((await stat(path.join(dir, 'packs', name))).size, 80, `${name} holds two chunks`)
  t.equal((await stat(path.join(dir, 'packs', '00000004.pack'))).size, 40)
  t.equal((await stat(path.join(dir, 'packs', '00000005.pack'))).size, 250, 'a chunk larger than packBytes gets a pack of its own')
  await assertReadable(t, chunks, [...list, big])
})

t.test('after a restart old chunks read and new ones go after a torn tail', async (t) => {
  const dir = await tempDir(t)
  const before = [randomChunk(3000), randomChunk(17)]
  const first = await open(t, dir)
  await put(first.store, first.chunks, before)
  await first.chunks.stop()
  await first.chunks.stop()
  await first.store.stop()

  // A crash in the middle of an append leaves bytes no index entry points at.
  const last = path.join(dir, 'packs', (await packs(dir)).at(-1)!)
  await appendFile(last, randomBytes(555))

  const second = await open(t, dir)
  await assertReadable(t, second.chunks, before)
  const after = [randomChunk(4096), randomChunk(1)]
  await put(second.store, second.chunks, after)
  await assertReadable(t, second.chunks, [...before, ...after])
  t.equal(await second.chunks.bytes(), 3000 + 17 + 555 + 4096 + 1, 'the new chunks are appended after the torn tail')
  t.same(await packs(dir), ['00000001.pack'])
})

t.test('concurrent stage calls all land intact, with reads going on meanwhile', async (t) => {
  const dir = await tempDir(t)
  const { store, chunks } = await open(t, dir, 64 * 1024)
  const early = Array.from({ length: 5 }, () => randomChunk(5000))
  await put(store, chunks, early)
  const calls = Array.from({ length: 20 }, (_, i) => Array.from({ length: 1 + (i % 4) }, () => randomChunk(1 + ((i * 7919) % 20000))))
  const shared = randomChunk(999) // passed by several callers at once
  for (const call of calls.slice(0, 5)) call.push(shared)
  const reads = Promise.all(Array.from({ length: 50 }, (_, i) => chunks.read(early[i % early.length]!.sha256)))
  await Promise.all(calls.map((call) => put(store, chunks, call)))
  for (const [i, data] of (await reads).entries()) {
    t.ok(data && Buffer.from(data).equals(Buffer.from(early[i % early.length]!.data)), `read ${i} during the appends`)
  }
  await assertReadable(t, chunks, [...early, ...calls.flat()])
  t.ok((await packs(dir)).length > 1, 'the appends spanned several packs')
})

t.test('an index entry pointing past the end of its pack is an internal error naming both', async (t) => {
  const dir = await tempDir(t)
  const c = randomChunk(1000)
  const first = await open(t, dir)
  await put(first.store, first.chunks, [c])
  await first.chunks.stop()
  await first.store.stop()
  await truncate(path.join(dir, 'packs', packName(1)), 500)

  const second = await open(t, dir)
  const err = await second.chunks.read(c.sha256).then(() => undefined, (e: unknown) => e)
  t.ok(isFabricError(err, 'INTERNAL'), 'an INTERNAL FabricError')
  t.match((err as Error).message, c.sha256)
  t.match((err as Error).message, packName(1))
})

t.test('stage refuses a malformed hash and works only while started', async (t) => {
  const dir = await tempDir(t)
  const { chunks } = await open(t, dir)
  await t.rejects(chunks.stage([{ sha256: '../x', data: new Uint8Array(1) }]), { name: 'FabricError', code: 'INVALID_ARGUMENT' })
  await chunks.stop()
  await t.rejects(chunks.stage([randomChunk(1)]), { name: 'FabricError', code: 'UNAVAILABLE' })
})

t.test('sweep drops what the caller no longer needs; compact gives the space back and keeps the rest readable', async (t) => {
  const dir = await tempDir(t)
  // Packs of about four chunks; compaction may touch any pack but the one being appended to.
  const { store, chunks } = await open(t, dir, 4 * 10_000, 0)
  const list = Array.from({ length: 12 }, () => randomChunk(10_000))
  for (const c of list) await put(store, chunks, [c])
  // Bytes staged but never indexed (an upload that failed) are dead space too.
  await chunks.stage([randomChunk(10_000)])
  const bytesBefore = await chunks.bytes()
  const keep = new Set([list[0]!, list[5]!, list[11]!].map((c) => c.sha256))
  const seen: number[] = []
  const dropped = await chunks.sweep((sha256, stagedMs) => {
    seen.push(stagedMs)
    return keep.has(sha256)
  })
  t.equal(dropped, 9, 'nine index entries dropped')
  t.ok(seen.every((ms) => ms > Date.now() - 60_000 && ms <= Date.now()), 'the keep test is told when each chunk was staged')
  for (const c of list) t.equal(chunks.has(c.sha256), keep.has(c.sha256), `chunk ${c.sha256.slice(0, 8)} ${keep.has(c.sha256) ? 'kept' : 'dropped'}`)

  const { packs: compacted, bytesReclaimed } = await chunks.compact()
  t.ok(compacted >= 2, `packs rewritten (${compacted})`)
  t.ok(bytesReclaimed >= 8 * 10_000, `dead bytes given back (${bytesReclaimed})`)
  t.ok((await chunks.bytes()) < bytesBefore - 7 * 10_000, 'the pack files are smaller')
  await assertReadable(t, chunks, list.filter((c) => keep.has(c.sha256)))
  t.same(await chunks.compact(), { packs: 0, bytesReclaimed: 0 }, 'a second compaction finds nothing to do')

  // A reopened store reads the moved chunks from their new place.
  await chunks.stop()
  await store.stop()
  const again = await open(t, dir, 4 * 10_000, 0)
  await assertReadable(t, again.chunks, list.filter((c) => keep.has(c.sha256)))
})

t.test('a pack written to recently is not compacted', async (t) => {
  const dir = await tempDir(t)
  const { store, chunks } = await open(t, dir, 2 * 10_000)
  const list = Array.from({ length: 6 }, () => randomChunk(10_000))
  for (const c of list) await put(store, chunks, [c])
  await chunks.sweep(() => false)
  t.same(await chunks.compact(), { packs: 0, bytesReclaimed: 0 }, 'within the default hour nothing is rewritten')
})

t.test('reads racing a compaction find the chunk at its new place', async (t) => {
  const dir = await tempDir(t)
  const { store, chunks } = await open(t, dir, 3 * 20_000, 0)
  const list = Array.from({ length: 9 }, () => randomChunk(20_000))
  for (const c of list) await put(store, chunks, [c])
  const survivors = [list[0]!, list[3]!, list[6]!]
  await chunks.sweep((sha) => survivors.some((c) => c.sha256 === sha))
  const reads = Promise.all(Array.from({ length: 200 }, (_, i) => chunks.read(survivors[i % 3]!.sha256)))
  const compacting = chunks.compact()
  const [got] = await Promise.all([reads, compacting])
  t.ok(got.every((d, i) => d && Buffer.from(d).equals(Buffer.from(survivors[i % 3]!.data))), 'every read returned the right bytes')
})
