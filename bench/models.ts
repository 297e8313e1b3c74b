/**
 * Benchmarks 9 to 11: model serving on one node.
 *
 * Fabric side: a node started through the test harness (site "bench", its embedded nats-server,
 * log level info), the MLP of bench/mlp.ts published through ModelService.PublishModel, deployed
 * to the node's site, and called through fabric's typed client (node/api createClient) as an
 * application would: request messages built and answers decoded on every call.
 *
 * Raw side: onnxruntime-node in this process, an InferenceSession created from the same bytes with
 * the session options the node uses (node/models/ort-options.ts, the node's default threads), run
 * on the same inputs. The floor of a gRPC call: bench/echo.ts's bare grpc-js echo, in its own
 * process like the node, with fabric's request and response sizes.
 */
import { create, toBinary, type MessageInitShape } from '@bufbuild/protobuf'
import { setTimeout as delay } from 'node:timers/promises'
import type * as Ort from 'onnxruntime-node'
import { createClient, type Client } from '../node/api/index.ts'
import { ortSessionOptions, tensorFromBytes } from '../node/models/index.ts'
import { ElementType, ModelService, PredictRequestSchema, PredictResponseSchema, type PredictResponse } from '../proto/gen/fabric/v1/model_pb.ts'
import { poll, startNode, type NodeProcess } from '../test/harness/index.ts'
import { echoClient, startEchoServer } from './echo.ts'
import { cpuTicks, quantile, settle as settleAll, timed, TICKS_PER_SECOND } from './measure.ts'
import { MLP_LAYERS, mlpModel, seededFloats } from './mlp.ts'
import { fmt, type Comparison, type Figure, type Results } from './report.ts'
import type { Scope } from './stack.ts'

/** The node's site; the models are deployed to it. */
const SITE = 'bench'
const WIDTH_IN = MLP_LAYERS[0]!
const WIDTH_OUT = MLP_LAYERS.at(-1)!
const MODEL_TEXT = `MLP ${MLP_LAYERS.join('-')}`
/** Benchmark 9: latencies alternate in blocks of this many calls (as benchmark 2). */
const BLOCK = 250
/** Benchmark 10: requests in flight, and the deployment's batching (--max-batch, --max-delay-ms). */
const IN_FLIGHT = 64
const MAX_BATCH = 64
const MAX_DELAY_MS = 2
/** Distinct input rows the throughput runs cycle through. */
const ROW_POOL = 1024
/** Benchmark 11: requests in flight, and how long serving goes on after each switch before the next. */
const SWAP_IN_FLIGHT = 8
const SWAP_GAP_MS = 250
/** Before each timed run the node must be quiet: at most QUIET_TICKS of CPU over QUIET_WINDOW_MS. */
const QUIET_WINDOW_MS = 300
const QUIET_TICKS = 3
/** Relative tolerance when fabric's answers are checked against the in-process ones. */
const TOLERANCE = 1e-5

export interface ModelSettings {
  /** Benchmark 9: sequential calls timed on each side, after `warmup` untimed ones. */
  calls: number
  warmup: number
  /** Benchmark 10: single-row requests per fabric run; 64-row batches of the in-process run. */
  requests: number
  batches: number
  /** Benchmark 10 with the compute-bound model: requests per fabric run, 64-row in-process batches. */
  bigRequests: number
  bigBatches: number
  /** Benchmark 11: deployment switches under load. */
  swaps: number
}

/**
 * Benchmark 10's second model: an MLP whose rows cost far more in onnxruntime than a request costs
 * in gRPC (about 230 us a row in 64-row batches here, 19 M weights), the case dynamic batching is
 * for. On the small MLP a row costs under a microsecond batched, so any served request, of any
 * server, is nearly all call overhead.
 */
const BIG_LAYERS: readonly number[] = [512, 4096, 4096, 16]

export const describeModels = (s: ModelSettings): string =>
  `${s.calls} sequential predictions, ${s.requests} requests per throughput run (${IN_FLIGHT} in flight), ${s.swaps} hot swaps`

