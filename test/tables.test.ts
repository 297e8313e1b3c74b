/** Tables: JSON documents by key, with versions, conditions, atomic batches, import and export. */
import t from 'tap'
import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { createClient } from '../node/api/client.ts'
import { isFabricError, type FabricError } from '../node/errors/index.ts'
import { TableService } from '../proto/gen/fabric/v1/table_pb.ts'
import { runCli, startNode, type NodeProcess } from './harness/index.ts'

let node: NodeProcess
const cli = (...args: string[]) => runCli([...args, '--server', node.api])
const ok = async (...args: string[]) => {
  const r = await cli(...args)
  if (r.code !== 0) throw new Error(`${args.join(' ')} failed (${r.code}): ${r.stderr}`)
  return r.stdout
}
const json = async (...args: string[]) => JSON.parse(await ok(...args, '-o', 'json'))
const lines = async (...args: string[]) => (await ok(...args, '-o', 'json')).trim().split('\n').filter(Boolean).map((l) => JSON.parse(l))
const failure = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e as FabricError)

t.before(async () => {
  node = await startNode(t)
  await ok('volume', 'create', '/acme')
  await ok('ds', 'create', '/acme/temps', '--kind', 'table')
  await ok('ds', 'create', '/acme/events', '--kind', 'stream')
})

t.test('put, get, overwrite, delete; a read right after a write sees it', async (t) => {
  const v1 = (await json('table', 'put', '/acme/temps', 'sensor-1', '{"c":21.5,"ok":true}')).version
  const got = await json('table', 'get', '/acme/temps', 'sensor-1')
  t.same(got.value, { c: 21.5, ok: true })
  t.equal(got.version, v1)
  t.ok(Date.parse(got.updatedAt) > Date.now() - 60_000)
  const v2 = (await json('table', 'put', '/acme/temps', 'sensor-1', '{"c":22}')).version
  t.ok(v2 > v1, 'versions are increasing log positions')
  t.same((await json('table', 'get', '/acme/temps', 'sensor-1')).value, { c: 22 })
  t.same((await json('table', 'get', '/acme/temps', 'sensor-1', '--seq', String(v1))).value, { c: 21.5, ok: true }, 'read as of an earlier position')
  const del = await json('table', 'del', '/acme/temps', 'sensor-1')
  t.equal(del.existed, true)
  const gone = await cli('table', 'get', '/acme/temps', 'sensor-1')
  t.equal(gone.code, 3)
  t.match(gone.stderr, /key "sensor-1" not found in \/acme\/temps/)
  t.same((await json('table', 'get', '/acme/temps', 'sensor-1', '--seq', String(v2))).value, { c: 22 }, 'old versions stay readable')
  t.equal((await json('table', 'del', '/acme/temps', 'sensor-1')).existed, false, 'deleting a missing key is a no-op')
})

t.test('scan by prefix, by range, with a limit, and as of a position', async (t) => {
  for (const k of ['b/1', 'b/2', 'b/3', 'c/1', 'a/1']) await ok('table', 'put', '/acme/temps', k, JSON.stringify({ k }))
  const all = await lines('table', 'scan', '/acme/temps')
  t.same(all.map((r) => r.key), ['a/1', 'b/1', 'b/2', 'b/3', 'c/1'], 'key order')
  t.same((await lines('table', 'scan', '/acme/temps', '--prefix', 'b/')).map((r) => r.key), ['b/1', 'b/2', 'b/3'])
  t.same((await lines('table', 'scan', '/acme/temps', '--from', 'b/2', '--to', 'c/1')).map((r) => r.key), ['b/2', 'b/3'])
  t.same((await lines('table', 'scan', '/acme/temps', '--limit', '2')).map((r) => r.key), ['a/1', 'b/1'])
  const at = all.find((r) => r.key === 'b/3').version
  await ok('table', 'put', '/acme/temps', 'b/2', '{"changed":true}')
  await ok('table', 'del', '/acme/temps', 'b/1')
  await ok('table', 'put', '/acme/temps', 'b/0', '{"new":true}')
  const then = await lines('table', 'scan', '/acme/temps', '--prefix', 'b/', '--seq', String(at))
  t.same(then.map((r) => [r.key, r.value]), [['b/1', { k: 'b/1' }], ['b/2', { k: 'b/2' }], ['b/3', { k: 'b/3' }]], 'the table as it was')
  const now = await lines('table', 'scan', '/acme/temps', '--prefix', 'b/')
  t.same(now.map((r) => [r.key, r.value]), [['b/0', { new: true }], ['b/2', { changed: true }], ['b/3', { k: 'b/3' }]], 'and as it is')
  const table = await ok('table', 'scan', '/acme/temps', '--prefix', 'b/')
  t.match(table, /^KEY\s+VERSION\s+VALUE\nb\/0\s+\d+\s+\{"new":true\}/)
})

