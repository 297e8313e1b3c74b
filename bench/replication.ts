/**
 * Benchmarks 5 to 8: replication from an edge site to its hub.
 *
 * Fabric side: two real nodes started through the test harness, a hub (site "hub", a leafnode
 * listener advertising a TCP proxy's address) and an edge (site "edge", dialling the hub through
 * that proxy, so the link can be cut), each with its embedded nats-server. Volumes are homed at
 * the edge with the hub as replica: writes go in at the edge, and the hub's copy of the volume
 * log (a JetStream mirror across the leafnode) is applied by the hub node. "Replicated" means
 * applied at the hub, read from the hub's GetVolume (stats.appliedSeq) every POLL_MS.
 *
 * Raw side (bench/replication-raw.ts): two standalone nats-servers of the same version linked the
 * same way (leafnode through a proxy), with a plain mirror at the hub of a stream at the edge,
 * fed the same record bytes or the same 256 KiB pieces.
 */
import { setTimeout as delay } from 'node:timers/promises'
import type { MessageInitShape } from '@bufbuild/protobuf'
import { createClient, type Client } from '../node/api/index.ts'
import { FileService } from '../proto/gen/fabric/v1/file_pb.ts'
import { DatasetKind, NamespaceService } from '../proto/gen/fabric/v1/namespace_pb.ts'
import { SnapshotService } from '../proto/gen/fabric/v1/snapshot_pb.ts'
import type { ImportRequestSchema } from '../proto/gen/fabric/v1/table_pb.ts'
import { TableService } from '../proto/gen/fabric/v1/table_pb.ts'
import { freePort, poll, startNode, type NodeProcess } from '../test/harness/index.ts'
import { startProxy, type Proxy } from '../test/harness/proxy.ts'
import { content, contentSha256, MiB, record } from './content.ts'
import { putMessages } from './files.ts'
import { cpuTicks, mbps, quantile, settle as settleAll, TICKS_PER_SECOND } from './measure.ts'
import { rawBacklogCatchUp, rawMirrorThroughput, recordMessages, startRawSites, PUBLISH_WINDOW, type RawSites } from './replication-raw.ts'
import { fmt, type Comparison, type Figure, type Results } from './report.ts'
import type { Scope } from './stack.ts'

/** How often the hub's progress is read (the raw side reads its mirror every 10 ms). */
const POLL_MS = 20
/** Docs per ImportRequest message, as bench/tables.ts. */
const DOCS_PER_MESSAGE = 500
/** Warm-up before each throughput run (off the clock): the mirrors and followers are running. */
const WARMUP_RECORDS = 2_000
const WARMUP_FILE_BYTES = 4 * MiB
/** Snapshots taken (off the clock) before the timed ones, at each volume size. */
const SNAPSHOT_WARMUP = 3
/**
 * Before each timed fabric run the four fabric processes must be quiet (LevelDB compacts after a
 * big import): at most QUIET_TICKS clock ticks of CPU among them over QUIET_WINDOW_MS.
 */
const QUIET_WINDOW_MS = 500
const QUIET_TICKS = 5

export interface ReplicationSettings {
  /** Records for benchmark 5. */
  records: number
  /** File size for benchmark 6, MiB. */
  fileMiB: number
  /** Records written at the edge while the link is cut (benchmark 7). */
  backlog: number
  /** How long the link stays cut, at least, for both fabric and raw (benchmark 7). */
  outageMs: number
  /** Volume sizes, in records, at which snapshot creation is timed (benchmark 8). */
  snapshotAt: [number, number]
  /** Snapshots timed at each size. */
  snapshots: number
}

export const describeReplication = (s: ReplicationSettings): string =>
  `${s.records} records, ${s.fileMiB} MiB file, backlog of ${s.backlog} records after a ${s.outageMs / 1000} s outage, ` +
  `${s.snapshots} snapshots at ${s.snapshotAt[0]} and at ${s.snapshotAt[1]} records`

// ---- the fabric sites ----

interface FabricSites {
  hub: NodeProcess
  edge: NodeProcess
  proxy: Proxy
  /** Clients of the hub (catalog writes, progress) and of the edge (data writes). */
  hubNs: Client<typeof NamespaceService>
  edgeNs: Client<typeof NamespaceService>
  tables: Client<typeof TableService>
  files: Client<typeof FileService>
  snapshots: Client<typeof SnapshotService>
  /** True while the edge's nats-server has its leafnode to the hub (its /leafz). */
  leafnodeUp(): Promise<boolean>
}

