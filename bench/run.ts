/**
 * fabric's benchmarks, one command: `npm run bench` (builds, then runs this with tsx).
 *
 * Every fabric figure is printed next to a raw baseline measured in the same run against the same
 * nats-server (or, for gRPC latency, a bare grpc-js server; for replication, two nats-servers
 * linked like fabric's sites), and the ratio. A run that is not quick also writes its results
 * into docs/benchmarks.md, one section per group: the sections of the groups it ran are
 * replaced, the others keep the figures of the run that wrote them (each section says when).
 *
 *   BENCH_ONLY=a,b    run only these groups (default: all), of
 *                       tables       1a/1b table writes, 2 table reads
 *                       files        3 file put/get
 *                       memory       4 node memory with a big file
 *                       replication  5-8 edge -> hub replication, backlog catch-up, snapshots
 *                       models       9-11 model serving: predict latency, batched throughput, hot swaps
 *   BENCH_QUICK=1     small sizes everywhere: a smoke run (docs are not written)
 *   BENCH_BIG_MB=N    size of benchmark 4's file in MiB (default 2048; 0 skips benchmark 4)
 */
import path from 'node:path'
import { ROOT } from '../test/harness/index.ts'
import { benchBigFile, benchFiles } from './files.ts'
import { benchModels, describeModels, type ModelSettings } from './models.ts'
import { describeReplication, benchReplication, type ReplicationSettings } from './replication.ts'
import { loadAverage, machine, printResults, writeDoc, type GroupRun, type Results } from './report.ts'
import { startStack, withScope, type Scope, type Stack } from './stack.ts'
import { benchGetLatency, benchImport, benchSinglePuts } from './tables.ts'

/** The groups BENCH_ONLY selects from, in the order they run and appear in the doc. */
const GROUPS = ['tables', 'files', 'memory', 'replication', 'models'] as const
type Group = (typeof GROUPS)[number]

interface Settings {
  quick: boolean
  groups: Group[]
  records: number
  puts: number
  gets: number
  getWarmup: number
  fileMiB: number
  bigMiB: number
  replication: ReplicationSettings
  models: ModelSettings
}

function selectedGroups(): Group[] {
  const only = process.env.BENCH_ONLY
  if (only === undefined || only.trim() === '') return [...GROUPS]
  const names = only.split(',').map((n) => n.trim()).filter(Boolean)
  const unknown = names.filter((n) => !(GROUPS as readonly string[]).includes(n))
  if (unknown.length > 0) throw new Error(`BENCH_ONLY: unknown group ${JSON.stringify(unknown[0])}; expected a comma-separated list of ${GROUPS.join(', ')}`)
  return GROUPS.filter((g) => names.includes(g))
}

function settings(): Settings {
  const quick = process.env.BENCH_QUICK === '1'
  const big = process.env.BENCH_BIG_MB
  const bigMiB = big === undefined || big === '' ? (quick ? 64 : 2048) : Number(big)
  if (!Number.isInteger(bigMiB) || bigMiB < 0) throw new Error(`BENCH_BIG_MB: expected a whole number of MiB, got ${JSON.stringify(big)}`)
  const groups = selectedGroups().filter((g) => g !== 'memory' || bigMiB > 0)
  if (groups.length === 0) throw new Error('nothing to run: BENCH_ONLY=memory with BENCH_BIG_MB=0')
  return quick
    ? {
        quick, groups, records: 5_000, puts: 200, gets: 1_000, getWarmup: 200, fileMiB: 16, bigMiB,
        replication: { records: 10_000, fileMiB: 16, backlog: 20_000, outageMs: 10_000, snapshotAt: [10_000, 50_000], snapshots: 10 },
        models: { calls: 500, warmup: 100, requests: 2_000, batches: 500, bigRequests: 300, bigBatches: 10, swaps: 2 },
      }
    : {
        quick, groups, records: 100_000, puts: 2_000, gets: 5_000, getWarmup: 1_000, fileMiB: 256, bigMiB,
        replication: { records: 100_000, fileMiB: 256, backlog: 100_000, outageMs: 10_000, snapshotAt: [10_000, 1_000_000], snapshots: 20 },
        models: { calls: 5_000, warmup: 1_000, requests: 30_000, batches: 10_000, bigRequests: 4_000, bigBatches: 100, swaps: 6 },
      }
}

/** What each group ran with, in words (printed, and written in its doc section). */
function describe(s: Settings, g: Group): string {
  const quick = s.quick ? 'BENCH_QUICK=1, ' : ''
  switch (g) {
    case 'tables':
      return `${quick}${s.records} records, ${s.puts} puts, ${s.gets} gets`
    case 'files':
      return `${quick}${s.fileMiB} MiB file`
    case 'memory':
      return `${quick}${s.bigMiB} MiB file`
    case 'replication':
      return `${quick}${describeReplication(s.replication)}`
    case 'models':
      return `${quick}${describeModels(s.models)}`
  }
}