t.test('conditional writes compare and set on the version', async (t) => {
  const tb = createClient(TableService, node.api)
  t.teardown(() => tb.close())
  const created = await tb.put({ path: '/acme/temps', key: 'cas', json: '{"n":1}', expectedVersion: 0n })
  const exists = await failure(tb.put({ path: '/acme/temps', key: 'cas', json: '{"n":9}', expectedVersion: 0n }))
  t.ok(isFabricError(exists, 'FAILED_PRECONDITION'), 'version 0 means "must not exist"')
  t.match(exists!.message, /exists already/)
  const next = await tb.put({ path: '/acme/temps', key: 'cas', json: '{"n":2}', expectedVersion: created.version })
  const stale = await failure(tb.put({ path: '/acme/temps', key: 'cas', json: '{"n":3}', expectedVersion: created.version }))
  t.ok(isFabricError(stale, 'FAILED_PRECONDITION'))
  t.match(stale!.message, new RegExp(`at version ${next.version}; expected version ${created.version}`))
  t.equal(stale!.details.current, String(next.version))
  t.same(JSON.parse((await tb.get({ path: '/acme/temps', key: 'cas' })).row!.json), { n: 2 }, 'the losing write changed nothing')
  const r = await cli('table', 'put', '/acme/temps', 'cas', '{"n":4}', '--expect-version', '1')
  t.equal(r.code, 8, 'FAILED_PRECONDITION exit code')
})

t.test('a batch applies all of its operations or none', async (t) => {
  const tb = createClient(TableService, node.api)
  t.teardown(() => tb.close())
  await tb.put({ path: '/acme/temps', key: 'acct/a', json: '{"bal":100}' })
  const b = await tb.put({ path: '/acme/temps', key: 'acct/b', json: '{"bal":0}' })
  const failed = await failure(
    tb.batch({
      path: '/acme/temps',
      ops: [
        { key: 'acct/a', json: '{"bal":50}' },
        { key: 'acct/b', json: '{"bal":50}', expectedVersion: b.version + 1000n },
      ],
    }),
  )
  t.ok(isFabricError(failed, 'FAILED_PRECONDITION'), 'one failed condition fails the batch')
  t.same(JSON.parse((await tb.get({ path: '/acme/temps', key: 'acct/a' })).row!.json), { bal: 100 }, 'and nothing of it applied')
  const done = await tb.batch({
    path: '/acme/temps',
    ops: [
      { key: 'acct/a', json: '{"bal":50}' },
      { key: 'acct/b', json: '{"bal":50}', expectedVersion: b.version },
      { key: 'acct/c' },
    ],
  })
  const a = (await tb.get({ path: '/acme/temps', key: 'acct/a' })).row!
  const bb = (await tb.get({ path: '/acme/temps', key: 'acct/b' })).row!
  t.equal(a.version, done.version, 'one position for the whole batch')
  t.equal(bb.version, done.version)
  t.same(JSON.parse(bb.json), { bal: 50 })
  const dup = await failure(tb.batch({ path: '/acme/temps', ops: [{ key: 'x', json: '1' }, { key: 'x', json: '2' }] }))
  t.ok(isFabricError(dup, 'INVALID_ARGUMENT'))
  t.match(dup!.message, /appears twice/)
})

