/** Garbage collection of old versions: what no snapshot can see goes, what one can see stays. */
import t from 'tap'
import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { runCli, runCliOk, startNode, tempDir } from './harness/index.ts'

t.test('old versions go unless the newest or visible at a snapshot; reads at snapshots still work', async (t) => {
  const node = await startNode(t)
  const cli = (...args: string[]) => runCliOk([...args, '--server', node.api])
  const json = async (...args: string[]) => JSON.parse((await cli(...args, '-o', 'json')).stdout)
  await cli('volume', 'create', '/gc')
  await cli('ds', 'create', '/gc/t', '--kind', 'table')
  await cli('ds', 'create', '/gc/f', '--kind', 'files')
  const v = []
  v.push((await json('table', 'put', '/gc/t', 'k', '{"n":1}')).version)
  await cli('snap', 'create', '/gc', '--name', 's1')
  for (const n of [2, 3, 4]) v.push((await json('table', 'put', '/gc/t', 'k', JSON.stringify({ n }))).version)
  await cli('table', 'put', '/gc/t', 'gone', '{}')
  await cli('table', 'del', '/gc/t', 'gone')
  const dir = await tempDir(t)
  for (const text of ['first', 'second']) {
    await writeFile(path.join(dir, 'in.txt'), text)
    await cli('file', 'put', path.join(dir, 'in.txt'), '/gc/f/a.txt')
  }

  // k: versions 2 and 3 are seen by nothing (s1 sees 1, the newest is 4); gone: its tombstone is
  // the newest and its one version is seen by nothing; a.txt: the first version likewise.
  const first = await json('volume', 'gc', '/gc')
  t.equal(first.versionsRemoved, 4, 'k@2, k@3, the version of "gone" and the first a.txt')
  t.same((await json('table', 'get', '/gc/t', 'k')).value, { n: 4 }, 'the newest stays')
  t.same((await json('table', 'get', '/gc/t', 'k', '--at', 's1')).value, { n: 1 }, 'the version a snapshot sees stays')
  t.equal((await runCli(['table', 'get', '/gc/t', 'gone', '--server', node.api])).code, 3, 'a deleted key stays deleted')
  await cli('file', 'get', '/gc/f/a.txt', path.join(dir, 'out.txt'))
  t.equal(await readFile(path.join(dir, 'out.txt'), 'utf8'), 'second', 'the newest file version stays readable')
  t.equal((await json('volume', 'gc', '/gc')).versionsRemoved, 0, 'a second run finds nothing')

  // Once the snapshot goes, so does what only it saw.
  await cli('snap', 'rm', '/gc', 's1')
  t.equal((await json('volume', 'gc', '/gc')).versionsRemoved, 1, 'k@1 goes with s1')
  const rows = (await cli('table', 'scan', '/gc/t', '-o', 'json')).stdout.trim().split('\n').map((l) => JSON.parse(l))
  t.same(rows.map((r: { key: string; value: unknown }) => [r.key, r.value]), [['k', { n: 4 }]], 'scan sees the same as get')
})
