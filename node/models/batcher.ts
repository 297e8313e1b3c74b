/**
 * Dynamic batching: requests that arrive close together and have the same input names, element
 * types and non-batch dims are concatenated along dim 0 into one run, and the outputs are split
 * back by rows. One run of N rows costs far less than N runs for most models, and each run blocks
 * the event loop (session.ts), so fewer, larger runs also mean fewer stalls.
 *
 * A batch is dispatched when it reaches maxBatch rows or maxDelayMs after its first request,
 * whichever comes first. Batches of one key run in the order they were formed and requests keep
 * their order within a batch. Because requests of different shapes or types never share a batch, a
 * request the model refuses for its shape or type fails alone; a batch that fails for any other
 * reason fails every request in it, with the same error.
 */
import { FabricError } from '../errors/index.ts'
import { ARRAY_OF, elementCount, formatShape, type Tensor, type TensorData } from './tensor.ts'

/** What the batcher runs: a ModelSession, or anything with its run(). */
export interface Runner {
  run(inputs: Readonly<Record<string, Tensor>>, outputNames?: readonly string[]): Promise<Record<string, Tensor>>
}

export interface BatcherOptions {
  /** The most rows (dim 0) in one run; a request with more runs alone. */
  maxBatch: number
  /** How long the first request of a batch may wait for others. */
  maxDelayMs: number
}

export interface Batch {
  inputs: Record<string, Tensor>
  /** Rows each request contributed, in order. */
  counts: number[]
}

/**
 * Concatenates requests along dim 0. Every request must have the same input names, and for each
 * input the same element type and dims after the first; within a request all inputs must have the
 * same number of rows. Throws INVALID_ARGUMENT naming the request and input that differ.
 */
export function concatBatch(requests: ReadonlyArray<Readonly<Record<string, Tensor>>>): Batch {
  const first = requests[0]
  if (first === undefined) throw FabricError.invalidArgument('concatBatch: no requests')
  const names = Object.keys(first).sort()
  if (names.length === 0) throw FabricError.invalidArgument('concatBatch: requests without inputs cannot be batched')
  const counts = requests.map((r, i) => rowsOf(r, `request ${i}`))
  for (const [i, r] of requests.entries()) {
    const these = Object.keys(r).sort()
    if (these.join('\0') !== names.join('\0')) {
      throw FabricError.invalidArgument(`concatBatch: request ${i} has inputs ${these.join(', ')}, request 0 has ${names.join(', ')}`)
    }
    for (const name of names) {
      const a = first[name]!
      const b = r[name]!
      if (a.type !== b.type || formatShape(a.dims.slice(1)) !== formatShape(b.dims.slice(1))) {
        throw FabricError.invalidArgument(
          `concatBatch: input "${name}" of request ${i} is ${b.type} ${formatShape(b.dims)}, request 0 has ${a.type} ${formatShape(a.dims)}: only dim 0 may differ`,
        )
      }
    }
  }
  const total = counts.reduce((a, b) => a + b, 0)
  const inputs: Record<string, Tensor> = {}
  for (const name of names) {
    const { type, dims } = first[name]!
    const parts = requests.map((r) => r[name]!.data)
    const batchDims = [total, ...dims.slice(1)]
    elementCount(batchDims, `batched input "${name}"`)
    inputs[name] = { type, dims: batchDims, data: concatData(type === 'string' ? undefined : ARRAY_OF[type], parts) }
  }
  return { inputs, counts }
}

/**
 * Splits a batch's outputs back into one set per request, by rows. Typed arrays are split into
 * views of the batch's arrays (no copy). FAILED_PRECONDITION when an output's dim 0 is not the
 * batch's total rows: such a model cannot be served with batching.
 */
export function splitBatch(outputs: Readonly<Record<string, Tensor>>, counts: readonly number[]): Array<Record<string, Tensor>> {
  const total = counts.reduce((a, b) => a + b, 0)
  const result = counts.map(() => ({}) as Record<string, Tensor>)
  for (const [name, t] of Object.entries(outputs)) {
    if (t.dims.length === 0 || t.dims[0] !== total) {
      throw FabricError.failedPrecondition(
        `output "${name}" has dims ${formatShape(t.dims)} for a batch of ${total} rows: the model does not keep the batch dimension, serve it without batching`,
        { details: { output: name, expected: String(total), got: formatShape(t.dims) } },
      )
    }
    const perRow = t.dims.slice(1).reduce((a, b) => a * b, 1)
    let row = 0
    for (const [i, count] of counts.entries()) {
      const from = row * perRow
      const to = (row + count) * perRow
      const data = Array.isArray(t.data) ? t.data.slice(from, to) : t.data.subarray(from, to)
      result[i]![name] = { type: t.type, dims: [count, ...t.dims.slice(1)], data: data as TensorData }
      row += count
    }
  }
  return result
}

/** The rows of a request: dim 0, the same for every input; undefined if it cannot be batched. */
function batchRows(inputs: Readonly<Record<string, Tensor>>): number | undefined {
  let rows: number | undefined
  for (const t of Object.values(inputs)) {
    if (!t || !Array.isArray(t.dims) || t.dims.length === 0) return undefined
    if (rows === undefined) rows = t.dims[0]
    else if (t.dims[0] !== rows) return undefined
  }
  return rows
}

function rowsOf(inputs: Readonly<Record<string, Tensor>>, what: string): number {
  const rows = batchRows(inputs)
  if (rows === undefined) throw FabricError.invalidArgument(`concatBatch: ${what} cannot be batched: its inputs do not all have the same dim 0`)
  return rows
}

