/**
 * Snapshots as an admin uses them: diff two of them, restore a volume to one, clone one into a
 * new volume, export one to an archive and import it elsewhere, against one real node.
 */
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { createClient } from '../node/api/client.ts'
import { readTar } from '../node/snapshots/archive.ts'
import { compareUtf8, mergeByName } from '../node/snapshots/index.ts'
import { FileService } from '../proto/gen/fabric/v1/file_pb.ts'
import { DatasetKind, NamespaceService } from '../proto/gen/fabric/v1/namespace_pb.ts'
import { SnapshotService } from '../proto/gen/fabric/v1/snapshot_pb.ts'
import { StreamService } from '../proto/gen/fabric/v1/stream_pb.ts'
import { TableService } from '../proto/gen/fabric/v1/table_pb.ts'
import { runCli, startNode, type NodeProcess } from './harness/index.ts'

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')

let node: NodeProcess
const cli = (...args: string[]) => runCli([...args, '--server', node.api], { timeoutMs: 60_000 })
const ok = async (...args: string[]) => {
  const r = await cli(...args)
  if (r.code !== 0) throw new Error(`fabric ${args.join(' ')} failed (${r.code}): ${r.stderr}`)
  return r.stdout
}
const json = async (...args: string[]) => JSON.parse(await ok(...args, '-o', 'json'))
const jsonLines = async (...args: string[]) => (await ok(...args, '-o', 'json')).trim().split('\n').filter(Boolean).map((l) => JSON.parse(l))

let tables: ReturnType<typeof createClient<typeof TableService>>
let files: ReturnType<typeof createClient<typeof FileService>>
let streams: ReturnType<typeof createClient<typeof StreamService>>
let ns: ReturnType<typeof createClient<typeof NamespaceService>>
let snaps: ReturnType<typeof createClient<typeof SnapshotService>>

/** Datasets under a path, as `ds ls` lists them. */
const datasetsUnder = async (prefix: string) => (await ns.listDatasets({ prefix })).datasets.map((d) => d.path)

async function putFile(filePath: string, content: Uint8Array) {
  async function* body() {
    yield { msg: { case: 'header' as const, value: { path: filePath, size: BigInt(content.length) } } }
    for (let i = 0; i < content.length; i += 256 * 1024) yield { msg: { case: 'data' as const, value: content.subarray(i, i + 256 * 1024) } }
    yield { msg: { case: 'trailer' as const, value: { sha256: sha256(content) } } }
  }
  await files.put(body())
}

/** A dataset's content as a user reads it: rows, files (name -> sha256) or events. */
async function contentOf(dsPath: string, kind: 'table' | 'files' | 'stream', at = ''): Promise<unknown> {
  if (kind === 'table') {
    const rows: Record<string, string> = {}
    for await (const r of tables.scan({ path: dsPath, atSnapshot: at })) rows[r.key] = r.json
    return rows
  }
  if (kind === 'files') {
    const out: Record<string, string> = {}
    for (const f of (await files.list({ path: dsPath, atSnapshot: at })).files) out[f.path.slice(dsPath.length + 1)] = f.sha256
    return out
  }
  const events: string[] = []
  for await (const e of streams.subscribe({ path: dsPath, atSnapshot: at })) events.push(e.json)
  return events
}

/** The entries of an archive file: name -> bytes. */
async function entriesOf(file: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>()
  async function* source() {
    yield await readFile(file)
  }
  for await (const e of readTar(source())) {
    const parts: Uint8Array[] = []
    for await (const p of e.body) parts.push(p)
    out.set(e.name, Buffer.concat(parts))
  }
  return out
}

const big = randomBytes(600 * 1024) // three chunks
const small = Buffer.from('first version of a\n')