type Ort = typeof Ort
type Models = Client<typeof ModelService>
type Step = <T>(what: string, fn: () => Promise<T>) => Promise<T>

interface Context {
  ort: Ort
  node: NodeProcess
  models: Models
  /** The model's bytes per version ("1", "2"), and an in-process session of each. */
  bytes: Map<string, Uint8Array>
  sessions: Map<string, Ort.InferenceSession>
  /** An in-process session of the compute-bound model. */
  big: Ort.InferenceSession
}

// ---- requests and answers ----

/** `count` rows of WIDTH_IN floats from seed, each its own array. */
function rowsOf(seed: number, count: number, width = WIDTH_IN): Float32Array[] {
  const next = seededFloats(seed)
  return Array.from({ length: count }, () => Float32Array.from({ length: width }, () => next() * 4))
}

const bytesOf = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength)

/** A Predict request of one row, as an application builds it. */
function predictRequest(model: string, row: Float32Array): MessageInitShape<typeof PredictRequestSchema> {
  return { model, inputs: [{ name: 'x', type: ElementType.FLOAT32, dims: [1n, BigInt(row.length)], data: bytesOf(row) }] }
}

/** The answer's y, decoded as an application does. */
function outputOf(r: PredictResponse): Float32Array {
  const y = r.outputs.find((o) => o.name === 'y')
  if (!y) throw new Error(`version ${r.version} answered without output y`)
  return tensorFromBytes('float32', y.dims.map(Number), y.data, 'output "y"').data as Float32Array
}

function same(a: Float32Array, b: Float32Array): boolean {
  return a.length === b.length && a.every((v, i) => Math.abs(v - b[i]!) <= TOLERANCE * Math.max(1, Math.abs(v)))
}

/** In-process run of a batch of rows (one row or many). */
async function runRaw(ort: Ort, session: Ort.InferenceSession, rows: Float32Array, count: number): Promise<Float32Array> {
  const out = await session.run({ x: new ort.Tensor('float32', rows, [count, rows.length / count]) })
  return out['y']!.data as Float32Array
}

/** Latency of one call, in ms. */
async function latency(call: () => Promise<unknown>): Promise<number> {
  const started = performance.now()
  await call()
  return performance.now() - started
}

// ---- the node ----

async function publish(models: Models, name: string, version: string, bytes: Uint8Array): Promise<void> {
  async function* messages() {
    yield { msg: { case: 'header' as const, value: { name, version, description: `${MODEL_TEXT}, bench`, size: BigInt(bytes.length) } } }
    for (let at = 0; at < bytes.length; at += 256 * 1024) yield { msg: { case: 'data' as const, value: bytes.subarray(at, at + 256 * 1024) } }
  }
  await models.publishModel(messages())
}

/** Deploys `version` of `model` to the node's site (batching as given) and waits until it answers. */
async function deploy(ctx: Context, model: string, version: string, batching: { maxBatch: number; maxDelayMs: number } = { maxBatch: 0, maxDelayMs: 0 }, width = WIDTH_IN): Promise<void> {
  await ctx.models.deploy({ model, traffic: [{ version, weight: 1 }], sites: [SITE], ...batching })
  const row = rowsOf(7, 1, width)[0]!
  await poll(`${model} version ${version} to answer`, () => ctx.models.predict(predictRequest(model, row)).then((r) => r.version === version, () => false), 60_000, 20)
}

/** Before each timed run the node must be quiet (bench/measure.ts settle). */
function settle(node: NodeProcess, timeoutMs = 10_000): Promise<number> {
  return settleAll([node.pid], { windowMs: QUIET_WINDOW_MS, ticks: QUIET_TICKS, timeoutMs })
}

/**
 * Runs fn while measuring the CPU the node and this process use; `cpu` says how much of one CPU
 * each used over the run, in words.
 */
