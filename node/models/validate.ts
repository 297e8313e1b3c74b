/**
 * Validation of a model at publish time: is it an ONNX model fabric can serve, and what is its
 * signature. The checks that need no onnxruntime (size, parsing, external data, declared types)
 * run here; then the model is loaded in onnxruntime in a child process (validator-child.ts), so a
 * model that crashes ORT, or that allocates without bound while ORT constant-folds it at load,
 * takes down only the child.
 *
 * The memory limit counts the child's resident memory (VmRSS), polled from /proc every few ms,
 * and kills the child when it crosses the limit. That is the one measure that sees ORT's native
 * allocations. The alternatives do not work: --max-old-space-size bounds only V8's heap (the child
 * gets a small one anyway), and RLIMIT_AS kills Node itself, which reserves over 1 GiB of address
 * space before running a line (RLIMIT_DATA would work but Node cannot set rlimits without a shell
 * or prlimit). The RSS includes Node and ORT themselves (about 85 MiB) and ORT's copies of the model
 * (about twice its size), so the limit must leave room for those. Off Linux there is no /proc and
 * only the timeout applies.
 *
 * The timeout runs from the child's spawn: it includes starting Node and ORT (about 0.1 s, 0.4 s
 * under tsx).
 */
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { FabricError } from '../errors/index.ts'
import { inspectOnnx, refuseExternalData, type OnnxInfo } from './onnx.ts'
import { refuseUnservable, signatureFromOrt, type OrtValueMetadata, type Signature } from './signature.ts'
import type { ChildReply } from './validator-child.ts'

export interface ValidationLimits {
  /** The most resident memory the loading child may use, Node and ORT included (>= 192 MiB). */
  memoryBytes: number
  /** How long the child may take, from its spawn to its answer. */
  timeoutMs: number
  /** The largest model accepted, checked before anything else (default: no limit of its own). */
  maxBytes?: number
}

export interface ValidatedModel {
  signature: Signature
  /** Hex SHA-256 of the model's bytes. */
  sha256: string
  bytes: number
  info: OnnxInfo
}

/** Below this a child cannot even start: Node and ORT take about 85 MiB (about 120 MiB under tsx). */
export const MIN_VALIDATION_MEMORY_BYTES = 192 * 1024 * 1024
/** How often the child's RSS is read. ORT fills memory at ~1 GB/s, so this overshoots by ~20 MB. */
const RSS_POLL_MS = 15
/** V8 heap of the child: it holds the model in a Buffer (outside the heap) and little else. */
const CHILD_HEAP_MIB = 96
/** Children at once, so that publishing many models at once cannot multiply the memory limit. */
const CHILDREN_AT_ONCE = 2
/** The last bytes of the child's stderr kept for the log when it crashes. */
const STDERR_TAIL_BYTES = 4096

const HERE = fileURLToPath(import.meta.url)
// From sources (tests run TypeScript through tsx), the child is a .ts file and needs tsx too.
const FROM_SOURCE = HERE.endsWith('.ts')
const CHILD = path.join(path.dirname(HERE), FROM_SOURCE ? 'validator-child.ts' : 'validator-child.js')
// The package root (or dist/): a fixed working directory, whatever the daemon's, where tsx finds
// the tsconfig. Never the data dir, so that nothing a model names resolves next to fabric's data.
const CHILD_CWD = path.resolve(path.dirname(HERE), '..', '..')

/**
 * Validates a model (see the top of this file). Every refusal is INVALID_ARGUMENT naming what is
 * wrong: not ONNX, external data, inputs or outputs fabric cannot serve, ORT's load error, a crash
 * of ORT (with the signal), the memory limit, the timeout.
 */
export async function validateModel(bytes: Uint8Array, limits: ValidationLimits): Promise<ValidatedModel> {
  checkLimits(limits)
  if (bytes.byteLength === 0) throw FabricError.invalidArgument('the model is empty')
  if (limits.maxBytes !== undefined && bytes.byteLength > limits.maxBytes) {
    throw FabricError.invalidArgument(`the model has ${bytes.byteLength} bytes, more than the ${limits.maxBytes} accepted`, {
      details: { limit: String(limits.maxBytes) },
    })
  }
  const sha256 = createHash('sha256').update(bytes).digest('hex')
  const info = inspectOnnx(bytes)
  refuseExternalData(info)
  refuseUnservable(info)
  const reply = await withChildSlot(() => loadInChild(bytes, limits))
  const signature = signatureFromOrt(reply.inputs as OrtValueMetadata[], reply.outputs as OrtValueMetadata[], info)
  return { signature, sha256, bytes: bytes.byteLength, info }
}

function checkLimits(limits: ValidationLimits): void {
  if (!Number.isSafeInteger(limits.memoryBytes) || limits.memoryBytes < MIN_VALIDATION_MEMORY_BYTES) {
    throw FabricError.invalidArgument(`validation memoryBytes: expected at least ${MIN_VALIDATION_MEMORY_BYTES} (192 MiB), got ${String(limits.memoryBytes)}`, {
      details: { limit: 'memoryBytes' },
    })
  }
  if (!Number.isFinite(limits.timeoutMs) || limits.timeoutMs <= 0) {
    throw FabricError.invalidArgument(`validation timeoutMs: expected a positive number, got ${String(limits.timeoutMs)}`, { details: { limit: 'timeoutMs' } })
  }
}

