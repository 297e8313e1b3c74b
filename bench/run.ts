/**
 * fabric's benchmarks, one command: `npm run bench` (builds, then runs this with tsx).
 *
 * Every fabric figure is printed next to a raw baseline measured in the same run against the same
 * nats-server (or, for gRPC latency, a bare grpc-js server), and the ratio. A full run also writes
 * the results into docs/benchmarks.md.
 *
 *   BENCH_QUICK=1     small sizes everywhere: a smoke run of a minute or so (docs are not written)
 *   BENCH_BIG_MB=N    size of benchmark 4's file in MiB (default 2048; 0 skips benchmark 4)
 */
import path from 'node:path'
import { ROOT } from '../test/harness/index.ts'
import { benchBigFile, benchFiles } from './files.ts'
import { loadAverage, machine, printResults, writeDoc, type Results } from './report.ts'
import { startStack, withScope } from './stack.ts'
import { benchGetLatency, benchImport, benchSinglePuts } from './tables.ts'

interface Settings {
  quick: boolean
  records: number
  puts: number
  gets: number
  getWarmup: number
  fileMiB: number
  bigMiB: number
}

function settings(): Settings {
  const quick = process.env.BENCH_QUICK === '1'
  const big = process.env.BENCH_BIG_MB
  const bigMiB = big === undefined || big === '' ? (quick ? 64 : 2048) : Number(big)
  if (!Number.isInteger(bigMiB) || bigMiB < 0) throw new Error(`BENCH_BIG_MB: expected a whole number of MiB, got ${JSON.stringify(big)}`)
  return quick
    ? { quick, records: 5_000, puts: 200, gets: 1_000, getWarmup: 200, fileMiB: 16, bigMiB }
    : { quick, records: 100_000, puts: 2_000, gets: 5_000, getWarmup: 1_000, fileMiB: 256, bigMiB }
}

const describe = (s: Settings) =>
  `${s.quick ? 'BENCH_QUICK=1, ' : ''}${s.records} records, ${s.puts} puts, ${s.gets} gets, ${s.fileMiB} MiB file, ${s.bigMiB ? `${s.bigMiB} MiB big file` : 'big file skipped'}`

/** Runs one step, saying what it is doing and how long it took (progress on a long run). */
async function step<T>(what: string, fn: () => Promise<T>): Promise<T> {
  process.stdout.write(`${what} ... `)
  const started = performance.now()
  const value = await fn()
  console.log(`${((performance.now() - started) / 1000).toFixed(1)} s`)
  return value
}

async function main(): Promise<void> {
  const s = settings()
  const started = performance.now()
  const loadBefore = loadAverage()
  console.log(`fabric benchmarks: ${describe(s)}; load average ${loadBefore.toFixed(2)}`)
  const results: Results = { comparisons: [], figures: [], notes: [] }

  await withScope(async (scope) => {
    const stack = await step('starting nats-server and a fabric node', () => startStack(scope))
    results.comparisons.push(await step(`1a. import ${s.records} records`, () => benchImport(stack, s.records)))
    results.comparisons.push(await step(`1b. ${s.puts} sequential puts`, () => benchSinglePuts(stack, s.puts)))
    results.comparisons.push(...(await step(`2.  ${s.gets} sequential gets`, () => benchGetLatency(scope, stack, s.records, s.gets, s.getWarmup))))
    results.comparisons.push(...(await step(`3.  ${s.fileMiB} MiB file put/get`, () => benchFiles(stack, s.fileMiB * 1024 * 1024))))
  })
  if (s.bigMiB > 0) {
    // A fresh node and server: the RSS at start is then the node's own baseline, not what the
    // benchmarks before left behind.
    await withScope(async (scope) => {
      const stack = await step('starting a fresh nats-server and fabric node', () => startStack(scope))
      const big = await step(`4.  ${s.bigMiB} MiB file through the node`, () => benchBigFile(stack, s.bigMiB * 1024 * 1024))
      results.figures.push(...big.figures)
      results.notes.push(...big.notes)
    })
  }
  results.notes.push(
    '1a/1b: same JSON records (~150 B) on both sides; fabric acknowledges after the write is durable in its outbox, in the log and applied to its store; raw after the JetStream ack.',
    '2: fabric p50/p99 over sequential calls through the fabric client; echo over the same number, alternating in blocks of 250.',
    '3: MB/s = 10^6 bytes/s; the Object Store used 256 KiB chunks like fabric; "native" = setSha256Backend("native") (node:crypto), "js" = the library default.',
  )
  const seconds = (performance.now() - started) / 1000
  const load = `${loadBefore.toFixed(2)} before, ${loadAverage().toFixed(2)} after`
  printResults(results)
  console.log(`\ntotal ${seconds.toFixed(0)} s; load average ${load}`)
  if (s.quick) {
    console.log('quick run: docs/benchmarks.md left as it is')
    return
  }
  const doc = path.join(ROOT, 'docs', 'benchmarks.md')
  await writeDoc(doc, results, await machine(), describe(s), seconds, load)
  console.log(`results written to ${path.relative(ROOT, doc)}`)
}

main().then(
  // Exit explicitly: a client library's lingering timer must not keep a finished run alive.
  () => process.exit(0),
  (err: unknown) => {
    console.error('\nbenchmark failed:', err)
    process.exit(1)
  },
)
