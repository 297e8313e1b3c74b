/** Files datasets as a user sees them: uploads that round-trip, deduplicate, keep versions, and fail cleanly. */
import t from 'tap'
import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { createClient } from '../node/api/index.ts'
import { isFabricError, type FabricError } from '../node/errors/index.ts'
import { FileService } from '../proto/gen/fabric/v1/file_pb.ts'
import { NamespaceService } from '../proto/gen/fabric/v1/namespace_pb.ts'
import { CLI, poll, ROOT, runCli, runCliOk, startNode, type CliResult, type NodeProcess } from './harness/index.ts'

const KiB = 1024
const CHUNK = 256 * KiB
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')
const chunksOf = (size: number) => Math.max(1, Math.ceil(size / CHUNK))

/** What the helpers need of a test. */
type Asserts = Pick<typeof t, 'equal' | 'ok' | 'notOk' | 'same'>

let node: NodeProcess
let files: ReturnType<typeof createClient<typeof FileService>>
let ns: ReturnType<typeof createClient<typeof NamespaceService>>

/** The CLI against the shared node. */
const cli = (...args: string[]): Promise<CliResult> => runCli([...args, '-s', node.api])

/** The CLI with -o json; fails the test unless it exits 0. */
async function cliJson<T = any>(t: Asserts, ...args: string[]): Promise<T> {
  const r = await cli(...args, '-o', 'json')
  t.equal(r.code, 0, `fabric ${args.join(' ')} exits 0 ${r.stderr}`)
  return JSON.parse(r.stdout) as T
}

/** The CLI with stdout kept as bytes (runCli decodes it as UTF-8). */
function cliBytes(args: string[]): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args, '-s', node.api], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    const out: Buffer[] = []
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => out.push(d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    child.once('error', reject)
    child.once('close', (code) => {
      clearTimeout(timer)
      resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr })
    })
  })
}

async function localFile(name: string, content: Uint8Array): Promise<string> {
  const file = path.join(node.dir, name)
  await writeFile(file, content)
  return file
}

const dsStat = (t: Asserts, ds: string) => cliJson<{ count: number; bytes: number }>(t, 'ds', 'stat', ds)
/** The same over gRPC (cheaper than a CLI process, for the checks around the one under test). */
async function count(ds: string): Promise<{ count: number; bytes: number }> {
  const s = (await ns.getDataset({ path: ds })).stats
  return { count: Number(s?.count ?? 0n), bytes: Number(s?.bytes ?? 0n) }
}
const listed = async (p: string, atSeq = 0) => (await files.list({ path: p, atSeq: BigInt(atSeq) })).files.map((f) => f.path)
const logBytes = async (volume: string) => Number((await ns.getVolume({ path: volume })).stats?.logBytes ?? 0n)
const volumeLogBytes = async (t: Asserts, volume: string) => (await cliJson<{ logBytes: number }>(t, 'volume', 'stat', volume)).logBytes

/** Calls of a gRPC method the node has finished serving (any status), from its /metrics. */
async function callsServed(method: string): Promise<number> {
  const text = await (await fetch(`http://${node.http}/metrics`)).text()
  let n = 0
  for (const m of text.matchAll(/^fabric_grpc_requests_total\{([^}]*)\} (\d+)$/gm)) if (m[1]!.includes(`method="${method}"`)) n += Number(m[2])
  return n
}

type PutMsg = { msg: { case: 'header'; value: { path: string; size?: bigint; sha256?: string } } | { case: 'data'; value: Uint8Array } | { case: 'trailer'; value: { sha256: string } } }

async function* upload(header: { path: string; size?: bigint; sha256?: string }, pieces: Uint8Array[], trailer?: string): AsyncGenerator<PutMsg> {
  yield { msg: { case: 'header', value: header } }
  for (const p of pieces) yield { msg: { case: 'data', value: p } }
  if (trailer !== undefined) yield { msg: { case: 'trailer', value: { sha256: trailer } } }
}

/** Pieces of at most `size` bytes. */
function split(content: Uint8Array, size = CHUNK): Uint8Array[] {
  const out: Uint8Array[] = []
  for (let i = 0; i < content.length; i += size) out.push(content.subarray(i, i + size))
  return out
}

