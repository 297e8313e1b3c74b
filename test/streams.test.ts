/** Stream datasets as a user sees them: events published in order and read back from a position, a time, or live. */
import t from 'tap'
import { spawn } from 'node:child_process'
import { timestampFromMs } from '@bufbuild/protobuf/wkt'
import { createClient } from '../node/api/index.ts'
import { isFabricError } from '../node/errors/index.ts'
import { NamespaceService } from '../proto/gen/fabric/v1/namespace_pb.ts'
import { StreamService } from '../proto/gen/fabric/v1/stream_pb.ts'
import { CLI, poll, ROOT, runCli, runCliOk, startNode, type CliResult, type NodeProcess } from './harness/index.ts'

const MAX_EVENT = 512 * 1024

let node: NodeProcess
let streams: ReturnType<typeof createClient<typeof StreamService>>
let ns: ReturnType<typeof createClient<typeof NamespaceService>>

/** What the helpers need of a test. */
type Asserts = Pick<typeof t, 'equal'>

interface SubLine {
  seq: number
  time: string
  event: unknown
}

const cli = (...args: string[]): Promise<CliResult> => runCli([...args, '-s', node.api])

/** `fabric stream sub ... -o json`: exits 0, one JSON line per event. */
async function sub(t: Asserts, path: string, ...args: string[]): Promise<SubLine[]> {
  const r = await cli('stream', 'sub', path, ...args, '-o', 'json')
  t.equal(r.code, 0, `stream sub ${path} ${args.join(' ')} exits 0 ${r.stderr}`)
  return r.stdout
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as SubLine)
}

/** `fabric stream pub PATH JSON -o json`. */
async function pub(t: Asserts, path: string, event: unknown): Promise<number> {
  const r = await cli('stream', 'pub', path, JSON.stringify(event), '-o', 'json')
  t.equal(r.code, 0, `stream pub ${path} exits 0 ${r.stderr}`)
  const out = JSON.parse(r.stdout) as { published: number; seqs: number[] }
  t.equal(out.published, 1)
  return out.seqs[0]!
}

/** The CLI with text on its stdin (runCli has none). */
function cliWithStdin(args: string[], input: string): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args, '-s', node.api], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    child.once('error', reject)
    child.once('close', (code) => {
      clearTimeout(timer)
      resolve({ code: code ?? -1, stdout, stderr })
    })
    child.stdin.on('error', () => {}) // the CLI may stop reading early (a bad line)
    child.stdin.end(input)
  })
}

async function count(path: string): Promise<number> {
  return Number((await ns.getDataset({ path })).stats?.count ?? 0n)
}

/** Every event of a stream over gRPC. */
async function all(path: string): Promise<Array<{ seq: number; json: string }>> {
  const out: Array<{ seq: number; json: string }> = []
  for await (const ev of streams.subscribe({ path })) out.push({ seq: Number(ev.seq), json: ev.json })
  return out
}

const increasing = (xs: number[]) => xs.every((x, i) => i === 0 || x > xs[i - 1]!)

/** Waits until the clock has moved past ms (events then get distinct times). */
const after = (ms: number) => poll(`the clock to pass ${ms}`, () => Date.now() > ms + 2, 1_000, 1)

t.before(async () => {
  node = await startNode(t)
  streams = createClient(StreamService, node.api)
  ns = createClient(NamespaceService, node.api)
  t.teardown(() => streams.close())
  t.teardown(() => ns.close())
  const must = (args: string[]) => runCliOk([...args, '-s', node.api])
  await must(['volume', 'create', '/plant'])
  await Promise.all([
    ...['events', 'ranges', 'live', 'stdin', 'bad'].map((name) => must(['ds', 'create', `/plant/${name}`, '--kind', 'stream'])),
    must(['ds', 'create', '/plant/temps', '--kind', 'table']),
  ])
})

