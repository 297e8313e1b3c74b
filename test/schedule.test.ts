/** Scheduled snapshots: taken at the home on every tick, the newest `keep` kept, and bad input refused. */
import t from 'tap'
import { poll, runCli, runCliOk, startNode } from './harness/index.ts'

t.test('a schedule takes one snapshot per tick and keeps the newest N; hand-made ones are kept', async (t) => {
  const node = await startNode(t)
  const cli = (...args: string[]) => runCliOk([...args, '--server', node.api])
  await cli('volume', 'create', '/sched')
  await cli('ds', 'create', '/sched/t', '--kind', 'table')
  await cli('table', 'put', '/sched/t', 'a', '{"n":1}')
  await cli('snap', 'create', '/sched', '--name', 'by-hand')

  // Every second (6-field cron), keep 2.
  const set = JSON.parse((await cli('snap', 'schedule', '/sched', '--cron', '* * * * * *', '--keep', '2', '-o', 'json')).stdout)
  t.match(set, { path: '/sched', schedule: { cron: '* * * * * *', keep: 2 } })
  const names = async () => (JSON.parse((await cli('snap', 'ls', '/sched', '-o', 'json')).stdout) as Array<{ name: string; seq: number }>).map((s) => s.name)
  // Four ticks later: the two newest scheduled snapshots and the hand-made one.
  const seen = new Set<string>()
  await poll('four ticks', async () => {
    for (const n of await names()) if (n.startsWith('auto-')) seen.add(n)
    return seen.size >= 4
  }, 20_000, 250)
  const now = await names()
  const auto = now.filter((n) => n.startsWith('auto-'))
  t.ok(auto.length <= 3 && auto.length >= 2, `at most keep (+1 being taken) scheduled snapshots kept, got ${auto.join(', ')}`)
  t.ok(now.includes('by-hand'), 'a snapshot taken by hand is not removed by retention')
  t.match(auto[0], /^auto-\d{8}-\d{6}$/, 'named after the tick (UTC)')

  // Removing the schedule stops it.
  await cli('snap', 'schedule', '/sched', '--off')
  await new Promise((r) => setTimeout(r, 1_500))
  const after = (await names()).filter((n) => n.startsWith('auto-'))
  await new Promise((r) => setTimeout(r, 2_000))
  t.same((await names()).filter((n) => n.startsWith('auto-')), after, 'no snapshot after the schedule is removed')

  // Bad input: named, refused, nothing changed.
  const bad = await runCli(['snap', 'schedule', '/sched', '--cron', 'every minute', '--keep', '2', '--server', node.api])
  t.equal(bad.code, 2, 'INVALID_ARGUMENT')
  t.match(bad.stderr, /cron expression "every minute" is not valid/)
  const badKeep = await runCli(['snap', 'schedule', '/sched', '--cron', '0 * * * *', '--keep', '0', '--server', node.api])
  t.equal(badKeep.code, 2)
  t.match(badKeep.stderr, /keep must be a whole number from 1 to 10000, got 0/)
  const vol = JSON.parse((await cli('volume', 'ls', '-o', 'json')).stdout) as Array<{ path: string; schedule: unknown }>
  t.equal(vol.find((v) => v.path === '/sched')?.schedule, null, 'no schedule left after the refused changes')
})