async function withCpu<T>(node: NodeProcess, fn: () => Promise<T>): Promise<{ value: T; seconds: number; cpu: string }> {
  const ticks = await cpuTicks(node.pid)
  const mine = process.cpuUsage()
  const { value, seconds } = await timed(fn)
  const nodeCpu = (await cpuTicks(node.pid)) - ticks
  const used = process.cpuUsage(mine)
  const pct = (s: number) => `${Math.round((s / seconds) * 100)} %`
  return { value, seconds, cpu: `node ${pct(nodeCpu / TICKS_PER_SECOND)}, bench process ${pct((used.user + used.system) / 1e6)} of one CPU` }
}

// ---- 9. latency ----

/**
 * 9. Sequential unary Predict calls of one row against the node, vs InferenceSession.run of the
 * same row in this process, vs a grpc-js echo of the same sizes; in alternating blocks.
 */
async function benchLatency(scope: Scope, ctx: Context, s: ModelSettings): Promise<{ comparisons: Comparison[]; figures: Figure[]; note: string }> {
  const model = 'bench/mlp'
  const session = ctx.sessions.get('1')!
  const rows = rowsOf(9, s.warmup + s.calls)
  const fabric = async (row: Float32Array) => outputOf(await ctx.models.predict(predictRequest(model, row)))
  const raw = (row: Float32Array) => runRaw(ctx.ort, session, row, 1)

  // The premise: the node answers what onnxruntime answers here.
  for (const row of rows.slice(0, 20)) {
    const [a, b] = [await fabric(row), await raw(row)]
    if (!same(a, b)) throw new Error(`the node answered [${[...a].join(', ')}], onnxruntime in-process [${[...b].join(', ')}]`)
  }
  const sample = await ctx.models.predict(predictRequest(model, rows[0]!))
  const requestBytes = toBinary(PredictRequestSchema, create(PredictRequestSchema, predictRequest(model, rows[0]!))).length
  const responseBytes = toBinary(PredictResponseSchema, sample).length
  const server = await startEchoServer(scope, responseBytes)
  const echo = echoClient(server.address)
  scope.teardown(() => echo.close())
  const request = Buffer.alloc(requestBytes, 0x62)

  for (const row of rows.slice(0, s.warmup)) {
    await fabric(row)
    await raw(row)
    await echo.echo(request)
  }
  const times = { fabric: [] as number[], raw: [] as number[], echo: [] as number[] }
  const measured = rows.slice(s.warmup)
  const nodeTicks = await cpuTicks(ctx.node.pid)
  let fabricMs = 0
  for (let i = 0; i < measured.length; i += BLOCK) {
    const block = measured.slice(i, i + BLOCK)
    const t0 = performance.now()
    for (const row of block) times.fabric.push(await latency(() => fabric(row)))
    fabricMs += performance.now() - t0
    for (const row of block) times.raw.push(await latency(() => raw(row)))
    for (let j = 0; j < block.length; j++) times.echo.push(await latency(() => echo.echo(request)))
  }
  const nodeCpuMs = (((await cpuTicks(ctx.node.pid)) - nodeTicks) / TICKS_PER_SECOND) * 1000

  const bench = `9. Predict ${MODEL_TEXT}, 1 row, ${s.calls} sequential`
  const inProcess = 'onnxruntime-node in-process, InferenceSession.run'
  const echoText = `grpc-js echo, ${requestBytes} B in / ${responseBytes} B out`
  const comparisons: Comparison[] = []
  for (const q of [0.5, 0.99]) comparisons.push({ bench, metric: `p${q * 100} ms`, fabric: quantile(times.fabric, q), raw: quantile(times.raw, q), baseline: inProcess, better: 'lower' })
  for (const q of [0.5, 0.99]) comparisons.push({ bench, metric: `p${q * 100} ms`, fabric: quantile(times.fabric, q), raw: quantile(times.echo, q), baseline: echoText, better: 'lower' })
  const p50 = (xs: number[]) => quantile(xs, 0.5)
  const overhead = p50(times.fabric) - p50(times.raw)
  const figures: Figure[] = [
    {
      bench: '9. Predict overhead',
      metric: 'fabric p50 - in-process p50',
      value: overhead,
      unit: 'ms',
      detail: `target <= 0.3 ms: ${overhead <= 0.3 ? 'MET' : 'MISSED'}`,
    },
    {
      bench: '9. Predict overhead',
      metric: 'fabric p50 - echo p50',
      value: p50(times.fabric) - p50(times.echo),
      unit: 'ms',
      detail: `echo p50 - in-process p50 = ${fmt(p50(times.echo) - p50(times.raw))} ms: the floor of any gRPC call here`,
    },
  ]
  const note =
    `9: one row of ${WIDTH_IN} float32 in, ${WIDTH_OUT} out; ${s.calls} calls on each side after ${s.warmup} untimed, alternating in blocks of ${BLOCK} (fabric, in-process, echo); ` +
    `the same rows on both sides, and the node's first 20 answers checked against the in-process ones. Deployment without batching. ` +
    `The node used ${fmt(nodeCpuMs / measured.length)} ms of CPU per call (${fmt((nodeCpuMs / fabricMs) * 100)} % of one CPU during the fabric blocks).`
  return { comparisons, figures, note }
}