/**
 * A hub node and an edge node linked through a proxy: the hub advertises the proxy's address
 * (else the edge would reconnect around it, docs/operations.md "The advertise pitfall").
 */
async function startFabricSites(scope: Scope): Promise<FabricSites> {
  const proxy = await startProxy(scope)
  const leafPort = await freePort()
  // Log level info (the node's default) rather than the harness's debug: production settings.
  const log = { level: 'info' }
  const hub = await startNode(scope, {
    config: { node: { site: 'hub' }, nats: { leafnode_listen: `127.0.0.1:${leafPort}`, leafnode_advertise: proxy.address }, log },
    timeoutMs: 60_000,
  })
  proxy.setTarget(`127.0.0.1:${leafPort}`)
  const edge = await startNode(scope, {
    config: { node: { site: 'edge' }, nats: { hub_urls: [`nats-leaf://${proxy.address}`], monitor_listen: '127.0.0.1:0' }, log },
    timeoutMs: 60_000,
  })
  const hubNs = createClient(NamespaceService, hub.api)
  const edgeNs = createClient(NamespaceService, edge.api)
  const tables = createClient(TableService, edge.api)
  const files = createClient(FileService, edge.api)
  const snapshots = createClient(SnapshotService, edge.api)
  scope.teardown(() => [hubNs, edgeNs, tables, files, snapshots].forEach((c) => c.close()))
  const leafnodeUp = async () => {
    const r = await fetch(`${edge.monitor}/leafz`, { signal: AbortSignal.timeout(2_000) })
    return (((await r.json()) as { leafnodes?: number }).leafnodes ?? 0) > 0
  }
  // The edge learns the catalog's home from the hub and resolves names itself from then on.
  await poll('the edge to know the catalog home', async () => (await edgeNs.listVolumes({})).volumes.some((v) => v.path === '/' && v.home === 'hub'), 60_000, 100)
  return { hub, edge, proxy, hubNs, edgeNs, tables, files, snapshots, leafnodeUp }
}

/**
 * Creates a volume homed at the edge with the hub as replica, and its datasets; resolves once the
 * edge knows every dataset and the hub has the volume open.
 */
async function createEdgeVolume(f: FabricSites, path: string, datasets: Array<[string, 'table' | 'files']>): Promise<void> {
  await f.hubNs.createVolume({ path, home: 'edge', replicas: ['hub'] })
  for (const [name, kind] of datasets) {
    await f.hubNs.createDataset({ path: `${path}/${name}`, kind: kind === 'table' ? DatasetKind.TABLE : DatasetKind.FILES })
  }
  for (const [name] of datasets) await poll(`the edge to know ${path}/${name}`, () => f.edgeNs.getDataset({ path: `${path}/${name}` }), 30_000, 50)
  await poll(`the hub to open ${path}`, async () => (await f.hubNs.getVolume({ path })).held, 30_000, 50)
}

/** One reading of the hub's copy of a volume. */
interface Sample {
  /** performance.now() when the answer came. */
  at: number
  /** Log position the hub node has applied. */
  applied: number
  /** Last position in the hub's mirror of the log: what has crossed the leafnode. */
  arrived: number
  /** Bytes of the hub's log and chunk mirrors. */
  logBytes: number
  /** CPU time the hub node and its nats-server have used so far, in clock ticks. */
  hubNodeTicks: number
  hubNatsTicks: number
}

/**
 * Reads the hub's GetVolume every POLL_MS and keeps every sample, so that when a position is
 * learnt (an import returns its last one) the moment it was reached can still be looked up.
 */