t.test('published events come back in order with increasing positions', async (t) => {
  const events = [{ n: 1, msg: 'start' }, { n: 2, nested: { x: [1, 2, null] } }, { n: 3, text: 'grüße €' }]
  const first = await cli('stream', 'pub', '/plant/events', JSON.stringify(events[0]))
  t.equal(first.code, 0, first.stderr)
  const m = /^published 1 event\(s\) at (\d+)$/m.exec(first.stdout)
  t.ok(m, `the text output names the position: ${first.stdout}`)
  const seqs = [Number(m?.[1])]
  for (const e of events.slice(1)) seqs.push(await pub(t, '/plant/events', e))
  t.ok(increasing(seqs), `positions increase: ${seqs.join(', ')}`)

  const lines = await sub(t, '/plant/events')
  t.same(
    lines.map((l) => l.event),
    events,
    'the events, in order',
  )
  t.same(
    lines.map((l) => l.seq),
    seqs,
    'at the positions pub reported',
  )
  for (const l of lines) t.ok(Math.abs(Date.parse(l.time) - Date.now()) < 120_000, `time ${l.time} is the time of the publish`)
  t.ok(lines.every((l, i) => i === 0 || Date.parse(l.time) >= Date.parse(lines[i - 1]!.time)), 'times do not go back')

  const text = await cli('stream', 'sub', '/plant/events')
  t.equal(text.code, 0, text.stderr)
  const rows = text.stdout.trim().split('\n')
  t.equal(rows.length, 3, 'one line per event')
  rows.forEach((row, i) => t.same(row.split('\t'), [String(seqs[i]), lines[i]!.time, JSON.stringify(events[i])], `line ${i + 1}: position, time, event`))

  t.equal(await count('/plant/events'), 3, 'ds stat counts the events')
})

t.test('sub --from, --since and --count pick the events', async (t) => {
  const path = '/plant/ranges'
  const seqs: number[] = []
  for (let i = 1; i <= 4; i++) {
    seqs.push(Number((await streams.publish({ path, events: [JSON.stringify({ i })] })).seqs[0]))
    await after(Date.now())
  }
  const everything = await sub(t, path)
  t.same(
    everything.map((l) => l.event),
    [{ i: 1 }, { i: 2 }, { i: 3 }, { i: 4 }],
  )
  const second = everything[1]!
  t.ok(Date.parse(second.time) > Date.parse(everything[0]!.time), 'the events have distinct times')

  const [from, since, sinceLate, count2, fromCount] = await Promise.all([
    sub(t, path, '--from', String(seqs[2])),
    sub(t, path, '--since', second.time),
    sub(t, path, '--since', new Date(Date.now() + 3_600_000).toISOString()),
    sub(t, path, '--count', '2'),
    sub(t, path, '--from', String(seqs[1]), '--count', '2'),
  ])
  t.same(
    from.map((l) => l.seq),
    seqs.slice(2),
    '--from a position: that event and the later ones',
  )
  t.same(
    since.map((l) => l.event),
    [{ i: 2 }, { i: 3 }, { i: 4 }],
    '--since the time of the 2nd event: from the 2nd on',
  )
  t.same(sinceLate, [], '--since in the future: none, and no waiting')
  t.same(
    count2.map((l) => l.event),
    [{ i: 1 }, { i: 2 }],
    '--count 2: the first two',
  )
  t.same(
    fromCount.map((l) => l.seq),
    seqs.slice(1, 3),
    '--from with --count',
  )

  // The same over gRPC, at the edges.
  const seqsOf = async (req: { fromSeq?: bigint; since?: ReturnType<typeof timestampFromMs>; count?: bigint }) => {
    const out: number[] = []
    for await (const ev of streams.subscribe({ path, ...req })) out.push(Number(ev.seq))
    return out
  }
  t.same(await seqsOf({ fromSeq: BigInt(seqs[0]! + 1) }), seqs.slice(1), 'from just after a position: the next event on')
  t.same(await seqsOf({ since: timestampFromMs(Date.parse('2000-01-01T00:00:00Z')) }), seqs, 'since long ago: all')
  t.same(await seqsOf({ since: timestampFromMs(Date.parse(everything[2]!.time)), count: 1n }), [seqs[2]], 'since the 3rd event, one event')
  t.same(await seqsOf({ fromSeq: BigInt(seqs[3]! + 1000) }), [], 'from past the end: none')

  const [both, badTime, badFrom] = await Promise.all([
    cli('stream', 'sub', path, '--from', '1', '--since', second.time),
    cli('stream', 'sub', path, '--since', 'yesterday-ish'),
    cli('stream', 'sub', path, '--from', '-3'),
  ])
  t.equal(both.code, 2, '--from with --since: a usage error')
  t.equal(badTime.code, 2, 'a bad --since time: exit 2')
  t.match(badTime.stderr, /yesterday-ish/)
  t.equal(badFrom.code, 2, 'a bad --from: exit 2')
})