let childrenRunning = 0
const waitingForChild: Array<() => void> = []

async function withChildSlot<T>(fn: () => Promise<T>): Promise<T> {
  // A finishing child hands its slot straight to the next waiter, so the count never overshoots.
  if (childrenRunning < CHILDREN_AT_ONCE) childrenRunning++
  else await new Promise<void>((resolve) => waitingForChild.push(resolve))
  try {
    return await fn()
  } finally {
    const next = waitingForChild.shift()
    if (next) next()
    else childrenRunning--
  }
}

type Loaded = Required<Pick<ChildReply, 'inputs' | 'outputs'>>

function loadInChild(bytes: Uint8Array, limits: ValidationLimits): Promise<Loaded> {
  const args = [`--max-old-space-size=${CHILD_HEAP_MIB}`, CHILD, String(bytes.byteLength), String(process.pid)]
  if (FROM_SOURCE) args.unshift('--import', import.meta.resolve('tsx'))
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, {
      cwd: CHILD_CWD,
      // Nothing of the daemon's environment: no NODE_OPTIONS, no credentials, no proxies.
      env: {},
      stdio: ['pipe', 'ignore', 'pipe', 'ipc'],
      windowsHide: true,
    })
    let settled = false
    let killedFor: 'memory' | 'timeout' | undefined
    let stderr = ''
    let peakRss = 0
    const settle = (outcome: Loaded | FabricError): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      clearInterval(poll)
      // The answer is all the child is for; its exit (ORT's teardown) would take another ~40 ms.
      child.kill('SIGKILL')
      if (outcome instanceof FabricError) reject(outcome)
      else resolve(outcome)
    }
    const kill = (why: 'memory' | 'timeout'): void => {
      killedFor ??= why
      child.kill('SIGKILL')
    }
    const causeOf = (how: string): Error => new Error(`validation child ${how}, peak RSS ${peakRss} bytes; stderr: ${stderr.trim() || '(empty)'}`)

    child.on('message', (reply: ChildReply) => {
      if (killedFor) return
      if (reply.error !== undefined) settle(FabricError.invalidArgument(`does not load in onnxruntime: ${reply.error.replace(/\s+/g, ' ').trim()}`, { cause: causeOf('answered') }))
      else if (reply.inputs && reply.outputs) settle({ inputs: reply.inputs, outputs: reply.outputs })
      else settle(FabricError.internal(`model validation failed: ${reply.failure ?? 'the child sent no metadata'}`, { cause: causeOf('answered') }))
    })
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr = (stderr + s).slice(-STDERR_TAIL_BYTES)))
    // The child may die before it has read the whole model; its exit says why, not the EPIPE.
    child.stdin!.on('error', () => undefined)
    child.stdin!.end(bytes)

    const timer = setTimeout(() => kill('timeout'), limits.timeoutMs)
    let reading = false
    const poll = process.platform === 'linux' && child.pid !== undefined
      ? setInterval(() => {
          if (reading) return
          reading = true
          void rssOf(child.pid!)
            .then((rss) => {
              peakRss = Math.max(peakRss, rss)
              if (rss > limits.memoryBytes) kill('memory')
            })
            .finally(() => (reading = false))
        }, RSS_POLL_MS)
      : undefined

    child.on('error', (err) => settle(FabricError.internal(`cannot start the model validation process: ${err.message}`, { cause: err })))
    child.on('close', (code, signal) => {
      const cause = causeOf(`exited with ${signal ?? `code ${code}`}`)
      if (killedFor === 'memory') {
        settle(FabricError.invalidArgument(`loading the model needed more than ${mib(limits.memoryBytes)} of memory, the validation limit`, {
          cause,
          details: { limit: String(limits.memoryBytes) },
        }))
      } else if (killedFor === 'timeout') {
        settle(FabricError.invalidArgument(`loading the model took longer than ${seconds(limits.timeoutMs)}, the validation limit`, {
          cause,
          details: { limit: String(limits.timeoutMs) },
        }))
      } else if (signal !== null || code !== 0) {
        settle(FabricError.invalidArgument(`onnxruntime crashed loading the model (${signal ?? `exit code ${code}`})`, { cause }))
      } else {
        settle(FabricError.internal('the model validation process exited without an answer', { cause }))
      }
    })
  })
}

/** VmRSS of a process in bytes; 0 once it is gone. */
async function rssOf(pid: number): Promise<number> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8')
    const kb = /^VmRSS:\s+(\d+) kB/m.exec(status)?.[1]
    return kb === undefined ? 0 : Number(kb) * 1024
  } catch {
    return 0
  }
}

const mib = (bytes: number): string => `${+(bytes / 2 ** 20).toFixed(1)} MiB`
const seconds = (ms: number): string => `${+(ms / 1000).toFixed(3)} s`