t.before(async () => {
  node = await startNode(t)
  files = createClient(FileService, node.api)
  ns = createClient(NamespaceService, node.api)
  t.teardown(() => files.close())
  t.teardown(() => ns.close())
  const must = (args: string[]) => runCliOk([...args, '-s', node.api])
  await must(['volume', 'create', '/acme'])
  await Promise.all([
    ...['img', 'dedup', 'versions', 'partial', 'bad'].map((name) => must(['ds', 'create', `/acme/${name}`, '--kind', 'files'])),
    must(['ds', 'create', '/acme/temps', '--kind', 'table']),
  ])
})

t.test('a multi-chunk file round-trips through the CLI byte for byte', async (t) => {
  const size = 3 * 1024 * KiB + 12_345 // 13 chunks, the last one short
  const content = randomBytes(size)
  const sha = sha256(content)
  const before = await count('/acme/img')
  const local = await localFile('round-trip.bin', content)

  const put = await cliJson(t, 'file', 'put', local, '/acme/img/cam1/a.bin')
  t.match(put, { path: '/acme/img/cam1/a.bin', dataset: '/acme/img', size, sha256: sha, chunks: chunksOf(size), chunksDeduplicated: 0 })
  t.ok(put.version > 0, 'has a version (log position)')

  const back = path.join(node.dir, 'round-trip.out')
  const [get, stat, ls, after] = await Promise.all([
    cli('file', 'get', '/acme/img/cam1/a.bin', back),
    cliJson(t, 'file', 'stat', '/acme/img/cam1/a.bin'),
    cliJson<Array<{ path: string; size: number; sha256: string }>>(t, 'file', 'ls', '/acme/img'),
    dsStat(t, '/acme/img'),
  ])
  t.equal(get.code, 0, get.stderr)
  const got = await readFile(back)
  t.equal(got.length, size, 'same size')
  t.ok(got.equals(content), 'identical bytes')
  t.notOk(existsSync(`${back}.fabric-partial`), 'no partial file left next to it')

  t.match(stat, { path: '/acme/img/cam1/a.bin', dataset: '/acme/img', size, sha256: sha, version: put.version, chunks: chunksOf(size) })
  t.ok(Math.abs(Date.parse(stat.updatedAt) - Date.now()) < 120_000, 'updatedAt is the time of the put')

  t.same(ls.map((f) => f.path), ['/acme/img/cam1/a.bin'], 'ls of the dataset lists it')
  t.match(ls[0], { size, sha256: sha, version: put.version })
  t.same(await listed('/acme/img/cam1'), ['/acme/img/cam1/a.bin'], 'a list of a directory in it has it')

  t.equal(after.count, before.count + 1, 'ds stat counts the file')
  t.equal(after.bytes, before.bytes + size, 'ds stat counts its bytes')
})

t.test('the same content under another name is deduplicated', async (t) => {
  const size = 2 * 1024 * KiB + 100 // 9 chunks
  const content = randomBytes(size)
  const local = await localFile('dedup.bin', content)

  const log0 = await volumeLogBytes(t, '/acme')
  const first = await cliJson(t, 'file', 'put', local, '/acme/dedup/one.bin')
  t.equal(first.chunksDeduplicated, 0, 'new content: nothing deduplicated')
  const log1 = await volumeLogBytes(t, '/acme')
  t.ok(log1 - log0 >= size, `the first upload writes the content to the log (+${log1 - log0} bytes)`)

  const second = await cliJson(t, 'file', 'put', local, '/acme/dedup/two.bin')
  t.equal(second.chunks, chunksOf(size))
  t.equal(second.chunksDeduplicated, chunksOf(size), 'every chunk deduplicated')
  t.equal(second.sha256, first.sha256)
  const log2 = await volumeLogBytes(t, '/acme')
  t.ok(log2 - log1 < size / 20, `the second upload adds little to the log (+${log2 - log1} bytes for a ${size}-byte file)`)

  const back = await cliBytes(['file', 'get', '/acme/dedup/two.bin', '-'])
  t.equal(back.code, 0, back.stderr)
  t.ok(back.stdout.equals(content), 'the deduplicated copy reads back the same bytes')

  // Repeated chunks inside one file are stored once too.
  const repeated = Buffer.concat([randomBytes(CHUNK), randomBytes(CHUNK)])
  const four = Buffer.concat([repeated, repeated])
  const r = await cliJson(t, 'file', 'put', await localFile('repeat.bin', four), '/acme/dedup/repeat.bin')
  t.equal(r.chunks, 4)
  t.equal(r.chunksDeduplicated, 2, 'the second copy of each chunk is not sent again')
  const rb = await cliBytes(['file', 'get', '/acme/dedup/repeat.bin', '-'])
  t.ok(rb.stdout.equals(four), 'and the file reads back whole')
})