function watchHub(f: FabricSites, path: string) {
  const samples: Sample[] = []
  let stopped = false
  // A busy hub may fail a reading now and then (a JetStream timeout): the next one counts.
  let lastError: unknown
  const loop = (async () => {
    while (!stopped) {
      await hubNow(f, path).then((s) => samples.push(s), (err: unknown) => (lastError = err))
      await delay(POLL_MS)
    }
  })()
  return {
    /** The first sample that satisfies pred, if any yet. */
    first: (pred: (s: Sample) => boolean) => samples.find(pred),
    /** Resolves with the first sample at which the hub had applied seq. */
    async applied(seq: number, timeoutMs: number): Promise<Sample> {
      return poll(`the hub to apply position ${seq} of ${path}`, () => samples.find((s) => s.applied >= seq), timeoutMs, 5).catch((err: unknown) => {
        const last = samples.at(-1)
        throw new Error(`${String(err)} (last seen: applied ${last?.applied}, in the hub's mirror ${last?.arrived}${lastError ? `; last error: ${String(lastError)}` : ''})`)
      })
    },
    async stop(): Promise<void> {
      stopped = true
      await loop
    },
  }
}

/** The hub's current reading (waiting for nothing). */
async function hubNow(f: FabricSites, path: string): Promise<Sample> {
  const s = (await f.hubNs.getVolume({ path })).stats
  const at = performance.now()
  const [hubNodeTicks, hubNatsTicks] = await Promise.all([cpuTicks(f.hub.pid), cpuTicks(f.hub.natsPid() ?? 0)])
  return { at, applied: Number(s?.appliedSeq ?? 0), arrived: Number(s?.lastSeq ?? 0), logBytes: Number(s?.logBytes ?? 0), hubNodeTicks, hubNatsTicks }
}

/** The hub node's and its server's CPU use between two samples, in words (percent of one CPU). */
function hubCpu(from: Sample | undefined, to: Sample): string {
  if (!from || to.at <= from.at) return 'hub CPU ?'
  const pct = (ticks: number) => `${Math.round((ticks / TICKS_PER_SECOND / ((to.at - from.at) / 1000)) * 100)} %`
  return `hub node at ${pct(to.hubNodeTicks - from.hubNodeTicks)} of one CPU, its nats-server at ${pct(to.hubNatsTicks - from.hubNatsTicks)}`
}

/** Waits until the hub has applied everything the edge's log holds. */
async function hubCaughtUp(f: FabricSites, path: string, timeoutMs: number): Promise<void> {
  const end = Number((await f.edgeNs.getVolume({ path })).stats?.lastSeq ?? 0)
  await poll(`the hub to catch up with ${path}`, async () => (await hubNow(f, path)).applied >= end, timeoutMs, 50)
}

/**
 * Resolves once both nodes and their nats-servers are quiet, or after timeoutMs (then says how
 * long it waited: the figures that follow ran on a busy machine).
 */
function settle(f: FabricSites, timeoutMs = 30_000): Promise<number> {
  const pids = [f.hub.pid, f.edge.pid, f.hub.natsPid(), f.edge.natsPid()].filter((p): p is number => p !== undefined)
  return settleAll(pids, { windowMs: QUIET_WINDOW_MS, ticks: QUIET_TICKS, timeoutMs })
}

// ---- what the edge writes ----

type ImportMessage = MessageInitShape<typeof ImportRequestSchema>

/** The import messages of records [from, to): built ahead when timed, on the fly when not. */
function* importMessages(path: string, from: number, to: number): Generator<ImportMessage> {
  for (let i = from; i < to; i += DOCS_PER_MESSAGE) {
    const docs = []
    for (let j = i; j < Math.min(to, i + DOCS_PER_MESSAGE); j++) docs.push(record(j))
    yield { ...(i === from ? { path } : {}), docs }
  }
}

async function* fromArray<T>(items: Iterable<T>): AsyncGenerator<T> {
  yield* items
}

/** TableService.Import at the edge; resolves with the log position of its last batch. */
async function importAtEdge(f: FabricSites, messages: Iterable<ImportMessage>, n: number): Promise<number> {
  const r = await f.tables.import(fromArray(messages))
  if (Number(r.imported) !== n) throw new Error(`import: ${r.imported} of ${n} documents imported`)
  return Number(r.lastVersion)
}

/** FileService.Put at the edge; resolves with the log position of the file's commit. */
async function putAtEdge(f: FabricSites, path: string, seed: string, size: number, sha256: string): Promise<number> {
  const r = await f.files.put(putMessages(path, seed, size))
  if (Number(r.file?.size) !== size || r.file?.sha256 !== sha256) throw new Error(`put ${path}: stored ${r.file?.size} bytes sha256 ${r.file?.sha256}, sent ${size} bytes ${sha256}`)
  return Number(r.file.version)
}