// ---- 10. throughput ----

/** Runs `total` calls of fn with `inFlight` at a time (each worker awaits its call before the next). */
async function closedLoop(total: number, inFlight: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < total) await fn(next++)
    }),
  )
}

/** `total` single-row Predict calls, `inFlight` at a time; every answer checked for its shape. */
async function unaryRun(ctx: Context, model: string, rows: Float32Array[], total: number, width = WIDTH_OUT, inFlight = IN_FLIGHT): Promise<void> {
  const requests = rows.map((r) => predictRequest(model, r))
  await closedLoop(total, inFlight, async (i) => {
    const y = outputOf(await ctx.models.predict(requests[i % requests.length]!))
    if (y.length !== width) throw new Error(`answer ${i} has ${y.length} values, expected ${width}`)
  })
}

/** `total` single-row requests on one PredictStream, at most `inFlight` sent and not yet answered. */
async function streamRun(ctx: Context, model: string, rows: Float32Array[], total: number, width = WIDTH_OUT, inFlight = IN_FLIGHT): Promise<void> {
  const requests = rows.map((r) => predictRequest(model, r))
  let sent = 0
  let answered = 0
  let wake: (() => void) | undefined
  async function* source() {
    while (sent < total) {
      while (sent - answered >= inFlight) await new Promise<void>((r) => (wake = r))
      yield { request: requests[sent++ % requests.length]! }
    }
  }
  for await (const r of ctx.models.predictStream(source())) {
    if (r.error) throw new Error(`stream answer ${answered}: code ${r.error.code}: ${r.error.message}`)
    if (!r.response || outputOf(r.response).length !== width) throw new Error(`stream answer ${answered} has no ${width}-value y`)
    answered++
    wake?.()
    wake = undefined
  }
  if (answered !== total) throw new Error(`the stream ended after ${answered} of ${total} answers`)
}

/**
 * 10. Many concurrent single-row requests to a deployment with batching (and to one without), vs
 * in-process runs of full 64-row batches of the same model, in rows per second.
 */
interface ThroughputModel {
  /** "MLP 16-64-64-4". */
  text: string
  layers: readonly number[]
  /** Deployed without and with batching. */
  plain: string
  batched: string
  session: Ort.InferenceSession
  /** Requests per fabric run and 64-row batches of the in-process run. */
  requests: number
  batches: number
  /** Which fabric runs: every form, or only the streaming ones (a slow model). */
  unary: boolean
  /** Requests in flight. */
  inFlight: number
}