t.test('overwrites keep old versions readable, also after a remove', async (t) => {
  const p = '/acme/versions/report.bin'
  const v1 = randomBytes(300 * KiB)
  const v2 = randomBytes(70 * KiB)
  const before = await count('/acme/versions')
  const [l1, l2] = await Promise.all([localFile('v1.bin', v1), localFile('v2.bin', v2)])
  const put1 = await cliJson(t, 'file', 'put', l1, p)
  const put2 = await cliJson(t, 'file', 'put', l2, p)
  t.ok(put2.version > put1.version, 'a newer version')
  t.same(await count('/acme/versions'), { count: before.count + 1, bytes: before.bytes + v2.length }, 'an overwrite is still one file, of the new size')

  const [stat, latest, old, oldStat] = await Promise.all([
    cliJson(t, 'file', 'stat', p),
    cliBytes(['file', 'get', p, '-']),
    cliBytes(['file', 'get', p, '-', '--seq', String(put1.version)]),
    files.stat({ path: p, atSeq: BigInt(put1.version) }),
  ])
  t.match(stat, { sha256: sha256(v2), size: v2.length, version: put2.version }, 'stat shows the new version')
  t.ok(latest.stdout.equals(v2), 'get returns the new content')
  t.equal(old.code, 0, old.stderr)
  t.ok(old.stdout.equals(v1), 'get --seq <old version> returns the old content')
  t.match(oldStat.file, { sha256: sha256(v1), version: BigInt(put1.version) }, 'stat at the old version describes it')

  const rm = await cli('file', 'rm', p)
  t.equal(rm.code, 0, rm.stderr)
  t.match(rm.stdout, /^removed \/acme\/versions\/report\.bin \(version \d+\)/)
  const [gone, getGone, atV2, atV1] = await Promise.all([
    cli('file', 'stat', p),
    cli('file', 'get', p, path.join(node.dir, 'gone.out')),
    cliBytes(['file', 'get', p, '-', '--seq', String(put2.version)]),
    cliBytes(['file', 'get', p, path.join(node.dir, 'v1.out'), '--seq', String(put1.version)]),
  ])
  t.equal(gone.code, 3, 'stat after rm: NOT_FOUND (exit 3)')
  t.match(gone.stderr, /not found/)
  t.equal(getGone.code, 3, 'get after rm: exit 3')
  t.notOk(existsSync(path.join(node.dir, 'gone.out')), 'a failed get leaves no local file')
  t.equal(atV2.code, 0, atV2.stderr)
  t.ok(atV2.stdout.equals(v2), 'get --seq <before rm> still returns the content')
  t.equal(atV1.code, 0, atV1.stderr)
  t.ok((await readFile(path.join(node.dir, 'v1.out'))).equals(v1), 'and the version before that, into a local file')

  const again = await files.delete({ path: p }).catch((e: unknown) => e)
  t.ok(isFabricError(again, 'NOT_FOUND'), 'a second remove: NOT_FOUND')
  t.same(await listed('/acme/versions'), [], 'the list no longer has it')
  t.same(await listed('/acme/versions', put2.version), [p], 'the list as of before the remove has it')
  t.same(await count('/acme/versions'), before, 'ds stat no longer counts it')
  const beforeFirst = await files.stat({ path: p, atSeq: BigInt(put1.version - 1) }).catch((e: unknown) => e)
  t.ok(isFabricError(beforeFirst, 'NOT_FOUND'), 'stat as of before the first put: NOT_FOUND')
})

