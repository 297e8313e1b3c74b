/**
 * The validation child: loads one model in onnxruntime, in a process of its own, so that a model
 * that crashes ORT or eats memory while loading takes only this process down (validate.ts).
 *
 * Protocol: argv[2] is the model's size in bytes, argv[3] the parent's pid; the parent writes the
 * model to stdin and closes it. The child sends one IPC message, { inputs, outputs } (ORT's metadata) or { error } (ORT's
 * load error), and exits. The parent enforces the memory limit and the timeout by killing it.
 */
import * as ort from 'onnxruntime-node'
import { Worker } from 'node:worker_threads'
import { ortSessionOptions } from './ort-options.ts'

export interface ChildReply {
  inputs?: readonly ort.InferenceSession.ValueMetadata[]
  outputs?: readonly ort.InferenceSession.ValueMetadata[]
  /** ORT's load error: the model's fault. */
  error?: string
  /** Anything else that went wrong in the child: fabric's fault. */
  failure?: string
}

/**
 * Kills this process once its parent is gone. The load is one synchronous native call, so nothing
 * on the main thread can notice; a worker thread can. Without it, a daemon killed mid-validation
 * would leave a child loading (and allocating for) a hostile model with nobody watching.
 */
function dieWithParent(parent: number): void {
  // The parent's pid comes from the parent: had it died before this line, process.ppid would
  // already name the reaper that adopted us.
  const code = `const { workerData } = require('node:worker_threads')
const check = () => { if (process.ppid !== workerData) process.kill(process.pid, 'SIGKILL') }
check()
setInterval(check, 200)`
  new Worker(code, { eval: true, workerData: parent, execArgv: [] }).unref()
}

async function readModel(size: number): Promise<Buffer> {
  // One buffer of the announced size: concatenating chunks would hold the model twice.
  const bytes = Buffer.allocUnsafe(size)
  let at = 0
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    if (at + chunk.length > size) throw new Error(`the parent sent more than the ${size} bytes it announced`)
    chunk.copy(bytes, at)
    at += chunk.length
  }
  if (at !== size) throw new Error(`the parent announced ${size} bytes and sent ${at}`)
  return bytes
}

async function load(bytes: Buffer): Promise<ChildReply> {
  try {
    // One intra-op thread: loading is mostly single-threaded anyway, and the daemon is next door.
    const session = await ort.InferenceSession.create(bytes, ortSessionOptions({ intraOpThreads: 1 }))
    return { inputs: session.inputMetadata, outputs: session.outputMetadata }
  } catch (err) {
    return { error: err instanceof Error ? err.message : String(err) }
  }
}

dieWithParent(Number(process.argv[3]))
const reply = await readModel(Number(process.argv[2])).then(load, (err: unknown): ChildReply => ({ failure: String(err) }))
process.send!(reply, () => process.exit(0))