t.test('import a JSON-lines file in atomic batches and export it back', async (t) => {
  await ok('ds', 'create', '/acme/parts', '--kind', 'table')
  const docs = Array.from({ length: 2500 }, (_, i) => ({ id: `part-${String(i).padStart(5, '0')}`, weight: i / 10, tags: ['x', i % 7] }))
  const file = path.join(node.dir, 'parts.jsonl')
  await writeFile(file, `${docs.map((d) => JSON.stringify(d)).join('\n')}\n`)
  const r = await json('table', 'import', '/acme/parts', file, '--key', 'id')
  t.equal(r.imported, 2500)
  t.ok(r.batches >= 3, `several atomic batches (${r.batches})`)
  t.equal((await json('ds', 'stat', '/acme/parts')).count, 2500)
  t.same((await json('table', 'get', '/acme/parts', 'part-01234')).value, docs[1234])
  const out = path.join(node.dir, 'out.jsonl')
  await ok('table', 'export', '/acme/parts', out)
  const exported = (await readFile(out, 'utf8')).trim().split('\n').map((l) => JSON.parse(l))
  t.same(exported, docs, 'export gives back every document, in key order')
})

t.test('a bad import file imports nothing and names the line', async (t) => {
  await ok('ds', 'create', '/acme/bad', '--kind', 'table')
  const file = path.join(node.dir, 'bad.jsonl')
  await writeFile(file, '{"id":"a"}\n{"id":"b"}\n{"id":\n')
  const r = await cli('table', 'import', '/acme/bad', file, '--key', 'id')
  t.equal(r.code, 2)
  t.match(r.stderr, /bad\.jsonl:3: invalid JSON/)
  await writeFile(file, '{"id":"a"}\n{"name":"b"}\n')
  const noKey = await cli('table', 'import', '/acme/bad', file, '--key', 'id')
  t.equal(noKey.code, 2)
  t.match(noKey.stderr, /bad\.jsonl:2: the document has no string or number field "id"/)
  t.equal((await json('ds', 'stat', '/acme/bad')).count, 0, 'nothing was written')
})

t.test('bad input is refused with the reason, the status and exit code, and stores nothing', async (t) => {
  const tb = createClient(TableService, node.api)
  t.teardown(() => tb.close())
  const before = await json('ds', 'stat', '/acme/temps')
  const cases: Array<[string[], number, RegExp]> = [
    [['table', 'put', '/acme/temps', 'k', '{"a":'], 2, /not valid JSON/],
    [['table', 'put', '/acme/nope', 'k', '{}'], 3, /dataset \/acme\/nope does not exist/],
    [['table', 'put', '/acme/events', 'k', '{}'], 8, /\/acme\/events is a stream dataset, not a table dataset/],
    [['table', 'put', '/acme/Temps', 'k', '{}'], 2, /segment "Temps"/],
    [['table', 'get', '/acme/temps', 'k', '--seq', 'abc'], 2, /expected a whole number/],
    [['table', 'scan', '/acme/temps', '--prefix', 'a', '--from', 'b'], 2, /not both/],
  ]
  for (const [args, code, message] of cases) {
    const r = await cli(...args)
    t.equal(r.code, code, args.join(' '))
    t.match(r.stderr, message, args.join(' '))
  }
  const big = await failure(tb.put({ path: '/acme/temps', key: 'big', json: JSON.stringify({ s: 'x'.repeat(600 * 1024) }) }))
  t.ok(isFabricError(big, 'INVALID_ARGUMENT'))
  t.match(big!.message, /bytes; the limit is 524288/)
  const longKey = await failure(tb.put({ path: '/acme/temps', key: 'k'.repeat(2000), json: '{}' }))
  t.match(longKey!.message, /2000 bytes; the limit is 1024/)
  const nul = await failure(tb.put({ path: '/acme/temps', key: 'a\u0000b', json: '{}' }))
  t.match(nul!.message, /must not contain NUL/)
  const empty = await failure(tb.put({ path: '/acme/temps', key: '', json: '{}' }))
  t.ok(isFabricError(empty, 'INVALID_ARGUMENT'))
  const after = await json('ds', 'stat', '/acme/temps')
  t.same(after, before, 'the table is unchanged')
})