async function pieces(seed: string, totalBytes: number): Promise<Uint8Array[]> {
  const out: Uint8Array[] = []
  for await (const piece of content(seed, totalBytes)) out.push(piece)
  return out
}

/** Milliseconds as seconds, in text. */
const secs = (ms: number) => (ms / 1000).toFixed(2)
/** Seconds from t0 to the first sample that satisfies pred, as text ("?" if none). */
const secondsTo = (watch: ReturnType<typeof watchHub>, t0: number, pred: (s: Sample) => boolean) => {
  const s = watch.first(pred)
  return s ? secs(s.at - t0) : '?'
}

// ---- the benchmarks ----

/** 5. n records imported at the edge until applied at the hub, vs a raw mirror of their JSON. */
async function benchTableReplication(f: FabricSites, raw: RawSites, n: number): Promise<{ comparison: Comparison; note: string }> {
  const path = '/repl/t'
  const rawRun = await rawMirrorThroughput(raw, recordMessages(n))

  // Keys of the warm-up past those of the run: the run inserts, as the raw side appends.
  await importAtEdge(f, importMessages(path, 10_000_000, 10_000_000 + WARMUP_RECORDS), WARMUP_RECORDS)
  await hubCaughtUp(f, '/repl', 30_000)
  const messages = [...importMessages(path, 0, n)]
  await settle(f)
  const base = await hubNow(f, '/repl')
  const watch = watchHub(f, '/repl')
  const started = performance.now()
  const last = await importAtEdge(f, messages, n)
  const importedAt = performance.now()
  const done = await watch.applied(last, 180_000)
  await watch.stop()
  const seconds = (done.at - started) / 1000
  return {
    comparison: {
      bench: `5. Table replication edge → hub, ${n} records`,
      metric: 'records/s',
      fabric: n / seconds,
      raw: n / rawRun.seconds,
      baseline: `JetStream mirror across the leafnode, js.publish ${PUBLISH_WINDOW} in flight`,
      better: 'higher',
      target: 0.8,
    },
    note:
      `5: fabric ${secs(done.at - started)} s from the import's start until the hub applied its last batch (the import returned at the edge after ${secs(importedAt - started)} s; ` +
      `last batch in the hub's mirror at ${secondsTo(watch, started, (s) => s.arrived >= last)} s; ${last - base.applied} log records of up to 1,000 documents; ${hubCpu(base, done)}); ` +
      `raw ${rawRun.seconds.toFixed(2)} s (edge publishes acknowledged after ${rawRun.publishSeconds.toFixed(2)} s; ${n} messages).`,
  }
}

/** 6. A file put at the edge until its commit is applied at the hub, vs a raw mirror of its pieces. */
async function benchFileReplication(f: FabricSites, raw: RawSites, mib: number): Promise<{ comparison: Comparison; note: string }> {
  const size = mib * MiB
  const rawRun = await rawMirrorThroughput(raw, await pieces(`repl-raw-${size}`, size))

  const warmSha = await contentSha256('repl-warm', WARMUP_FILE_BYTES)
  await putAtEdge(f, '/repl/f/warm.bin', 'repl-warm', WARMUP_FILE_BYTES, warmSha)
  await hubCaughtUp(f, '/repl', 30_000)
  const seed = `repl-file-${size}`
  const sha256 = await contentSha256(seed, size)
  await settle(f)
  const base = await hubNow(f, '/repl')
  const watch = watchHub(f, '/repl')
  const started = performance.now()
  const commit = await putAtEdge(f, '/repl/f/data.bin', seed, size, sha256)
  const putAt = performance.now()
  const done = await watch.applied(commit, 180_000)
  await watch.stop()
  const seconds = (done.at - started) / 1000
  return {
    comparison: {
      bench: `6. File replication edge → hub, ${mib} MiB`,
      metric: 'MB/s',
      fabric: mbps(size, seconds),
      raw: mbps(size, rawRun.seconds),
      baseline: 'JetStream mirror across the leafnode, 256 KiB messages, 16 MiB in flight',
      better: 'higher',
      target: 0.8,
    },
    note:
      `6: fabric ${secs(done.at - started)} s from the put's start until the hub applied the commit (the put returned at the edge after ${secs(putAt - started)} s; ` +
      `every chunk in the hub's chunk mirror at ${secondsTo(watch, started, (s) => s.logBytes - base.logBytes >= size)} s; commit in the hub's log mirror at ${secondsTo(watch, started, (s) => s.arrived >= commit)} s; ` +
      `from then until applied, ${hubCpu(watch.first((s) => s.arrived >= commit), done)}); ` +
      `raw ${rawRun.seconds.toFixed(2)} s (edge publishes acknowledged after ${rawRun.publishSeconds.toFixed(2)} s).`,
  }
}