t.before(async () => {
  node = await startNode(t)
  tables = createClient(TableService, node.api)
  files = createClient(FileService, node.api)
  streams = createClient(StreamService, node.api)
  ns = createClient(NamespaceService, node.api)
  snaps = createClient(SnapshotService, node.api)
  await ns.createVolume({ path: '/acme' })
  await ns.createDataset({ path: '/acme/temps', kind: DatasetKind.TABLE, description: 'temperatures' })
  await ns.createDataset({ path: '/acme/line1/images', kind: DatasetKind.FILES, description: 'camera images' })
  await ns.createDataset({ path: '/acme/events', kind: DatasetKind.STREAM })
  // s1
  // Keys above U+FFFF sort after U+FFFF in the store (UTF-8 order), not before (UTF-16 order).
  await tables.batch({ path: '/acme/temps', ops: ['k1', 'k2', 'k3', 'k4', '\u{1d11e}', '\uffff'].map((key, i) => ({ key, json: JSON.stringify({ c: 20 + i }) })) })
  await tables.put({ path: '/acme/temps', key: 'pretty', json: '{\n  "multi": "line"\n}' })
  await putFile('/acme/line1/images/a.bin', small)
  await putFile('/acme/line1/images/cam 1/b.bin', big)
  await streams.publish({ path: '/acme/events', events: ['{"e":1}', '{"e":2}'] })
  await snaps.createSnapshot({ volume: '/acme', name: 's1' })
  // s2: k1 changed, k2 written again with the same document, k3 removed, k5 added; a.bin changed,
  // b.bin removed, c.bin added; three events appended.
  await tables.put({ path: '/acme/temps', key: 'k1', json: '{"c":99}' })
  await tables.put({ path: '/acme/temps', key: 'k2', json: '{"c":21}' })
  await tables.delete({ path: '/acme/temps', key: 'k3' })
  await tables.put({ path: '/acme/temps', key: 'k5', json: '{"c":5}' })
  await putFile('/acme/line1/images/a.bin', Buffer.from('second version of a\n'))
  await files.delete({ path: '/acme/line1/images/cam 1/b.bin' })
  await putFile('/acme/line1/images/c.bin', Buffer.from('c'))
  await streams.publish({ path: '/acme/events', events: ['{"e":3}', '{"e":4}', '{"e":5}'] })
  await snaps.createSnapshot({ volume: '/acme', name: 's2' })
})

t.teardown(() => {
  for (const c of [tables, files, streams, ns, snaps]) c?.close()
})

t.test('the store order and the merge the operations are built on', async (t) => {
  t.ok(compareUtf8('a', 'b') < 0 && compareUtf8('b', 'a') > 0 && compareUtf8('a', 'a') === 0 && compareUtf8('a', 'ab') < 0)
  t.ok(compareUtf8('\uffff', '\u{10000}') < 0, 'a character above U+FFFF sorts after every BMP character, as in UTF-8')
  t.ok('\uffff' > '\u{10000}', '(which a plain string comparison gets wrong)')
  const pairs: string[] = []
  for await (const [a, b] of mergeByName(['a', 'c', 'd'], ['b', 'c', 'e'], (x) => x, (x) => x)) pairs.push(`${a ?? '-'}${b ?? '-'}`)
  t.same(pairs, ['a-', '-b', 'cc', 'd-', '-e'])
})