t.test('a following subscriber gets events published after it started, until it stops', async (t) => {
  const path = '/plant/live'
  const controller = new AbortController()
  const got: Array<{ seq: number; json: string }> = []
  const done = (async () => {
    for await (const ev of streams.subscribe({ path, follow: true }, { signal: controller.signal })) got.push({ seq: Number(ev.seq), json: ev.json })
  })().then(
    () => 'ended',
    (err: unknown) => err,
  )

  const a = Number((await streams.publish({ path, events: ['{"k":"a"}'] })).seqs[0])
  await poll('the subscriber to get the first event', () => got.length >= 1)
  t.same(got, [{ seq: a, json: '{"k":"a"}' }], 'the event published after the subscribe started')

  const b = await pub(t, path, { k: 'b' })
  const more = (await streams.publish({ path, events: ['{"k":"c"}', '{"k":"d"}'] })).seqs.map(Number)
  await poll('the subscriber to get four events', () => got.length >= 4)
  t.same(
    got.map((e) => e.seq),
    [a, b, ...more],
    'every event, in order, once',
  )

  // Many publishes in a row: none may be left waiting for a later one to wake the subscriber.
  const burst: number[] = []
  for (let i = 0; i < 100; i++) burst.push(Number((await streams.publish({ path, events: [JSON.stringify({ burst: i })] })).seqs[0]))
  await poll(`the subscriber to get all ${4 + burst.length} events (has ${got.length})`, () => got.length >= 4 + burst.length, 10_000).catch((err: Error) => t.fail(err.message))
  t.same(
    got.slice(4).map((e) => e.seq),
    burst,
    'a burst of events arrives complete and in order',
  )

  controller.abort()
  const outcome = await Promise.race([done, poll('the subscription to end', () => false, 5_000).catch(() => 'still running')])
  t.not(outcome, 'still running', 'aborting the signal ends the iteration')
  if (outcome !== 'ended') t.ok(isFabricError(outcome), `it ends with a FabricError, if any (${String(outcome)})`)
  const n = got.length
  await streams.publish({ path, events: ['{"k":"after"}'] })
  t.equal(got.length, n, 'nothing arrives after the abort')
})

t.test('a following subscriber is never left behind by concurrent publishers', async (t) => {
  // Publishers that race each other: after every round the subscriber must catch up on its own,
  // without a later event to wake it.
  const path = '/plant/live'
  const start = (await all(path)).at(-1)!.seq + 1
  const controller = new AbortController()
  t.teardown(() => controller.abort())
  const got: number[] = []
  const done = (async () => {
    for await (const ev of streams.subscribe({ path, fromSeq: BigInt(start), follow: true }, { signal: controller.signal })) got.push(Number(ev.seq))
  })().catch(() => undefined)
  const sent: number[] = []
  let behind: string | undefined
  for (let round = 0; round < 150 && !behind; round++) {
    const results = await Promise.all(Array.from({ length: 1 + (round % 4) }, (_, i) => streams.publish({ path, events: [JSON.stringify({ round, i })] })))
    for (const r of results) sent.push(...r.seqs.map(Number))
    await poll('catch up', () => got.length >= sent.length, 5_000, 5).catch(() => {
      behind = `round ${round}: the subscriber has ${got.length} of ${sent.length} events; the newest ones are applied but were not delivered`
    })
  }
  t.notOk(behind, behind ?? 'the subscriber kept up with every round')
  if (!behind) {
    t.same(
      got.slice(0, sent.length),
      [...sent].sort((a, b) => a - b),
      'every event once, in log order',
    )
  }
  controller.abort()
  await done
})

t.test('fabric stream sub --follow prints new events until Ctrl-C', async (t) => {
  const path = '/plant/live'
  const last = (await all(path)).at(-1)!.seq
  const child = spawn(process.execPath, [CLI, 'stream', 'sub', path, '--from', String(last + 1), '--follow', '-o', 'json', '-s', node.api], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)))
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  // The subscriber has started once it holds a call open; publish until it shows the event.
  const seq = Number((await streams.publish({ path, events: ['{"live":1}'] })).seqs[0])
  const line = await poll(`the follower to print the event (stderr: ${stderr})`, () => stdout.split('\n').find((l) => l.includes('"live"')))
  t.match(JSON.parse(line), { seq, event: { live: 1 } })
  child.kill('SIGINT')
  t.equal(await exited, 0, 'Ctrl-C ends it with exit 0')
  t.equal(stderr, '', 'and no error')
})

