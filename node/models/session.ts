/**
 * A model version loaded for serving, in the daemon's own process (one of the two files that
 * import onnxruntime-node; validator-child.ts is the other).
 *
 * Event loop: onnxruntime-node's create and run are synchronous native calls, each made inside a
 * setImmediate on the calling thread. So loadSession blocks the event loop for the whole load
 * (parsing, graph optimization, constant folding: milliseconds for small models, seconds for big
 * ones) and must only be called from the background reconciler, never while answering a request;
 * and every run blocks it for the model's run time (tens of microseconds for a tiny Add, far more
 * for real models), which is the price of not copying tensors to another thread.
 *
 * onnxruntime is imported on the first load, not with this module: its native library costs about
 * 30 MB of RSS, which a node serving no model (and any other importer of models/) should not pay.
 */
import type * as ort from 'onnxruntime-node'
import { setImmediate as nextTurn } from 'node:timers/promises'
import { FabricError, messageOf } from '../errors/index.ts'
import { inspectOnnx, refuseExternalData } from './onnx.ts'
import { ortSessionOptions, type SessionThreads } from './ort-options.ts'
import { checkInputs, signatureFromOrt, type Signature } from './signature.ts'
import { isElementType, type Tensor, type TensorData } from './tensor.ts'

export type SessionOptions = SessionThreads

type Ort = typeof ort
let ortModule: Promise<Ort> | undefined
const onnxruntime = (): Promise<Ort> => (ortModule ??= import('onnxruntime-node'))

export interface ModelSession {
  readonly signature: Signature
  /** Runs started and not yet finished. */
  readonly inflight: number
  /**
   * Runs the model. Inputs are checked against the signature first (INVALID_ARGUMENT naming the
   * input). `outputNames` picks outputs (all when undefined or empty). Inputs are handed to ORT
   * without copying; outputs are ORT's own arrays, not copied again. After release() has been
   * called: UNAVAILABLE.
   */
  run(inputs: Readonly<Record<string, Tensor>>, outputNames?: readonly string[]): Promise<Record<string, Tensor>>
  /** Refuses new runs, waits for those in flight, then frees the ORT session. Safe to call twice. */
  release(): Promise<void>
}

/**
 * Loads a validated model for serving. Refuses models that reference external data (again: the
 * bytes come from the namespace, and a node must never read its own files on a model's say-so).
 * See the top of this file: this blocks the event loop for the load time.
 */
export async function loadSession(bytes: Uint8Array, options: SessionOptions = {}): Promise<ModelSession> {
  checkThreads(options)
  // Never start blocking inside the caller's own turn of the event loop.
  await nextTurn()
  const info = inspectOnnx(bytes)
  refuseExternalData(info)
  const runtime = await onnxruntime()
  await nextTurn()
  let session: ort.InferenceSession
  try {
    session = await runtime.InferenceSession.create(bytes, ortSessionOptions(options))
  } catch (err) {
    throw FabricError.invalidArgument(`does not load in onnxruntime: ${oneLine(messageOf(err))}`, { cause: err })
  }
  try {
    return new OrtModelSession(runtime, session, signatureFromOrt(session.inputMetadata, session.outputMetadata, info))
  } catch (err) {
    await session.release()
    throw err
  }
}

function checkThreads(options: SessionOptions): void {
  for (const key of ['intraOpThreads', 'interOpThreads'] as const) {
    const v = options[key]
    if (v !== undefined && (!Number.isSafeInteger(v) || v < 0)) {
      throw FabricError.invalidArgument(`${key}: expected an integer >= 0 (0: onnxruntime's default), got ${String(v)}`, { details: { option: key } })
    }
  }
}

class OrtModelSession implements ModelSession {
  private state: 'open' | 'closing' | 'released' = 'open'
  private running = 0
  private drained: (() => void) | undefined
  private releasing: Promise<void> | undefined
  private readonly outputNames: readonly string[]