t.test('diff names exactly the keys, files and events that changed between two snapshots', async (t) => {
  const [items, toNow, one, text] = await Promise.all([
    jsonLines('snap', 'diff', '/acme', 's1', 's2'),
    jsonLines('snap', 'diff', '/acme', 's1'),
    jsonLines('snap', 'diff', '/acme', 's1', 's2', '--dataset', '/acme/temps', '--summary'),
    ok('snap', 'diff', '/acme', 's1', 's2'),
  ])
  const range = items.find((i) => i.type === 'range')
  t.match(range, { volume: '/acme', from: 's1', to: 's2' })
  t.ok(range.toSeq > range.fromSeq)
  const changes = items.filter((i) => i.type === 'change').map((c) => `${c.change} ${c.dataset} ${c.name}`)
  t.same(
    changes.sort(),
    [
      'added /acme/line1/images c.bin',
      'added /acme/temps k5',
      'changed /acme/line1/images a.bin',
      'changed /acme/temps k1',
      'removed /acme/line1/images cam 1/b.bin',
      'removed /acme/temps k3',
    ],
    'k2, written again with the same document, is not a change',
  )
  const a = items.find((i) => i.type === 'change' && i.name === 'a.bin')
  t.match(a, { fromSha256: sha256(small), fromSize: small.length, toSha256: sha256(Buffer.from('second version of a\n')) })
  const summary = Object.fromEntries(items.filter((i) => i.type === 'dataset').map((d) => [d.dataset, d]))
  t.match(summary['/acme/temps'], { kind: 'table', added: 1, changed: 1, removed: 1 })
  t.match(summary['/acme/line1/images'], { kind: 'files', added: 1, changed: 1, removed: 1 })
  t.match(summary['/acme/events'], { kind: 'stream', eventsAdded: 3, added: 0 })

  t.same(toNow.filter((i) => i.type !== 'range'), items.filter((i) => i.type !== 'range'), 'without TO: to the current state, the same while nothing changed')
  t.equal(toNow[0].to, null)
  t.same(one.map((i) => i.type), ['range', 'dataset'], '--summary and --dataset')
  t.match(text, /^diff of \/acme from snapshot s1 \(position \d+\) to snapshot s2/)
  t.match(text, /\n~ \/acme\/temps {2}k1\n/)
  t.match(text, /\n= \/acme\/events \(stream\): 3 event\(s\) appended/)
})

t.test('restore brings back a table and a files dataset; streams stay; a second restore writes nothing', async (t) => {
  const s1Table = await contentOf('/acme/temps', 'table', 's1')
  const s1Files = await contentOf('/acme/line1/images', 'files', 's1')
  const one = await json('snap', 'restore', '/acme', 's1', '--dataset', '/acme/temps')
  t.same(one.datasets.map((d: { dataset: string }) => d.dataset), ['/acme/temps'], 'only the dataset asked for')
  t.match(one.datasets[0], { keysPut: 2, keysDeleted: 1 }, 'k1 and k3 put back, k5 deleted')
  t.same(await contentOf('/acme/temps', 'table'), s1Table)
  t.not(JSON.stringify(await contentOf('/acme/line1/images', 'files')), JSON.stringify(s1Files), 'the files are untouched so far')

  const all = await json('snap', 'restore', '/acme', 's1')
  const by = Object.fromEntries(all.datasets.map((d: { dataset: string }) => [d.dataset, d]))
  t.match(by['/acme/temps'], { keysPut: 0, keysDeleted: 0 }, 'the table is at s1 already')
  t.match(by['/acme/line1/images'], { filesPut: 2, filesDeleted: 1 }, 'a.bin and b.bin back, c.bin gone')
  t.match(by['/acme/events'], { eventsKept: 3 }, 'streams are append-only: the events since stay')
  t.same(await contentOf('/acme/line1/images', 'files'), s1Files)
  const back: Uint8Array[] = []
  for await (const m of files.get({ path: '/acme/line1/images/cam 1/b.bin' })) if (m.msg.case === 'data') back.push(m.msg.value)
  t.equal(sha256(Buffer.concat(back)), sha256(big), 'the content of a restored file, from its chunks')
  t.equal((await contentOf('/acme/events', 'stream') as string[]).length, 5)

  const again = await json('snap', 'restore', '/acme', 's1')
  t.equal(again.lastVersion, 0, 'a second restore writes nothing')
  for (const d of again.datasets) t.match(d, { keysPut: 0, keysDeleted: 0, filesPut: 0, filesDeleted: 0 }, d.dataset)
  const after = await jsonLines('snap', 'diff', '/acme', 's1', '--summary')
  t.same(after.filter((i) => i.type === 'dataset').map((d) => [d.dataset, d.added + d.changed + d.removed]), [['/acme/events', 0], ['/acme/line1/images', 0], ['/acme/temps', 0]], 'the volume is at s1 again')
  const text = await ok('snap', 'restore', '/acme', 's1')
  t.match(text, /nothing differed/)
  t.match(text, /\/acme\/events \(stream\): 3 event\(s\) since the snapshot kept \(streams are append-only\)/)
})

