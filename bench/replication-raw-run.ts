/**
 * Prints the raw replication baselines on their own (a check that bench/replication-raw.ts works,
 * and the figures fabric's replication benchmarks are held against):
 *
 *   npx tsx bench/replication-raw-run.ts
 *
 *   REPL_RECORDS=N    records for the record throughput (default 20000)
 *   REPL_CHUNK_MB=N   MiB of 256 KiB messages for the chunk throughput (default 64)
 *   REPL_BACKLOG=N    records in the offline backlog (default 100000)
 *   REPL_OUTAGE_MS=N  how long the link stays cut for a backlog, at least (default 10000): the
 *                     2.9 mirror's resume delay depends on it, so it is fixed rather than left
 *                     to however long the backlog took to write
 *
 * A watchdog stops the run (and every server it started) after RUN_LIMIT_MS.
 */
import { content, MiB } from './content.ts'
import { fmt } from './report.ts'
import { rawBacklogCatchUp, rawMirrorThroughput, recordMessages, startRawSites, type ThroughputResult } from './replication-raw.ts'
import { withScope } from './stack.ts'

const RUN_LIMIT_MS = 170_000

function count(name: string, fallback: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const n = Number(raw)
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name}: expected a positive whole number, got ${JSON.stringify(raw)}`)
  return n
}

async function chunks(totalBytes: number): Promise<Uint8Array[]> {
  const out: Uint8Array[] = []
  for await (const piece of content('replication-raw', totalBytes)) out.push(piece)
  return out
}

const rate = (r: ThroughputResult) =>
  `${fmt(r.messages / r.seconds)} msg/s, ${fmt(r.bytes / r.seconds / 1e6)} MB/s (${r.messages} msgs, ${fmt(r.bytes / 1e6)} MB in ${r.seconds.toFixed(3)} s; edge publish alone ${r.publishSeconds.toFixed(3)} s)`

async function main(): Promise<void> {
  const n = count('REPL_RECORDS', 20_000)
  const chunkMiB = count('REPL_CHUNK_MB', 64)
  const backlog = count('REPL_BACKLOG', 100_000)
  const minOutageMs = count('REPL_OUTAGE_MS', 10_000)
  const records = recordMessages(n)
  const pieces = await chunks(chunkMiB * MiB)

  for (const proxy of [false, true]) {
    await withScope(async (scope) => {
      const sites = await startRawSites(scope, { proxy })
      console.log(`\nleafnode ${proxy ? 'through the TCP proxy' : 'direct'}: hub ${sites.hub.server.url}, edge ${sites.edge.server.url}`)
      console.log(`  ${n} records (~${Math.round(records.reduce((s, m) => s + m.length, 0) / n)} B):  ${rate(await rawMirrorThroughput(sites, records))}`)
      console.log(`  ${chunkMiB} MiB in 256 KiB messages:  ${rate(await rawMirrorThroughput(sites, pieces))}`)
      if (!proxy) return
      const b = await rawBacklogCatchUp(sites, backlog, { minOutageMs })
      console.log(
        `  backlog of ${b.messages} records (${fmt(b.bytes / 1e6)} MB) after a ${b.outageSeconds.toFixed(1)} s outage: caught up ${b.seconds.toFixed(2)} s after restore ` +
          `(leafnode up ${b.leafnodeSeconds.toFixed(2)} s, first message ${b.reconnectSeconds.toFixed(2)} s, transfer ${b.transferSeconds.toFixed(2)} s = ${fmt(b.messages / b.transferSeconds)} records/s)`,
      )
      // The mirror alone moving chunks, with no producer competing: its own ceiling.
      const c = await rawBacklogCatchUp(sites, pieces, { minOutageMs })
      console.log(
        `  backlog of ${chunkMiB} MiB in 256 KiB messages after a ${c.outageSeconds.toFixed(1)} s outage: caught up ${c.seconds.toFixed(2)} s after restore ` +
          `(leafnode up ${c.leafnodeSeconds.toFixed(2)} s, first message ${c.reconnectSeconds.toFixed(2)} s, transfer ${c.transferSeconds.toFixed(2)} s = ${fmt(c.bytes / c.transferSeconds / 1e6)} MB/s)`,
      )
    })
  }
}

// Past the limit, SIGTERM ourselves: bench/stack.ts stops every open scope's servers on it.
setTimeout(() => {
  console.error(`\nstill running after ${RUN_LIMIT_MS / 1000} s: stopping`)
  process.kill(process.pid, 'SIGTERM')
}, RUN_LIMIT_MS).unref()

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error('\nfailed:', err)
    process.exit(1)
  },
)
