/** Volumes and datasets through the CLI, as an admin lays out the namespace. */
import t from 'tap'
import { runCli, startNode, type NodeProcess } from './harness/index.ts'

let node: NodeProcess
const cli = (...args: string[]) => runCli([...args, '--server', node.api])
const json = async (...args: string[]) => {
  const r = await cli(...args, '-o', 'json')
  if (r.code !== 0) throw new Error(`${args.join(' ')} failed (${r.code}): ${r.stderr}`)
  return JSON.parse(r.stdout)
}

t.before(async () => {
  node = await startNode(t)
})

t.test('volumes: create, list, stat, and "/" always exists', async (t) => {
  const v = await json('volume', 'create', '/acme')
  t.match(v, { path: '/acme', home: 'local', replicas: [] })
  const vols = await json('volume', 'ls')
  t.same(vols.map((x: { path: string }) => x.path), ['/', '/acme'])
  const stat = await json('volume', 'stat', '/acme')
  t.match(stat, { path: '/acme', home: 'local', datasets: 0, appliedSeq: 0, lastSeq: 0 })
  const dup = await cli('volume', 'create', '/acme')
  t.equal(dup.code, 4, 'ALREADY_EXISTS')
  t.match(dup.stderr, /volume \/acme exists already/)
  const missing = await cli('volume', 'stat', '/nope')
  t.equal(missing.code, 3)
})

t.test('datasets belong to their nearest enclosing volume', async (t) => {
  await json('volume', 'create', '/plant')
  const a = await json('ds', 'create', '/plant/line1/temps', '--kind', 'table', '--description', 'temperatures')
  t.match(a, { path: '/plant/line1/temps', kind: 'table', volume: '/plant', description: 'temperatures' })
  const b = await json('ds', 'create', '/shared/events', '--kind', 'stream')
  t.equal(b.volume, '/', 'outside any volume: the root volume')
  await json('ds', 'create', '/plant/line1/images', '--kind', 'files')
  const listed = await json('ds', 'ls', '/plant')
  t.same(listed.map((d: { path: string }) => d.path), ['/plant/line1/images', '/plant/line1/temps'])
  const stat = await json('ds', 'stat', '/plant/line1/temps')
  t.match(stat, { kind: 'table', volume: '/plant', count: 0, bytes: 0, lastWriteSeq: 0 })
  t.equal((await json('volume', 'stat', '/plant')).datasets, 2)
})

t.test('the namespace refuses what would make paths ambiguous', async (t) => {
  await json('ds', 'create', '/lab/results', '--kind', 'table')
  const nested = await cli('ds', 'create', '/lab/results/extra', '--kind', 'table')
  t.equal(nested.code, 8)
  t.match(nested.stderr, /would overlap dataset \/lab\/results/)
  const moving = await cli('volume', 'create', '/lab')
  t.equal(moving.code, 8)
  t.match(moving.stderr, /dataset \/lab\/results would move out of volume \//)
  const dup = await cli('ds', 'create', '/lab/results', '--kind', 'stream')
  t.equal(dup.code, 4)
  const atVolume = await cli('ds', 'create', '/acme', '--kind', 'table')
  t.equal(atVolume.code, 8)
  t.match(atVolume.stderr, /\/acme is a volume/)
})

t.test('bad paths and kinds are refused with the reason', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['ds', 'create', 'acme/x', '--kind', 'table'], /must be absolute/],
    [['ds', 'create', '/acme/Temps', '--kind', 'table'], /segment "Temps" must match/],
    [['ds', 'create', '/acme//x', '--kind', 'table'], /empty segment/],
    [['ds', 'create', '/acme/../x', '--kind', 'table'], /"\.\." segment/],
    [['ds', 'create', '/acme/x/', '--kind', 'table'], /empty segment/],
    [['ds', 'create', `/${Array.from({ length: 17 }, () => 'a').join('/')}`, '--kind', 'table'], /17 segments deep; the limit is 16/],
    [['ds', 'create', `/acme/${'a'.repeat(64)}`, '--kind', 'table'], /must match/],
    [['ds', 'create', '/', '--kind', 'table'], /the root is a volume/],
    [['volume', 'create', '/a b'], /must match/],
  ]
  for (const [args, message] of cases) {
    const r = await cli(...args)
    t.equal(r.code, 2, args.join(' '))
    t.match(r.stderr, message, args.join(' '))
  }
  const kind = await cli('ds', 'create', '/acme/x', '--kind', 'graph')
  t.equal(kind.code, 2)
  t.match(kind.stderr, /graph/)
  t.same((await json('ds', 'ls', '/acme')).length, 0, 'nothing was created')
})

t.test('volume rm: refused while not empty; --force needs --yes off a terminal', async (t) => {
  await json('volume', 'create', '/tmpvol')
  await json('ds', 'create', '/tmpvol/t', '--kind', 'table')
  await cli('table', 'put', '/tmpvol/t', 'k', '{"v":1}')
  const refused = await cli('volume', 'rm', '/tmpvol')
  t.equal(refused.code, 8)
  t.match(refused.stderr, /volume \/tmpvol is not empty: it holds 1 dataset/)
  const noYes = await cli('volume', 'rm', '/tmpvol', '--force')
  t.equal(noYes.code, 2)
  t.match(noYes.stderr, /--force needs --yes/)
  t.equal((await json('table', 'get', '/tmpvol/t', 'k')).value.v, 1, 'nothing was removed')
  const forced = await cli('volume', 'rm', '/tmpvol', '--force', '--yes')
  t.equal(forced.code, 0, forced.stderr)
  t.match(forced.stdout, /and 1 dataset/)
  t.equal((await cli('ds', 'stat', '/tmpvol/t')).code, 3)
  t.notOk((await json('volume', 'ls')).some((v: { path: string }) => v.path === '/tmpvol'))
  const root = await cli('volume', 'rm', '/')
  t.equal(root.code, 8)
  t.match(root.stderr, /root volume/)
})

t.test('ds rm removes a dataset; its name can be used again, empty', async (t) => {
  await json('ds', 'create', '/again/t', '--kind', 'table')
  await cli('table', 'put', '/again/t', 'k', '{"old":true}')
  t.equal((await cli('ds', 'rm', '/again/t')).code, 0)
  t.equal((await cli('table', 'get', '/again/t', 'k')).code, 3)
  await json('ds', 'create', '/again/t', '--kind', 'table')
  const r = await cli('table', 'get', '/again/t', 'k')
  t.equal(r.code, 3, 'the new dataset does not see the old data')
  t.equal((await json('ds', 'stat', '/again/t')).count, 0)
})

t.test('the catalog survives a restart', async (t) => {
  const before = await json('ds', 'ls')
  t.equal((await node.child.kill('SIGTERM'), (await node.exited).code), 0)
  node = await startNode(t, { dir: node.dir })
  t.same(await json('ds', 'ls'), before)
})