t.test('clone makes a new volume with the same layout and content', async (t) => {
  const r = await json('snap', 'clone', '/acme', 's2', '/copy')
  t.equal(r.volume, '/copy')
  t.equal(r.clonePortableHash, r.portableHash, 'the clone hashes as the snapshot')
  t.same(r.datasets.map((d: { dataset: string; kind: string; created: boolean }) => [d.dataset, d.kind, d.created]), [
    ['/copy/events', 'stream', true],
    ['/copy/line1/images', 'files', true],
    ['/copy/temps', 'table', true],
  ])
  const ds = (await ns.getDataset({ path: '/copy/line1/images' })).dataset
  t.match(ds, { kind: DatasetKind.FILES, description: 'camera images', volume: '/copy' })
  for (const [rel, kind] of [['temps', 'table'], ['line1/images', 'files'], ['events', 'stream']] as const) {
    t.same(await contentOf(`/copy/${rel}`, kind), await contentOf(`/acme/${rel}`, kind, 's2'), `${rel}: the snapshot's content`)
  }
  const [src, copy] = await Promise.all([json('snap', 'show', '/acme', 's2'), json('snap', 'show', '/copy', 's2')])
  t.equal(copy.portableHash, src.portableHash, 'the clone has a snapshot of the same name and portable hash')
  t.not(copy.contentHash, src.contentHash, 'the content hash counts event positions, which differ in the clone')
  const exists = await cli('snap', 'clone', '/acme', 's2', '/copy')
  t.equal(exists.code, 4)
  t.match(exists.stderr, /volume \/copy exists already/)
})

t.test('export gives the same archive every time; import reproduces the content; a second import writes nothing', async (t) => {
  const a1 = path.join(node.dir, 'a1.tar')
  const a2 = path.join(node.dir, 'a2.tar')
  const [exported] = await Promise.all([json('snap', 'export', '/acme', 's2', a1), ok('snap', 'export', '/acme', 's2', a2)])
  t.match(exported, { volume: '/acme', snapshot: 's2', datasets: 3, entries: 4 })
  const [b1, b2] = [await readFile(a1), await readFile(a2)]
  t.equal(sha256(b1), sha256(b2), 'byte-identical: deterministic')
  t.equal(exported.sha256, sha256(b1))
  const entries = await entriesOf(a1)
  t.same([...entries.keys()], ['manifest.json', 'datasets/events/stream.jsonl', 'datasets/line1/images/files/a.bin', 'datasets/line1/images/files/c.bin', 'datasets/temps/table.jsonl'])
  const manifest = JSON.parse(entries.get('manifest.json')!.toString())
  t.match(manifest, { format: 'fabric-snapshot-archive', version: 1, volume: '/acme', snapshot: 's2' })
  t.equal(manifest.contentHash, (await json('snap', 'show', '/acme', 's2')).contentHash, "the manifest's content hash is the snapshot's")
  for (const e of manifest.entries) t.equal(sha256(entries.get(e.name)!), e.sha256, `${e.name}: its hash in the manifest`)
  t.equal(entries.get('datasets/temps/table.jsonl')!.toString(), '{"key":"k1","doc":{"c":99}}\n{"key":"k2","doc":{"c":21}}\n{"key":"k4","doc":{"c":23}}\n{"key":"k5","doc":{"c":5}}\n{"key":"pretty","json":"{\\n  \\"multi\\": \\"line\\"\\n}"}\n{"key":"\uffff","doc":{"c":25}}\n{"key":"\u{1d11e}","doc":{"c":24}}\n')

  await ns.createVolume({ path: '/dr' })
  const imported = await json('snap', 'import', a1, '/dr')
  t.equal(imported.matches, true)
  t.equal(imported.portableHash, manifest.portableHash)
  t.same(imported.datasets.map((d: { dataset: string; created: boolean }) => [d.dataset, d.created]), [['/dr/events', true], ['/dr/line1/images', true], ['/dr/temps', true]])
  await ok('snap', 'create', '/dr', '--name', 'imported')
  const b = path.join(node.dir, 'b.tar')
  await ok('snap', 'export', '/dr', 'imported', b)
  const again = await entriesOf(b)
  const manifest2 = JSON.parse(again.get('manifest.json')!.toString())
  t.equal(manifest2.portableHash, manifest.portableHash, 'export -> import -> export keeps the portable hash')
  t.same(manifest2.entries, manifest.entries, 'and every entry')
  for (const [name, bytes] of entries) if (name !== 'manifest.json') t.ok(bytes.equals(again.get(name)!), `${name}: byte-identical payload`)

  const twice = await json('snap', 'import', a1, '/dr')
  t.equal(twice.matches, true)
  for (const d of twice.datasets) t.match(d, { created: false, keysPut: 0, keysDeleted: 0, filesPut: 0, filesDeleted: 0, eventsAppended: 0 }, `${d.dataset}: nothing written again`)
  t.match(twice.datasets.find((d: { dataset: string }) => d.dataset === '/dr/events'), { eventsKept: 5 })
})