type ArrayCtor = (typeof ARRAY_OF)[keyof typeof ARRAY_OF]

function concatData(ctor: ArrayCtor | undefined, parts: TensorData[]): TensorData {
  if (ctor === undefined) return (parts as string[][]).flat()
  const length = parts.reduce((n, p) => n + p.length, 0)
  const out = new ctor(length)
  let at = 0
  for (const p of parts) {
    ;(out as { set(a: ArrayLike<unknown>, offset: number): void }).set(p as ArrayLike<unknown>, at)
    at += p.length
  }
  return out
}

/**
 * The key requests must share to be batched: input names, element types and dims after the first,
 * and the outputs asked for.
 */
function batchKey(inputs: Readonly<Record<string, Tensor>>, outputNames: readonly string[] | undefined): string {
  const parts = Object.keys(inputs)
    .sort()
    .map((name) => `${name}\0${inputs[name]!.type}\0${inputs[name]!.dims.slice(1).join(',')}`)
  return `${parts.join('\u0001')}\u0002${[...new Set(outputNames ?? [])].sort().join('\u0001')}`
}

interface Pending {
  inputs: Readonly<Record<string, Tensor>>
  rows: number
  resolve: (outputs: Record<string, Tensor>) => void
  reject: (err: unknown) => void
}

interface Forming {
  key: string
  outputNames: readonly string[] | undefined
  requests: Pending[]
  rows: number
  timer: NodeJS.Timeout
}

/** See the top of this file. One Batcher per loaded model version, closed before its session. */
export class Batcher {
  private readonly forming = new Map<string, Forming>()
  private readonly running = new Set<Promise<void>>()
  private closing: Promise<void> | undefined
  private readonly options: Readonly<BatcherOptions>

  constructor(
    private readonly runner: Runner,
    options: BatcherOptions,
  ) {
    if (!Number.isSafeInteger(options.maxBatch) || options.maxBatch < 1) {
      throw FabricError.invalidArgument(`maxBatch: expected an integer >= 1, got ${String(options.maxBatch)}`, { details: { option: 'maxBatch' } })
    }
    if (!Number.isFinite(options.maxDelayMs) || options.maxDelayMs < 0) {
      throw FabricError.invalidArgument(`maxDelayMs: expected a number >= 0, got ${String(options.maxDelayMs)}`, { details: { option: 'maxDelayMs' } })
    }
    this.options = Object.freeze({ maxBatch: options.maxBatch, maxDelayMs: options.maxDelayMs })
  }

  /** Requests waiting for their batch to be dispatched. */
  get queued(): number {
    let n = 0
    for (const f of this.forming.values()) n += f.requests.length
    return n
  }

  run(inputs: Readonly<Record<string, Tensor>>, outputNames?: readonly string[]): Promise<Record<string, Tensor>> {
    if (this.closing) return Promise.reject(FabricError.unavailable('model version is being unloaded'))
    const rows = batchRows(inputs)
    // Scalars, inputs that disagree on dim 0, no inputs: nothing to batch, and the runner's own
    // checks give the caller a precise error.
    if (rows === undefined || Object.keys(inputs).length === 0) return this.track(this.runner.run(inputs, outputNames))
    const key = batchKey(inputs, outputNames)
    return new Promise((resolve, reject) => {
      const request: Pending = { inputs, rows, resolve, reject }
      let batch = this.forming.get(key)
      if (batch && batch.rows + rows > this.options.maxBatch) {
        this.dispatch(batch)
        batch = undefined
      }
      if (rows >= this.options.maxBatch) {
        this.dispatchRequests([request], outputNames)
        return
      }
      if (!batch) {
        const forming: Forming = { key, outputNames, requests: [], rows: 0, timer: setTimeout(() => this.dispatch(forming), this.options.maxDelayMs) }
        this.forming.set(key, forming)
        batch = forming
      }
      batch.requests.push(request)
      batch.rows += rows
      if (batch.rows === this.options.maxBatch) this.dispatch(batch)
    })
  }

  /**
   * Refuses new requests, dispatches the queued ones at once (a version being swapped out still
   * answers every request it took), and resolves once every batch has finished. Safe to call twice.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      for (const batch of [...this.forming.values()]) this.dispatch(batch)
      await Promise.allSettled([...this.running])
    })()
    return this.closing
  }

  private dispatch(batch: Forming): void {
    clearTimeout(batch.timer)
    if (this.forming.get(batch.key) === batch) this.forming.delete(batch.key)
    this.dispatchRequests(batch.requests, batch.outputNames)
  }

  private dispatchRequests(requests: Pending[], outputNames: readonly string[] | undefined): void {
    if (requests.length === 1) {
      // A batch of one runs on the caller's own tensors: no concatenation, no split.
      const only = requests[0]!
      void this.track(this.runner.run(only.inputs, outputNames)).then(only.resolve, only.reject)
      return
    }
    const done = (async () => {
      const { inputs, counts } = concatBatch(requests.map((r) => r.inputs))
      const outputs = await this.runner.run(inputs, outputNames)
      return splitBatch(outputs, counts)
    })()
    void this.track(done).then(
      (parts) => requests.forEach((r, i) => r.resolve(parts[i]!)),
      (err: unknown) => requests.forEach((r) => r.reject(err)),
    )
  }

  private track<T>(p: Promise<T>): Promise<T> {
    const settled = p.then(
      () => undefined,
      () => undefined,
    )
    this.running.add(settled)
    void settled.then(() => this.running.delete(settled))
    return p
  }
}