async function benchThroughput(ctx: Context, m: ThroughputModel): Promise<{ comparisons: Comparison[]; note: string }> {
  const { batched, plain, session } = m
  const WIDTH_IN = m.layers[0]!
  const width = m.layers.at(-1)!
  const s = { requests: m.requests, batches: m.batches }
  const rows = rowsOf(10, ROW_POOL, WIDTH_IN)

  // In-process: MAX_BATCH rows per run, the batches cut from the same pool of rows.
  const batches = Array.from({ length: ROW_POOL / MAX_BATCH }, (_, b) => {
    const batch = new Float32Array(MAX_BATCH * WIDTH_IN)
    for (let r = 0; r < MAX_BATCH; r++) batch.set(rows[b * MAX_BATCH + r]!, r * WIDTH_IN)
    return batch
  })
  const rawBatched = async (n: number) => {
    for (let i = 0; i < n; i++) await runRaw(ctx.ort, session, batches[i % batches.length]!, MAX_BATCH)
  }
  const rawSingle = async (n: number) => {
    for (let i = 0; i < n; i++) await runRaw(ctx.ort, session, rows[i % rows.length]!, 1)
  }
  await rawBatched(Math.ceil(s.batches / 10))
  const raw = await timed(() => rawBatched(s.batches))
  const rawRowsPerSecond = (s.batches * MAX_BATCH) / raw.seconds
  const singles = s.batches * 4
  await rawSingle(Math.ceil(singles / 10))
  const rawOne = await timed(() => rawSingle(singles))

  const warm = Math.ceil(s.requests / 10)
  const runs: Array<{ what: string; model: string; run: typeof unaryRun; target?: number }> = [
    ...(m.unary ? [{ what: `Predict, batching ${MAX_BATCH} rows / ${MAX_DELAY_MS} ms`, model: batched, run: unaryRun, target: 0.8 }] : []),
    { what: `PredictStream, batching ${MAX_BATCH} rows / ${MAX_DELAY_MS} ms`, model: batched, run: streamRun, target: 0.8 },
    ...(m.unary ? [{ what: 'Predict, no batching', model: plain, run: unaryRun }] : []),
    { what: 'PredictStream, no batching', model: plain, run: streamRun },
  ]
  const comparisons: Comparison[] = []
  const cpu: string[] = []
  for (const r of runs) {
    await r.run(ctx, r.model, rows, warm, width, m.inFlight)
    await settle(ctx.node)
    const run = await withCpu(ctx.node, () => r.run(ctx, r.model, rows, s.requests, width, m.inFlight))
    comparisons.push({
      bench: `10. ${m.text}: ${r.what}, ${m.inFlight} in flight`,
      metric: 'rows/s',
      fabric: s.requests / run.seconds,
      raw: rawRowsPerSecond,
      baseline: `in-process InferenceSession.run, ${MAX_BATCH}-row batches`,
      better: 'higher',
      ...(r.target === undefined ? {} : { target: r.target }),
    })
    cpu.push(`${r.what}: ${fmt(run.seconds)} s, ${run.cpu}`)
  }
  const note =
    `10 (${m.text}): ${s.requests} single-row requests per fabric run after ${warm} untimed, ${m.inFlight} in flight (unary: ${m.inFlight} callers each awaiting its answer; stream: one PredictStream with at most ${m.inFlight} requests unanswered), ` +
    `each answer decoded and checked; in-process: ${s.batches} runs of ${MAX_BATCH} rows (${fmt(raw.seconds)} s), and for context ${singles} single-row runs at ${fmt(singles / rawOne.seconds)} rows/s. ` +
    `Fabric runs: ${cpu.join('; ')}.`
  return { comparisons, note }
}

// ---- 11. hot swap ----

interface Answer {
  /** performance.now() when the request was sent. */
  at: number
  ms: number
  version: string
  ok: boolean
}

/**
 * 11. A steady load (SWAP_IN_FLIGHT callers) while the deployment switches between versions 1
 * and 2 `swaps` times, vs a steady window of the same length without switches. Every answer is
 * checked against the in-process answer of the version that gave it.
 */