/**
 * 7. A backlog written at the edge while the link is cut, then the link restored: time until the
 * hub has applied all of it, vs a raw mirror catching up the same records after the same outage.
 */
async function benchBacklog(f: FabricSites, raw: RawSites, n: number, outageMs: number): Promise<{ comparisons: Comparison[]; note: string }> {
  const path = '/offline/t'
  const messages = [...importMessages(path, 0, n)]
  await settle(f)
  const base = await hubNow(f, '/offline')

  await f.proxy.cut()
  const cutAt = performance.now()
  await poll('the edge to notice the cut', async () => !(await f.leafnodeUp()), 30_000, 10)
  const last = await importAtEdge(f, messages, n)
  const writtenAt = performance.now()
  const during = await hubNow(f, '/offline')
  if (during.arrived !== base.arrived || during.applied !== base.applied) throw new Error(`the hub's copy of /offline moved while the link was cut (${JSON.stringify(during)})`)
  if (writtenAt - cutAt > outageMs) console.warn(`\n  the backlog took ${secs(writtenAt - cutAt)} s to write, longer than the ${outageMs / 1000} s outage`)
  await delay(Math.max(0, outageMs - (performance.now() - cutAt)))

  const watch = watchHub(f, '/offline')
  await f.proxy.restore()
  const restoredAt = performance.now()
  const [leafAt, done] = await Promise.all([
    poll('the leafnode to come back', () => f.leafnodeUp(), 30_000, 10).then(() => performance.now()),
    watch.applied(last, 180_000),
  ])
  await watch.stop()
  const firstApplied = watch.first((s) => s.applied > base.applied)!
  const seconds = (done.at - restoredAt) / 1000
  const transfer = (done.at - firstApplied.at) / 1000

  const rawRun = await rawBacklogCatchUp(raw, n, { minOutageMs: outageMs })
  const bench = `7. Offline backlog, ${n} records, ${outageMs / 1000} s outage`
  const baseline = 'JetStream mirror catching up across the leafnode, same outage'
  return {
    comparisons: [
      { bench, metric: 'records/s from the restore', fabric: n / seconds, raw: n / rawRun.seconds, baseline, better: 'higher', target: 0.6 },
      { bench, metric: 'records/s, transfer alone', fabric: n / transfer, raw: n / rawRun.transferSeconds, baseline, better: 'higher' },
    ],
    note:
      `7: link cut for ${secs(restoredAt - cutAt)} s (fabric) and ${rawRun.outageSeconds.toFixed(2)} s (raw); the backlog took ${secs(writtenAt - cutAt)} s to write at the edge. ` +
      `Seconds after the restore, fabric: leafnode up ${secs(leafAt - restoredAt)}, first record in the hub's mirror ${secondsTo(watch, restoredAt, (s) => s.arrived > base.arrived)}, ` +
      `first applied ${secs(firstApplied.at - restoredAt)}, all in the mirror ${secondsTo(watch, restoredAt, (s) => s.arrived >= last)}, all applied ${seconds.toFixed(2)} ` +
      `(transfer ${transfer.toFixed(2)} s: first to last applied; from all in the mirror to all applied, ${hubCpu(watch.first((s) => s.arrived >= last), done)}); raw: leafnode up ${rawRun.leafnodeSeconds.toFixed(2)}, first message in the mirror ${rawRun.reconnectSeconds.toFixed(2)}, ` +
      `all ${rawRun.seconds.toFixed(2)} (transfer ${rawRun.transferSeconds.toFixed(2)} s).`,
  }
}

/** Latencies (ms) of `count` sequential CreateSnapshot calls at the edge, after a warm-up. */
async function snapshotLatencies(f: FabricSites, volume: string, label: string, count: number): Promise<number[]> {
  for (let i = 0; i < SNAPSHOT_WARMUP; i++) await f.snapshots.createSnapshot({ volume, name: `${label}-warm-${i}` })
  const out: number[] = []
  for (let i = 0; i < count; i++) {
    const started = performance.now()
    await f.snapshots.createSnapshot({ volume, name: `${label}-${i}` })
    out.push(performance.now() - started)
  }
  return out
}