t.test('an upload that does not complete leaves no file behind', async (t) => {
  const before = await count('/acme/partial')
  const content = randomBytes(3 * CHUNK + 1000)

  /** Sends the header (no size) and two chunks of new content, then waits until `hold` settles. */
  async function* stalled(p: string, hold: Promise<void>, data = content): AsyncGenerator<PutMsg> {
    yield { msg: { case: 'header', value: { path: p } } }
    yield { msg: { case: 'data', value: data.subarray(0, CHUNK) } }
    yield { msg: { case: 'data', value: data.subarray(CHUNK, 2 * CHUNK) } }
    await hold
  }

  /** Starts an upload that stalls after two chunks, waits until the node stored them, then breaks it. */
  async function broken(t: Asserts, p: string, how: 'abort' | 'throw') {
    const before = await count('/acme/partial')
    const served = await callsServed('fabric.v1.FileService/Put')
    const log0 = await logBytes('/acme')
    const controller = new AbortController()
    let fail!: (err: Error) => void
    const hold = new Promise<void>((_, reject) => (fail = reject))
    const call = files.put(stalled(p, hold, randomBytes(2 * CHUNK)), how === 'abort' ? { signal: controller.signal } : {}).then(
      () => 'completed',
      (err: unknown) => err,
    )
    await poll('the node to store the first chunks', async () => (await logBytes('/acme')) - log0 >= CHUNK)
    if (how === 'abort') controller.abort()
    else fail(new Error('disk read error on the sender'))
    const outcome = await call
    if (how === 'abort') t.ok(isFabricError(outcome), `the upload fails for the client (${String(outcome)})`)
    else t.ok(outcome instanceof Error && outcome.message === 'disk read error on the sender', 'the sender gets its own error back')
    if (how === 'abort') fail(new Error('released'))
    await poll('the node to finish the call', async () => (await callsServed('fabric.v1.FileService/Put')) > served)
    const stat = await files.stat({ path: p }).catch((e: unknown) => e)
    const seen = isFabricError(stat) ? stat.code : `a file of ${(stat as { file?: { size: bigint } }).file?.size} bytes`
    t.ok(isFabricError(stat, 'NOT_FOUND'), `stat of ${p}: NOT_FOUND (got ${seen})`)
    t.notOk((await listed('/acme/partial')).includes(p), 'the list does not have it')
    t.same(await count('/acme/partial'), before, 'ds stat unchanged')
  }

  await t.test('cancelled by the client (AbortSignal)', (t) => broken(t, '/acme/partial/cancelled.bin', 'abort'))
  await t.test('the sender fails mid-upload (content iterator throws)', (t) => broken(t, '/acme/partial/failed.bin', 'throw'))

  await t.test('a complete upload of the same path afterwards succeeds', async (t) => {
    const p = '/acme/partial/cancelled.bin'
    const existed = (await listed('/acme/partial')).length
    const r = await files.put(upload({ path: p, size: BigInt(content.length) }, split(content), sha256(content)))
    t.equal(r.file?.sha256, sha256(content))
    t.equal(Number(r.file?.size), content.length)
    const back = await cliBytes(['file', 'get', p, '-'])
    t.ok(back.stdout.equals(content), 'and it reads back whole')
    t.same((await listed('/acme/partial')).length, Math.max(existed, 1), 'one file at that path')
  })
})