  constructor(
    private readonly runtime: Ort,
    private readonly session: ort.InferenceSession,
    readonly signature: Signature,
  ) {
    this.outputNames = signature.outputs.map((o) => o.name)
  }

  get inflight(): number {
    return this.running
  }

  async run(inputs: Readonly<Record<string, Tensor>>, outputNames?: readonly string[]): Promise<Record<string, Tensor>> {
    if (this.state !== 'open') throw FabricError.unavailable('model version is being unloaded')
    checkInputs(this.signature, inputs)
    const fetches = this.fetchesFor(outputNames)
    const feeds: Record<string, ort.Tensor> = {}
    for (const [name, t] of Object.entries(inputs)) feeds[name] = toOrt(this.runtime, name, t)
    this.running++
    let results: ort.InferenceSession.ReturnType
    try {
      results = await this.session.run(feeds, fetches)
    } catch (err) {
      throw runError(err)
    } finally {
      if (--this.running === 0) this.drained?.()
    }
    const out: Record<string, Tensor> = {}
    for (const name of fetches) out[name] = fromOrt(name, results[name])
    return out
  }

  release(): Promise<void> {
    this.releasing ??= (async () => {
      this.state = 'closing'
      if (this.running > 0) await new Promise<void>((resolve) => (this.drained = resolve))
      this.state = 'released'
      await this.session.release()
    })()
    return this.releasing
  }

  private fetchesFor(outputNames: readonly string[] | undefined): readonly string[] {
    if (outputNames === undefined || outputNames.length === 0) return this.outputNames
    for (const name of outputNames) {
      if (!this.outputNames.includes(name)) {
        throw FabricError.invalidArgument(`unknown output "${name}" (the model's outputs are ${this.outputNames.map((n) => `"${n}"`).join(', ')})`, {
          details: { output: name, expected: this.outputNames.join(', '), got: name },
        })
      }
    }
    return [...new Set(outputNames)]
  }
}

function toOrt(runtime: Ort, name: string, t: Tensor): ort.Tensor {
  if (t.type === 'string') {
    // onnxruntime-node passes strings as C strings: everything after a NUL would silently vanish.
    const i = (t.data as string[]).findIndex((s) => s.includes('\0'))
    if (i >= 0) throw FabricError.invalidArgument(`input "${name}": string element ${i} contains a NUL character, which onnxruntime cannot carry`, { details: { input: name } })
  }
  // The typed array itself becomes the ORT tensor's buffer: no copy.
  return new runtime.Tensor(t.type, t.data as never, t.dims)
}

function fromOrt(name: string, t: ort.Tensor | undefined): Tensor {
  if (t === undefined) throw FabricError.internal(`onnxruntime returned no output "${name}"`)
  if (!isElementType(t.type)) throw FabricError.internal(`onnxruntime returned output "${name}" of unsupported type ${t.type}`)
  return { type: t.type, dims: [...t.dims], data: t.data as TensorData }
}

/**
 * ORT's run errors are plain Errors; the message is all there is to tell them apart. The inputs
 * were already checked against the signature, so what ORT still refuses (a shape the graph cannot
 * take, say two unnamed dynamic dims that must match) is about the caller's data: INVALID_ARGUMENT
 * with ORT's words. Anything else is ours: INTERNAL, the cause kept for the log.
 */
const INPUT_PROBLEMS = [
  /invalid dimensions for input/i,
  /invalid rank for input/i,
  /unexpected input data type/i,
  /is missing in 'feeds'/i,
  /invalid (feed )?input name/i,
  /invalid output name/i,
  /non-zero status code returned while running/i,
]

function runError(err: unknown): FabricError {
  if (err instanceof FabricError) return err
  const message = oneLine(messageOf(err))
  if (INPUT_PROBLEMS.some((re) => re.test(message))) {
    return FabricError.invalidArgument(`the model cannot run on these inputs: ${message}`, { cause: err })
  }
  return FabricError.internal(`onnxruntime failed: ${message}`, { cause: err })
}

function oneLine(message: string): string {
  return message.replace(/\s+/g, ' ').trim()
}