t.test('a tampered archive is refused naming the entry, and nothing is written', async (t) => {
  const a1 = path.join(node.dir, 'a1.tar')
  const bytes = await readFile(a1)
  const at = bytes.indexOf('{"c":99}')
  t.ok(at > 0)
  const tampered = Buffer.from(bytes)
  tampered[at + 5] = '8'.charCodeAt(0) // {"c":89}
  const bad = path.join(node.dir, 'tampered.tar')
  await writeFile(bad, tampered)
  await ns.createVolume({ path: '/tamper' })
  const cut = path.join(node.dir, 'cut.tar')
  await writeFile(cut, bytes.subarray(0, 3000))
  const [r, short] = await Promise.all([cli('snap', 'import', bad, '/tamper'), cli('snap', 'import', cut, '/tamper')])
  t.equal(r.code, 2, 'INVALID_ARGUMENT')
  t.match(r.stderr, /entry datasets\/temps\/table\.jsonl has \d+ bytes with sha256 [0-9a-f]{64}; the manifest says/)
  t.equal(short.code, 2, 'a cut archive too')
  t.match(short.stderr, /not a readable tar|is missing/)
  t.same(await datasetsUnder('/tamper'), [], 'no dataset was created')
})

t.test('bad input is refused with the reason and its exit code', async (t) => {
  await ns.createVolume({ path: '/kind' })
  await ns.createDataset({ path: '/kind/temps', kind: DatasetKind.STREAM })
  const a1 = path.join(node.dir, 'a1.tar')
  const cases: Array<[string[], number, RegExp]> = [
    [['snap', 'diff', '/acme', 'nope'], 3, /snapshot nope of volume \/acme does not exist/],
    [['snap', 'restore', '/acme', 'nope'], 3, /snapshot nope of volume \/acme does not exist/],
    [['snap', 'diff', '/acme', 's2', 's1'], 2, /is older than snapshot s2/],
    [['snap', 'restore', '/acme', 'Bad Name'], 2, /snapshot name "Bad Name"/],
    [['snap', 'export', '/acme/temps', 's1', path.join(node.dir, 'x.tar')], 2, /\/acme\/temps is not a volume/],
    [['snap', 'diff', '/nope', 's1'], 3, /volume \/nope does not exist/],
    [['snap', 'restore', '/acme', 's1', '--dataset', '/copy/temps'], 2, /dataset \/copy\/temps is not in volume \/acme/],
    [['snap', 'clone', '/acme', 's1', '/acme/temps/x'], 8, /inside dataset/],
    [['snap', 'import', a1, '/kind'], 8, /dataset \/kind\/temps exists as a stream dataset; the archive's temps is a table dataset/],
    [['snap', 'import', path.join(node.dir, 'missing.tar'), '/kind'], 2, /no such file/],
    [['snap', 'import', a1, '/nope'], 3, /volume \/nope does not exist/],
  ]
  const results = await Promise.all(cases.map(([args]) => cli(...args)))
  for (const [i, [args, code, message]] of cases.entries()) {
    t.equal(results[i]!.code, code, args.join(' '))
    t.match(results[i]!.stderr, message, args.join(' '))
  }
  t.same(await datasetsUnder('/kind'), ['/kind/temps'], 'the refused import created nothing')
  t.same(await contentOf('/kind/temps', 'stream'), [])
})