t.test('bad uploads get a clear error and change nothing', async (t) => {
  const original = randomBytes(100 * KiB)
  const keep = '/acme/bad/keep.bin'
  const put = await cliJson(t, 'file', 'put', await localFile('keep.bin', original), keep)
  const before = await count('/acme/bad')
  const content = randomBytes(CHUNK + 500)

  const rejects = async (what: string, reqs: AsyncIterable<PutMsg>, code: FabricError['code'], message: RegExp) => {
    const err = await files.put(reqs).then(
      () => undefined,
      (e: unknown) => e,
    )
    t.ok(isFabricError(err, code), `${what}: ${code} (got ${String(err)})`)
    t.match((err as Error | undefined)?.message, message, `${what}: the message says why`)
  }

  await rejects('size in the header does not match', upload({ path: '/acme/bad/short.bin', size: 999_999n }, split(content)), 'INVALID_ARGUMENT', new RegExp(`${content.length}.*999999|999999.*${content.length}`))
  await rejects('sha256 in the trailer does not match', upload({ path: '/acme/bad/hash.bin' }, split(content), '0'.repeat(64)), 'INVALID_ARGUMENT', /sha256/)
  await rejects('sha256 in the header does not match', upload({ path: '/acme/bad/hash2.bin', sha256: 'f'.repeat(64) }, split(content)), 'INVALID_ARGUMENT', /sha256/)
  await rejects('a malformed sha256', upload({ path: '/acme/bad/hash3.bin', sha256: 'xyz' }, split(content)), 'INVALID_ARGUMENT', /sha256/)
  await rejects('a data message over 256 KiB', upload({ path: '/acme/bad/big.bin' }, [randomBytes(CHUNK + 1)]), 'INVALID_ARGUMENT', /262144/)
  await rejects(
    'data before the header',
    (async function* (): AsyncGenerator<PutMsg> {
      yield { msg: { case: 'data', value: content } }
    })(),
    'INVALID_ARGUMENT',
    /header/,
  )
  for (const p of ['/acme/bad/short.bin', '/acme/bad/hash.bin', '/acme/bad/hash2.bin', '/acme/bad/hash3.bin', '/acme/bad/big.bin']) {
    const e = await files.stat({ path: p }).catch((x: unknown) => x)
    t.ok(isFabricError(e, 'NOT_FOUND'), `nothing stored at ${p}`)
  }

  // A failed overwrite leaves the existing file as it was.
  await rejects('an overwrite with the wrong size', upload({ path: keep, size: 1n }, split(content)), 'INVALID_ARGUMENT', /expected 1\b/)
  await rejects('an overwrite with the wrong sha256', upload({ path: keep }, split(content), 'a'.repeat(64)), 'INVALID_ARGUMENT', /sha256/)
  const kept = await cliJson(t, 'file', 'stat', keep)
  t.match(kept, { sha256: sha256(original), size: original.length, version: put.version }, 'the existing file is unchanged')

  const local = await localFile('small.bin', randomBytes(10))
  const names = ['/acme/bad/../x', '/acme/bad/a//b', '/acme/bad/.hidden', '/acme/bad/a/./b', '/acme/bad/', '/acme/bad/-dash', 'relative/x']
  const results = await Promise.all([
    ...names.map((bad) => cli('file', 'put', local, bad)),
    cli('file', 'put', local, '/acme/temps/x.bin'),
    cli('file', 'put', local, '/nowhere/x.bin'),
    cli('file', 'put', path.join(node.dir, 'no-such-file'), '/acme/bad/x.bin'),
  ])
  names.forEach((bad, i) => {
    const r = results[i]!
    t.equal(r.code, 2, `put to ${JSON.stringify(bad)}: exit 2 (INVALID_ARGUMENT) ${r.stderr.trim()}`)
    t.match(r.stderr, /^fabric: file path .+/, 'with a message naming the path')
  })
  const [table, nowhere, missing] = results.slice(names.length) as [CliResult, CliResult, CliResult]
  t.equal(table.code, 8, 'put into a table dataset: exit 8 (FAILED_PRECONDITION)')
  t.match(table.stderr, /table dataset/)
  t.equal(nowhere.code, 3, 'a path under no dataset: exit 3 (NOT_FOUND)')
  t.match(nowhere.stderr, /no dataset holds \/nowhere\/x\.bin/)
  t.equal(missing.code, 2, 'a missing local file: exit 2')
  t.match(missing.stderr, /no such file/)

  t.same(await count('/acme/bad'), before, 'ds stat unchanged')
  t.same(await listed('/acme/bad'), [keep], 'only the original file is listed')
  const back = await files.stat({ path: keep })
  t.equal(back.file?.sha256, sha256(original), 'the original still has its sha256')
})

t.test('get to "-" writes the bytes to stdout', async (t) => {
  const content = randomBytes(CHUNK * 2 + 77)
  // Bytes that are not valid UTF-8 and a NUL, to be sure nothing is decoded on the way.
  content.set([0xff, 0xfe, 0x00, 0xc3, 0x28], 0)
  const put = await cliJson(t, 'file', 'put', await localFile('stdout.bin', content), '/acme/img/stdout.bin')
  const r = await cliBytes(['file', 'get', '/acme/img/stdout.bin', '-'])
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout.length, content.length, 'exactly the file size, nothing else on stdout')
  t.ok(r.stdout.equals(content), 'the same bytes')
  t.equal(sha256(r.stdout), put.sha256)
  t.equal(r.stderr, '', 'nothing on stderr')
})