const TITLES: Record<Group, string> = {
  tables: 'Tables (1-2)',
  files: 'Files (3)',
  memory: 'Node memory (4)',
  replication: 'Replication between sites (5-8)',
  models: 'Model serving (9-11)',
}

/** Runs one step, saying what it is doing and how long it took (progress on a long run). */
async function step<T>(what: string, fn: () => Promise<T>): Promise<T> {
  process.stdout.write(`${what} ... `)
  const started = performance.now()
  const value = await fn()
  console.log(`${((performance.now() - started) / 1000).toFixed(1)} s`)
  return value
}

const empty = (): Results => ({ comparisons: [], figures: [], notes: [] })

async function benchTables(scope: Scope, stack: Stack, s: Settings): Promise<Results> {
  const r = empty()
  r.comparisons.push(await step(`1a. import ${s.records} records`, () => benchImport(stack, s.records)))
  r.comparisons.push(await step(`1b. ${s.puts} sequential puts`, () => benchSinglePuts(stack, s.puts)))
  r.comparisons.push(...(await step(`2.  ${s.gets} sequential gets`, () => benchGetLatency(scope, stack, s.records, s.gets, s.getWarmup))))
  r.notes.push(
    '1a/1b: same JSON records (~150 B) on both sides; fabric acknowledges after the write is durable in its outbox, in the log and applied to its store; raw after the JetStream ack.',
    '2: fabric p50/p99 over sequential calls through the fabric client; echo over the same number, alternating in blocks of 250.',
  )
  return r
}

async function benchFileGroup(stack: Stack, s: Settings): Promise<Results> {
  const r = empty()
  r.comparisons.push(...(await step(`3.  ${s.fileMiB} MiB file put/get`, () => benchFiles(stack, s.fileMiB * 1024 * 1024))))
  r.notes.push('3: MB/s = 10^6 bytes/s; the Object Store used 256 KiB chunks like fabric; "native" = setSha256Backend("native") (node:crypto), "js" = the library default.')
  return r
}

async function main(): Promise<void> {
  const s = settings()
  const started = performance.now()
  console.log(`fabric benchmarks: ${s.groups.map((g) => `${g} (${describe(s, g)})`).join('; ')}; load average ${loadAverage().toFixed(2)}`)
  const runs: GroupRun[] = []
  /** Runs a group, timing it and recording the load average around it. */
  const group = async (g: Group, fn: () => Promise<Results>) => {
    if (!s.groups.includes(g)) return
    const t0 = performance.now()
    const loadBefore = loadAverage()
    const results = await fn()
    runs.push({ group: g, title: TITLES[g], results, settings: describe(s, g), seconds: (performance.now() - t0) / 1000, load: `${loadBefore.toFixed(2)} before, ${loadAverage().toFixed(2)} after` })
  }

  if (s.groups.includes('tables') || s.groups.includes('files')) {
    await withScope(async (scope) => {
      const stack = await step('starting nats-server and a fabric node', () => startStack(scope))
      await group('tables', () => benchTables(scope, stack, s))
      await group('files', () => benchFileGroup(stack, s))
    })
  }
  // A fresh node and server: the RSS at start is then the node's own baseline, not what the
  // benchmarks before left behind.
  await group('memory', () =>
    withScope(async (scope) => {
      const stack = await step('starting a fresh nats-server and fabric node', () => startStack(scope))
      const big = await step(`4.  ${s.bigMiB} MiB file through the node`, () => benchBigFile(stack, s.bigMiB * 1024 * 1024))
      return { comparisons: [], figures: big.figures, notes: big.notes }
    }),
  )
  await group('replication', () => withScope((scope) => benchReplication(scope, s.replication, step)))
  await group('models', () => withScope((scope) => benchModels(scope, s.models, step)))

  const seconds = (performance.now() - started) / 1000
  printResults({
    comparisons: runs.flatMap((r) => r.results.comparisons),
    figures: runs.flatMap((r) => r.results.figures),
    notes: runs.flatMap((r) => r.results.notes),
  })
  console.log(`\ntotal ${seconds.toFixed(0)} s; load average ${loadAverage().toFixed(2)}`)
  if (s.quick) {
    console.log('quick run: docs/benchmarks.md left as it is')
    return
  }
  const doc = path.join(ROOT, 'docs', 'benchmarks.md')
  await writeDoc(doc, runs, GROUPS, await machine())
  console.log(`results of ${runs.map((r) => r.group).join(', ')} written to ${path.relative(ROOT, doc)}`)
}

main().then(
  // Exit explicitly: a client library's lingering timer must not keep a finished run alive.
  () => process.exit(0),
  (err: unknown) => {
    console.error('\nbenchmark failed:', err)
    process.exit(1)
  },
)
