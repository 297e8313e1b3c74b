/**
 * Benchmarks 1 and 2: table writes against raw JetStream publishes of the same records, and
 * table reads against a bare grpc-js echo of the same message sizes.
 */
import { create, toBinary, type MessageInitShape } from '@bufbuild/protobuf'
import { GetRequestSchema, GetResponseSchema, type ImportRequestSchema } from '../proto/gen/fabric/v1/table_pb.ts'
import { record, records, type Doc } from './content.ts'
import { echoClient, startEchoServer } from './echo.ts'
import { quantile, timed } from './measure.ts'
import type { Comparison } from './report.ts'
import { createDataset, createRawStream, type Scope, type Stack } from './stack.ts'

const encoder = new TextEncoder()

/** Docs per ImportRequest message: ~85 KB messages, well under gRPC's 4 MiB default. */
const DOCS_PER_MESSAGE = 500
/** Raw publishes in flight at once: the pipelining a tuned JetStream producer would use. */
const PUBLISH_WINDOW = 1000

/** The messages of one import: the path in the first only. */
async function* importMessages(path: string, docs: Doc[]): AsyncGenerator<MessageInitShape<typeof ImportRequestSchema>> {
  for (let i = 0; i < docs.length; i += DOCS_PER_MESSAGE) {
    yield { ...(i === 0 ? { path } : {}), docs: docs.slice(i, i + DOCS_PER_MESSAGE) }
  }
}

async function fabricImport(stack: Stack, path: string, docs: Doc[]): Promise<number> {
  const r = await stack.tables.import(importMessages(path, docs))
  if (Number(r.imported) !== docs.length) throw new Error(`import: ${r.imported} of ${docs.length} documents imported`)
  return docs.length
}

/** Publishes every record's JSON, PUBLISH_WINDOW at a time, each window's acks awaited. */
async function rawPipelined(stack: Stack, subject: string, docs: Doc[]): Promise<number> {
  for (let i = 0; i < docs.length; i += PUBLISH_WINDOW) {
    await Promise.all(docs.slice(i, i + PUBLISH_WINDOW).map((d) => stack.js.publish(subject, encoder.encode(d.json))))
  }
  return docs.length
}

/**
 * 1a. Bulk load: TableService.Import of n records vs pipelined js.publish of the same JSON.
 * Each side first loads a small warm-up set (JIT, connections, stream creation off the clock).
 */
export async function benchImport(stack: Stack, n: number): Promise<Comparison> {
  const docs = records(n)
  const warm = docs.slice(0, Math.min(2000, n))
  const rawSubject = await createRawStream(stack, 'RAW_IMPORT', 'raw.import')
  await rawPipelined(stack, rawSubject, warm)
  const raw = await timed(() => rawPipelined(stack, rawSubject, docs))

  await fabricImport(stack, await createDataset(stack, '/bench/warm', 'table'), warm)
  const path = await createDataset(stack, '/bench/t', 'table')
  const fabric = await timed(() => fabricImport(stack, path, docs))
  return {
    bench: `1a. Table import, ${n} records`,
    metric: 'records/s',
    fabric: n / fabric.seconds,
    raw: n / raw.seconds,
    baseline: `js.publish, ${PUBLISH_WINDOW} in flight`,
    better: 'higher',
    target: 0.5,
  }
}

/** 1b. Single writes: n sequential TableService.Put vs n sequential awaited js.publish. */
export async function benchSinglePuts(stack: Stack, n: number): Promise<Comparison> {
  const docs = Array.from({ length: n }, (_, i) => record(1_000_000 + i))
  const rawSubject = await createRawStream(stack, 'RAW_PUTS', 'raw.puts')
  const path = await createDataset(stack, '/bench/puts', 'table')
  // Warm-up on both paths, off the clock.
  for (const d of docs.slice(0, 50)) {
    await stack.js.publish(rawSubject, encoder.encode(d.json))
    await stack.tables.put({ path, key: d.key, json: d.json })
  }
  const raw = await timed(async () => {
    for (const d of docs) await stack.js.publish(rawSubject, encoder.encode(d.json))
  })
  const fabric = await timed(async () => {
    for (const d of docs) await stack.tables.put({ path, key: d.key, json: d.json })
  })
  return {
    bench: `1b. Table put, ${n} sequential`,
    metric: 'puts/s',
    fabric: n / fabric.seconds,
    raw: n / raw.seconds,
    baseline: 'awaited js.publish, one at a time',
    better: 'higher',
  }
}

/** Keys spread over the imported table, deterministically (a fixed LCG), hits only. */
function sampleKeys(count: number, tableSize: number): string[] {
  let x = 12345
  return Array.from({ length: count }, () => {
    x = (x * 1103515245 + 12345) % 2 ** 31
    return record(x % tableSize).key
  })
}

/** Latency of one call, in ms. */
async function latency(call: () => Promise<unknown>): Promise<number> {
  const started = performance.now()
  await call()
  return performance.now() - started
}

/**
 * 2. Point reads: sequential TableService.Get on the imported table vs a bare grpc-js unary echo
 * with the same request and response sizes, in its own process like the node. The two alternate
 * in blocks so that drift on the machine (other processes, disk flushes) hits both alike.
 */
export async function benchGetLatency(scope: Scope, stack: Stack, tableSize: number, calls: number, warmup: number): Promise<Comparison[]> {
  const path = '/bench/t'
  const keys = sampleKeys(calls + warmup, tableSize)
  const sample = await stack.tables.get({ path, key: keys[0]! })
  const requestBytes = toBinary(GetRequestSchema, create(GetRequestSchema, { path, key: keys[0]! })).length
  const responseBytes = toBinary(GetResponseSchema, sample).length
  const server = await startEchoServer(scope, responseBytes)
  const echo = echoClient(server.address)
  scope.teardown(() => echo.close())
  const request = Buffer.alloc(requestBytes, 0x62)

  for (const key of keys.slice(0, warmup)) {
    await stack.tables.get({ path, key })
    await echo.echo(request)
  }
  const fabric: number[] = []
  const raw: number[] = []
  const BLOCK = 250
  const measured = keys.slice(warmup)
  for (let i = 0; i < measured.length; i += BLOCK) {
    for (const key of measured.slice(i, i + BLOCK)) fabric.push(await latency(() => stack.tables.get({ path, key })))
    for (let j = 0; j < Math.min(BLOCK, measured.length - i); j++) raw.push(await latency(() => echo.echo(request)))
  }
  const baseline = `grpc-js echo, ${requestBytes} B in / ${responseBytes} B out`
  const bench = `2. Table get, ${calls} sequential`
  return [0.5, 0.99].map((q) => ({
    bench,
    metric: `p${q * 100} ms`,
    fabric: quantile(fabric, q),
    raw: quantile(raw, q),
    baseline,
    better: 'lower' as const,
    target: 1.5,
  }))
}