t.test('JSON lines on stdin are published in order', async (t) => {
  const path = '/plant/stdin'
  const r = await cliWithStdin(['stream', 'pub', path, '-o', 'json'], '{"line":1}\n\n{"line":2}\r\n  \n[3,"three"]\n"four"\n')
  t.equal(r.code, 0, r.stderr)
  const out = JSON.parse(r.stdout) as { published: number; seqs: number[] }
  t.equal(out.published, 4, 'blank lines are skipped')
  t.ok(increasing(out.seqs), 'positions increase')
  t.same(
    (await sub(t, path)).map((l) => l.event),
    [{ line: 1 }, { line: 2 }, [3, 'three'], 'four'],
    'in the order of the lines',
  )

  const many = Array.from({ length: 450 }, (_, i) => JSON.stringify({ n: i }))
  const big = await cliWithStdin(['stream', 'pub', path, '-'], `${many.join('\n')}\n`)
  t.equal(big.code, 0, big.stderr)
  t.match(big.stdout, /^published 450 event\(s\) at \d+\.\.\d+$/m, '"-" reads stdin too')
  const events = await all(path)
  t.same(
    events.slice(4).map((e) => e.json),
    many,
    'hundreds of lines (several batches) keep their order',
  )
  t.ok(increasing(events.map((e) => e.seq)))
  t.equal(await count(path), 454)

  const bad = await cliWithStdin(['stream', 'pub', path], '{"ok":1}\n{"ok":2}\n{"oops":\n{"ok":4}\n')
  t.equal(bad.code, 2, 'a bad line: exit 2 (INVALID_ARGUMENT)')
  t.match(bad.stderr, /stdin line 3: invalid JSON/, 'naming the line')
  t.equal(await count(path), 454, 'nothing of its batch was published')

  // A bad line after a full batch: the batch before it is published, and the message says so.
  const lines = Array.from({ length: 205 }, (_, i) => (i === 201 ? 'not json' : JSON.stringify({ late: i })))
  const late = await cliWithStdin(['stream', 'pub', path], `${lines.join('\n')}\n`)
  t.equal(late.code, 2)
  t.match(late.stderr, /stdin line 202: invalid JSON.*\(200 events before it were published\)/)
  t.equal(await count(path), 654, 'exactly the 200 events before it')
})

t.test('bad events get a clear error and nothing is appended', async (t) => {
  const path = '/plant/bad'
  await pub(t, path, { ok: true })
  const before = await count(path)
  const beforeEvents = await all(path)

  const [badJson, table, unknown, badPath, subUnknown, subTable] = await Promise.all([
    cli('stream', 'pub', path, '{"temp": 21.5'),
    cli('stream', 'pub', '/plant/temps', '{"x":1}'),
    cli('stream', 'pub', '/plant/nope', '{"x":1}'),
    cli('stream', 'pub', '/plant/../etc', '{"x":1}'),
    cli('stream', 'sub', '/plant/nope'),
    cli('stream', 'sub', '/plant/temps'),
  ])
  t.equal(badJson.code, 2, 'invalid JSON: exit 2')
  t.match(badJson.stderr, /not valid JSON/)
  t.equal(table.code, 8, 'publishing to a table dataset: exit 8 (FAILED_PRECONDITION)')
  t.match(table.stderr, /\/plant\/temps is a table dataset, not a stream dataset/)
  t.equal(unknown.code, 3, 'an unknown stream: exit 3 (NOT_FOUND)')
  t.match(unknown.stderr, /\/plant\/nope does not exist/)
  t.equal(badPath.code, 2, 'a malformed path: exit 2')
  t.equal(subUnknown.code, 3, 'sub of an unknown stream: exit 3')
  t.equal(subTable.code, 8, 'sub of a table dataset: exit 8')

  const rejected = async (what: string, events: string[], message: RegExp) => {
    const err = await streams.publish({ path, events }).catch((e: unknown) => e)
    t.ok(isFabricError(err, 'INVALID_ARGUMENT'), `${what}: INVALID_ARGUMENT (got ${String(err)})`)
    t.match((err as Error).message, message, `${what}: the message says why`)
  }
  const tooBig = JSON.stringify({ blob: 'x'.repeat(MAX_EVENT) })
  await rejected('an event over 512 KiB', [tooBig], new RegExp(`${Buffer.byteLength(tooBig)} bytes; the limit is ${MAX_EVENT}`))
  await rejected('one bad event in a batch', ['{"a":1}', '{"b":', '{"c":3}'], /event 2: invalid JSON/)
  await rejected('one oversized event in a batch', ['{"a":1}', tooBig], /event 2: .*the limit is 524288/)
  await rejected('an empty event', [''], /empty/)
  await rejected('no events', [], /at least one event/)

  t.equal(await count(path), before, 'ds stat count unchanged')
  t.same(await all(path), beforeEvents, 'the stream holds the same events')

  // The limit is inclusive: an event of exactly 512 KiB is accepted and reads back whole.
  const atLimit = JSON.stringify('y'.repeat(MAX_EVENT - 2))
  t.equal(Buffer.byteLength(atLimit), MAX_EVENT)
  const seq = Number((await streams.publish({ path, events: [atLimit] })).seqs[0])
  const back = (await all(path)).at(-1)!
  t.equal(back.seq, seq)
  t.equal(back.json, atLimit, 'an event at the limit round-trips')
})
