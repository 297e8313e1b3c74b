/** Pure rules of the namespace and the store's key layout. */
import t from 'tap'
import { contains, nearest, parsePath, validateFileName, validateKey } from '../node/catalog/index.ts'
import { isFabricError } from '../node/errors/index.ts'
import { keys } from '../node/store/index.ts'

const refused = (fn: () => unknown) => {
  try {
    fn()
    return undefined
  } catch (err) {
    return isFabricError(err, 'INVALID_ARGUMENT') ? err.message : `unexpected: ${String(err)}`
  }
}

t.test('paths', async (t) => {
  t.same(parsePath('/'), [])
  t.same(parsePath('/acme/line-1/temps.v2'), ['acme', 'line-1', 'temps.v2'])
  t.equal(parsePath(`/${Array.from({ length: 16 }, () => 'a').join('/')}`).length, 16)
  for (const bad of ['', 'acme', '/acme/', '//acme', '/acme/./x', '/acme/../x', '/Acme', '/-a', '/.a', '/_a', `/${'a'.repeat(64)}`, '/a b', '/a/é']) {
    t.ok(refused(() => parsePath(bad)), `${JSON.stringify(bad)} is refused`)
  }
})

t.test('nearest enclosing volume', async (t) => {
  const vols = [{ path: '/' }, { path: '/acme' }, { path: '/acme/line1' }]
  t.equal(nearest('/acme/line1/temps', vols)?.path, '/acme/line1')
  t.equal(nearest('/acme/line10/temps', vols)?.path, '/acme', 'a segment is not a string prefix')
  t.equal(nearest('/other/x', vols)?.path, '/')
  t.ok(contains('/', '/x') && contains('/a', '/a') && !contains('/a', '/ab'))
})

t.test('keys and file names', async (t) => {
  t.equal(refused(() => validateKey('sensor/1:ä')), undefined, 'any UTF-8 but NUL')
  t.match(refused(() => validateKey('a\u0000b')), /NUL/)
  t.match(refused(() => validateKey('é'.repeat(513))), /1026 bytes; the limit is 1024/)
  t.equal(refused(() => validateFileName('cam1/IMG_0001.JPG', '/d/cam1/IMG_0001.JPG')), undefined)
  for (const bad of ['', 'a//b', '../x', 'a/./b', '.hidden', '-x', 'a/b/', 'tab\there']) t.ok(refused(() => validateFileName(bad, `/d/${bad}`)), JSON.stringify(bad))
})

t.test('version keys sort newest first, and a seek finds the version at a position', async (t) => {
  const ks = [1, 2, 10, 255, 256, 2 ** 40].map((seq) => keys.tableVersion('d', 'k', seq))
  t.same([...ks].sort(), [...ks].reverse(), 'higher positions sort first')
  t.equal(keys.splitVersion(keys.tablePrefix('d'), keys.tableVersion('d', 'a/b', 42)).seq, 42)
  t.equal(keys.splitVersion(keys.tablePrefix('d'), keys.tableVersion('d', 'a/b', 42)).name, 'a/b')
  // All versions of "a" sort before any longer key starting with "a".
  t.ok(keys.tableVersion('d', 'a', 1) < `${keys.tablePrefix('d')}a${keys.AFTER_SEP}` && `${keys.tablePrefix('d')}a${keys.AFTER_SEP}` <= `${keys.tablePrefix('d')}a\u0001x`)
  t.ok(keys.hex(255) < keys.hex(256) && keys.hex(256).length === 16)
})
