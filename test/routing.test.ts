/** Pure rules of model serving: version choice, routing keys, site order, names. */
import t from 'tap'
import { compareVersions } from '../node/catalog/index.ts'
import { nearestSites, nextVersion, parseModelName, pickVersion } from '../node/serving/index.ts'

t.test('a traffic split: in proportion without a key, the same version for the same key', async (t) => {
  const split = [
    { version: '1', weight: 90 },
    { version: '2', weight: 10 },
  ]
  let state = 12345
  const random = () => ((state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31)
  const counts: Record<string, number> = {}
  for (let i = 0; i < 20_000; i++) {
    const v = pickVersion(split, undefined, random)
    counts[v] = (counts[v] ?? 0) + 1
  }
  t.ok(Math.abs(counts['2']! / 20_000 - 0.1) < 0.01, `about 10 % to version 2 (${counts['2']})`)
  for (let k = 0; k < 200; k++) t.equal(pickVersion(split, `user-${k}`), pickVersion(split, `user-${k}`), `key user-${k} always lands on one version`)
  // Scaling the weights changes nothing; moving the split moves only the keys between the two cuts.
  const scaled = split.map((s) => ({ ...s, weight: s.weight * 7 }))
  const moved = [
    { version: '1', weight: 80 },
    { version: '2', weight: 20 },
  ]
  let changedByScale = 0
  let movedTo2 = 0
  let movedTo1 = 0
  for (let k = 0; k < 5_000; k++) {
    const key = `k${k}`
    const before = pickVersion(split, key)
    if (pickVersion(scaled, key) !== before) changedByScale++
    const after = pickVersion(moved, key)
    if (before === '1' && after === '2') movedTo2++
    if (before === '2' && after === '1') movedTo1++
  }
  t.equal(changedByScale, 0, 'scaling every weight moves no key')
  t.equal(movedTo1, 0, 'going from 90/10 to 80/20 moves no key back to 1')
  t.ok(Math.abs(movedTo2 / 5_000 - 0.1) < 0.02, `and about 10 % of keys to 2 (${movedTo2})`)
  t.equal(pickVersion([{ version: 'only', weight: 1 }], 'x'), 'only')
})

t.test('sites to forward to: the hub first from an edge, then by name', async (t) => {
  t.same(nearestSites(['edge2', 'hub', 'edge3', 'hub'], 'edge1', 'hub'), ['hub', 'edge2', 'edge3'])
  t.same(nearestSites(['edge2', 'edge1'], 'hub', 'hub'), ['edge1', 'edge2'], 'from the hub every edge is one hop')
  t.same(nearestSites(['edge1', 'edge2'], 'edge1', 'hub'), ['edge2'], 'never this site')
  t.same(nearestSites([], 'edge1', undefined), [])
})

t.test('model names and versions', async (t) => {
  t.same(parseModelName('acme/churn'), ['acme', 'churn'])
  for (const bad of ['acme', 'acme/churn/v2', 'Acme/churn', '/churn', 'acme/', 'acme/.x', 'acme/c hurn']) {
    t.throws(() => parseModelName(bad), { code: 'INVALID_ARGUMENT', message: /expected "tenant\/name"/ }, `${JSON.stringify(bad)} refused`)
  }
  t.equal(nextVersion([]), '1')
  t.equal(nextVersion(['1', '2', '10', 'beta', '1.2.0']), '11', 'one more than the highest whole number')
  t.same(['10', 'b', '2', '1.10.0', '1.9.0', '1'].sort(compareVersions), ['1', '2', '10', '1.9.0', '1.10.0', 'b'], 'whole numbers first, numerically; then naturally')
})