async function benchSwap(ctx: Context, s: ModelSettings): Promise<{ comparisons: Comparison[]; figures: Figure[]; note: string }> {
  const model = 'bench/swap'
  const row = rowsOf(11, 1)[0]!
  const expected = new Map<string, Float32Array>()
  for (const [v, session] of ctx.sessions) expected.set(v, await runRaw(ctx.ort, session, row, 1))
  const request = predictRequest(model, row)

  const answers: Answer[] = []
  const errors: string[] = []
  let failed = 0
  let wrong = 0
  let running = true
  let latest = ''
  const caller = async () => {
    while (running) {
      const at = performance.now()
      try {
        const r = await ctx.models.predict(request)
        const ok = same(outputOf(r), expected.get(r.version) ?? new Float32Array(0))
        if (!ok) wrong++
        answers.push({ at, ms: performance.now() - at, version: r.version, ok })
        latest = r.version
      } catch (err) {
        failed++
        if (errors.length < 3) errors.push(String(err))
        answers.push({ at, ms: performance.now() - at, version: '', ok: false })
      }
    }
  }
  const callers = Array.from({ length: SWAP_IN_FLIGHT }, caller)
  const answeredSince = (t: number, version: string) => answers.some((a) => a.at >= t && a.version === version)
  await delay(1_000)

  const switchMs: number[] = []
  const swapStart = performance.now()
  for (let i = 0; i < s.swaps; i++) {
    const version = i % 2 === 0 ? '2' : '1'
    const t = performance.now()
    await ctx.models.deploy({ model, traffic: [{ version, weight: 1 }] })
    await poll(`version ${version} to answer after the switch`, () => answeredSince(t, version), 60_000, 1)
    switchMs.push(Math.min(...answers.filter((a) => a.at >= t && a.version === version).map((a) => a.at + a.ms)) - t)
    await delay(SWAP_GAP_MS)
  }
  const swapEnd = performance.now()
  const steadyStart = performance.now()
  await delay(swapEnd - swapStart)
  const steadyEnd = performance.now()
  running = false
  await Promise.all(callers)
  if (latest !== (s.swaps % 2 === 1 ? '2' : '1')) throw new Error(`version ${latest} answered last, not the one deployed last`)

  const during = answers.filter((a) => a.at >= swapStart && a.at < swapEnd).map((a) => a.ms)
  const steady = answers.filter((a) => a.at >= steadyStart && a.at < steadyEnd).map((a) => a.ms)
  const bench = `11. Hot swap, ${s.swaps} switches, ${SWAP_IN_FLIGHT} in flight`
  const baseline = 'same load, steady window of the same length'
  const comparisons: Comparison[] = [0.5, 0.99].map((q) => ({ bench, metric: `p${q * 100} ms`, fabric: quantile(during, q), raw: quantile(steady, q), baseline, better: 'lower' as const }))
  const figures: Figure[] = [
    { bench: '11. Hot swap', metric: 'failed requests', value: failed + wrong, unit: 'requests', detail: `of ${answers.length}: ${failed} errors, ${wrong} wrong answers; must be 0${errors.length ? `; ${errors.join('; ')}` : ''}` },
    { bench: '11. Hot swap', metric: 'max latency during the swaps', value: Math.max(...during), unit: 'ms', detail: `steady window: ${fmt(Math.max(...steady))} ms` },
    {
      bench: '11. Hot swap',
      metric: 'deploy call to first answer of the new version',
      value: quantile(switchMs, 0.5),
      unit: 'ms',
      detail: `median of ${s.swaps}; max ${fmt(Math.max(...switchMs))}`,
    },
  ]
  const note =
    `11: ${SWAP_IN_FLIGHT} callers sending one-row Predict calls back to back from 1 s before the first switch to the end; ${s.swaps} switches 1 -> 2 -> 1 ... (Deploy of the other version, without batching), ` +
    `each once the previous version answered again and ${SWAP_GAP_MS} ms had passed, so that every switch loads a version (the one swapped out is unloaded); ` +
    `swap window ${fmt((swapEnd - swapStart) / 1000)} s (${during.length} answers), then a steady window of the same length (${steady.length} answers); latencies by the time a request was sent; every answer checked against the in-process answer of the version that gave it.`
  return { comparisons, figures, note }
}

// ---- the group ----