/**
 * 8. Snapshot creation at the edge (the volume's home) with the volume at two sizes: the cost is
 * one log record whatever the size, so the two medians should be alike. The hub is caught up
 * before each series, so that it does not compete for the CPU.
 */
async function benchSnapshots(f: FabricSites, sizes: [number, number], count: number): Promise<{ figures: Figure[]; note: string }> {
  const [small, large] = sizes
  const fill = async (from: number, to: number) => {
    const started = performance.now()
    await importAtEdge(f, importMessages('/snap/t', from, to), to - from)
    await hubCaughtUp(f, '/snap', 300_000)
    return (performance.now() - started) / 1000
  }
  await fill(0, small)
  const settledSmall = await settle(f)
  const atSmall = await snapshotLatencies(f, '/snap', `at-${small}`, count)
  const fillSeconds = await fill(small, large)
  const settledLarge = await settle(f)
  const atLarge = await snapshotLatencies(f, '/snap', `at-${large}`, count)
  const rows = (n: number, ms: number[]): Figure => ({
    bench: '8. Snapshot create at the edge',
    metric: `${n} records, median of ${count}`,
    value: quantile(ms, 0.5),
    unit: 'ms',
    detail: `p90 ${fmt(quantile(ms, 0.9))}, max ${fmt(Math.max(...ms))}`,
  })
  return {
    figures: [
      rows(small, atSmall),
      rows(large, atLarge),
      { bench: '8. Snapshot create at the edge', metric: `median at ${large} / at ${small}`, value: quantile(atLarge, 0.5) / quantile(atSmall, 0.5), unit: 'x', detail: 'expected ~1: a snapshot is one log record' },
    ],
    note:
      `8: CreateSnapshot through the edge node (the volume's home), sequential, after ${SNAPSHOT_WARMUP} untimed, each series once both nodes and their servers were idle ` +
      `(waited ${settledSmall.toFixed(1)} s and ${settledLarge.toFixed(1)} s); the ${large - small} records between the two sizes were imported at the edge and applied at the hub in ${fillSeconds.toFixed(0)} s.`,
  }
}

/** Runs benchmarks 5 to 8; `step` reports progress (bench/run.ts). */
export async function benchReplication(scope: Scope, s: ReplicationSettings, step: <T>(what: string, fn: () => Promise<T>) => Promise<T>): Promise<Results> {
  const results: Results = { comparisons: [], figures: [], notes: [] }
  const [f, raw] = await step('starting a hub and an edge node, and two raw nats-servers', async () => {
    const f = await startFabricSites(scope)
    await createEdgeVolume(f, '/repl', [['t', 'table'], ['f', 'files']])
    await createEdgeVolume(f, '/offline', [['t', 'table']])
    await createEdgeVolume(f, '/snap', [['t', 'table']])
    return [f, await startRawSites(scope)] as const
  })
  const table = await step(`5.  replicate ${s.records} records`, () => benchTableReplication(f, raw, s.records))
  const file = await step(`6.  replicate a ${s.fileMiB} MiB file`, () => benchFileReplication(f, raw, s.fileMiB))
  const backlog = await step(`7.  catch up a backlog of ${s.backlog} records`, () => benchBacklog(f, raw, s.backlog, s.outageMs))
  const snaps = await step(`8.  snapshots at ${s.snapshotAt[0]} and ${s.snapshotAt[1]} records`, () => benchSnapshots(f, s.snapshotAt, s.snapshots))
  results.comparisons.push(table.comparison, file.comparison, ...backlog.comparisons)
  results.figures.push(...snaps.figures)
  results.notes.push(
    '5-8: a hub node and an edge node (each with its embedded nats-server 2.9.10) linked by a leafnode through a TCP proxy; volumes homed at the edge with the hub as replica. Raw: two standalone nats-servers linked the same way, a mirror at the hub of a stream at the edge. Progress is read every 20 ms at the hub (GetVolume) and every 10 ms on the raw mirror.',
    table.note,
    file.note,
    backlog.note,
    snaps.note,
  )
  return results
}