/** Runs benchmarks 9 to 11; `step` reports progress (bench/run.ts). */
export async function benchModels(scope: Scope, s: ModelSettings, step: Step): Promise<Results> {
  const ort: Ort = await import('onnxruntime-node')
  const ctx = await step('starting a fabric node, publishing and deploying the models', async () => {
    // Log level info (the node's default) rather than the harness's debug: production settings.
    const node = await startNode(scope, { config: { node: { site: SITE }, log: { level: 'info' } }, timeoutMs: 60_000 })
    const models = createClient(ModelService, node.api)
    scope.teardown(() => models.close())
    const bytes = new Map([
      ['1', mlpModel(1)],
      ['2', mlpModel(2)],
    ])
    const sessions = new Map<string, Ort.InferenceSession>()
    for (const [v, b] of bytes) sessions.set(v, await ort.InferenceSession.create(b, ortSessionOptions()))
    scope.teardown(() => Promise.all([...sessions.values()].map((x) => x.release())))
    const bigBytes = mlpModel(3, BIG_LAYERS)
    const big = await ort.InferenceSession.create(bigBytes, ortSessionOptions())
    scope.teardown(() => big.release())
    const ctx: Context = { ort, node, models, bytes, sessions, big }
    await publish(models, 'bench/big', '1', bigBytes)
    await publish(models, 'bench/big-batched', '1', bigBytes)
    await deploy(ctx, 'bench/big', '1', undefined, BIG_LAYERS[0])
    await deploy(ctx, 'bench/big-batched', '1', { maxBatch: MAX_BATCH, maxDelayMs: MAX_DELAY_MS }, BIG_LAYERS[0])
    await publish(models, 'bench/mlp', '1', bytes.get('1')!)
    await publish(models, 'bench/mlp-batched', '1', bytes.get('1')!)
    for (const [v, b] of bytes) await publish(models, 'bench/swap', v, b)
    await deploy(ctx, 'bench/mlp', '1')
    await deploy(ctx, 'bench/mlp-batched', '1', { maxBatch: MAX_BATCH, maxDelayMs: MAX_DELAY_MS })
    await deploy(ctx, 'bench/swap', '1')
    return ctx
  })
  const results: Results = { comparisons: [], figures: [], notes: [] }
  const latencyRun = await step(`9.  ${s.calls} sequential predictions`, () => benchLatency(scope, ctx, s))
  const throughput = await step(`10. ${s.requests} requests x 4 runs, ${IN_FLIGHT} in flight`, () =>
    benchThroughput(ctx, { text: MODEL_TEXT, layers: MLP_LAYERS, plain: 'bench/mlp', batched: 'bench/mlp-batched', session: ctx.sessions.get('1')!, requests: s.requests, batches: s.batches, unary: true, inFlight: IN_FLIGHT }),
  )
  const throughputBig = await step(`10. ${s.bigRequests} requests x 2 runs to MLP ${BIG_LAYERS.join('-')}`, () =>
    benchThroughput(ctx, { text: `MLP ${BIG_LAYERS.join('-')}`, layers: BIG_LAYERS, plain: 'bench/big', batched: 'bench/big-batched', session: ctx.big, requests: s.bigRequests, batches: s.bigBatches, unary: false, inFlight: 2 * MAX_BATCH }),
  )
  const swap = await step(`11. ${s.swaps} hot swaps under load`, () => benchSwap(ctx, s))
  results.comparisons.push(...latencyRun.comparisons, ...throughput.comparisons, ...throughputBig.comparisons, ...swap.comparisons)
  results.figures.push(...latencyRun.figures, ...swap.figures)
  results.notes.push(
    `9-11: one node (its embedded nats-server; log level info; onnxruntime with the node's default threads); the model, ${MODEL_TEXT} float32 (${ctx.bytes.get('1')!.length} bytes, batch dim N), published through PublishModel; ` +
      'raw: the same bytes in an InferenceSession of this process with the node\'s session options. Client, node and echo server share the 2 CPUs.',
    latencyRun.note,
    throughput.note,
    throughputBig.note,
    swap.note,
  )
  return results
}
