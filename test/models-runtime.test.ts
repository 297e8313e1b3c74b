/**
 * The model runtime against real onnxruntime and real child processes: validation outcomes for
 * good, bad, hostile, hungry and slow models; signatures; runs of every element type; input checks;
 * release with runs in flight; dynamic batching under concurrency.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { FabricError, isFabricError } from '../node/errors/index.ts'
import {
  Batcher,
  MAX_TENSOR_ELEMENTS,
  batchable,
  checkInputs,
  concatBatch,
  inspectOnnx,
  loadSession,
  splitBatch,
  tensorFromBytes,
  tensorFromStrings,
  tensorToBytes,
  validateModel,
  type ModelSession,
  type Runner,
  type Signature,
  type Tensor,
} from '../node/models/index.ts'
import {
  ALL_TYPES_INPUTS,
  addModel,
  allTypesModel,
  externalDataEverywhereModel,
  externalDataModel,
  garbageBytes,
  lookupModel,
  memoryHungryModel,
  scaleModel,
  sequenceModel,
  slowToLoadModel,
  stringModel,
  subgraphExternalDataModel,
  unknownOpModel,
  unservableTypeModel,
} from './harness/onnx.ts'
import { poll, refusal, ROOT, tempDir, thrown, type Teardown } from './harness/index.ts'

const MiB = 2 ** 20
const LIMITS = { memoryBytes: 512 * MiB, timeoutMs: 30_000 }

const f32 = (dims: number[], values: number[]): Tensor => ({ type: 'float32', dims, data: new Float32Array(values) })



async function session(t: Teardown, bytes: Uint8Array): Promise<ModelSession> {
  const s = await loadSession(bytes, { intraOpThreads: 1 })
  t.teardown(() => s.release())
  return s
}

/** Pids of this process's children whose command line contains `marker`. */
async function childrenOf(ppid: number, marker: string): Promise<number[]> {
  const pids: number[] = []
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8')
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      if (parent !== ppid) continue
      if ((await readFile(`/proc/${entry}/cmdline`, 'utf8')).includes(marker)) pids.push(Number(entry))
    } catch {
      // gone while we looked
    }
  }
  return pids
}

/** A process that no longer runs (a zombie nobody reaped counts as gone). */
async function isGone(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z'
  } catch {
    return true
  }
}

t.test('validation: a model that loads gives its signature, its hash and what the file says about itself', async (t) => {
  const bytes = addModel()
  const v = await validateModel(bytes, LIMITS)
  t.same(v.signature, {
    inputs: [
      { name: 'a', type: 'float32', shape: ['N', 3] },
      { name: 'b', type: 'float32', shape: ['N', 3] },
    ],
    outputs: [{ name: 'sum', type: 'float32', shape: ['N', 3] }],
  })
  t.equal(v.sha256, createHash('sha256').update(bytes).digest('hex'))
  t.equal(v.bytes, bytes.byteLength)
  t.match(v.info, { irVersion: 8, opsets: [{ domain: '', version: 17 }], producerName: 'fabric-tests', producerVersion: '1', graphName: 'add', docString: 'adds two float32 [N,3] tensors', externalData: [] })
  t.ok(batchable(v.signature), 'a symbolic first dim everywhere: batchable')
})

t.test('validation: every element type, PyTorch-style names, symbolic, unnamed and shapeless dims', async (t) => {
  const { signature } = await validateModel(allTypesModel(), LIMITS)
  const byName = new Map(signature.inputs.map((s) => [s.name, s]))
  t.same(signature.inputs.map((s) => s.name), ALL_TYPES_INPUTS.map((i) => i.name), 'inputs in the model order')
  t.same(byName.get('0'), { name: '0', type: 'float32', shape: ['N', 2] })
  t.same(byName.get('input.1'), { name: 'input.1', type: 'float64', shape: ['N', 2] })
  t.same(byName.get('int8'), { name: 'int8', type: 'int8', shape: [] }, 'a scalar')
  t.same(byName.get('int16'), { name: 'int16', type: 'int16', shape: [2, 3] }, 'fixed dims')
  t.same(byName.get('int32'), { name: 'int32', type: 'int32', shape: ['N', '?'] }, "an unnamed dynamic dim is '?'")
  t.same(byName.get('uint8'), { name: 'uint8', type: 'uint8', shape: ['M', 2] })
  t.same(byName.get('uint16'), { name: 'uint16', type: 'uint16', shape: [], unknownRank: true }, 'no declared shape: unknown rank, not a scalar')
  t.same(signature.outputs.map((o) => o.type), ALL_TYPES_INPUTS.map((i) => i.type))
  t.notOk(batchable(signature), 'a scalar input: not batchable')
  t.same((await validateModel(stringModel(), LIMITS)).signature.inputs, [{ name: 'text', type: 'string', shape: ['N'] }])
})

t.test('validation refuses what fabric cannot serve, naming the problem', async (t) => {
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ['garbage', garbageBytes(), /^not an ONNX model: invalid wire type/],
    ['an unknown op', unknownOpModel(), /^does not load in onnxruntime: .*No Op registered for Frobnicate/],
    ['float16', unservableTypeModel('float16'), /^the model has inputs or outputs fabric cannot serve: input "h" \(float16\), output "h_out" \(float16\); fabric serves tensors of float32, /],
    ['bfloat16', unservableTypeModel('bfloat16'), /input "h" \(bfloat16\), output "h_out" \(bfloat16\)/],
    ['a sequence input', sequenceModel(), /fabric cannot serve: input "items" \(a sequence\);/],
    ['empty bytes', new Uint8Array(0), /^the model is empty$/],
  ]
  for (const [what, bytes, message] of cases) {
    const err = await refusal(validateModel(bytes, LIMITS))
    t.equal(err.code, 'INVALID_ARGUMENT', what)
    t.match(err.message, message, what)
  }
  const big = await refusal(validateModel(addModel(), { ...LIMITS, maxBytes: 10 }))
  t.match(big, { code: 'INVALID_ARGUMENT', message: /more than the 10 accepted/, details: { limit: '10' } })
  const low = await refusal(validateModel(addModel(), { memoryBytes: 64 * MiB, timeoutMs: 1000 }))
  t.match(low, { code: 'INVALID_ARGUMENT', message: /^validation memoryBytes: expected at least/ })
})

t.test('a model referencing external data is refused before anything loads it, also from a subgraph', async (t) => {
  for (const [what, bytes] of [
    ['an initializer', externalDataModel()],
    ['a Constant inside an If branch', subgraphExternalDataModel()],
  ] as const) {
    const err = await refusal(validateModel(bytes, LIMITS))
    t.equal(err.code, 'INVALID_ARGUMENT', what)
    t.equal(err.message, 'the model references external data file ../../etc/passwd; fabric only accepts self-contained models', what)
    t.same(err.details, { location: '../../etc/passwd' })
    t.match(await refusal(loadSession(bytes)), { code: 'INVALID_ARGUMENT', message: /external data file \.\.\/\.\.\/etc\/passwd/ }, `${what}: loadSession refuses it too`)
  }
  t.same(inspectOnnx(externalDataEverywhereModel()).externalData, ['a.bin', 'b.bin', 'c.bin', 'd.bin', 'e.bin'], 'sparse, attribute lists, nested subgraphs and functions are all found')
})

t.test('a model that needs more memory to load than the limit is killed at the limit', async (t) => {
  const err = await refusal(validateModel(memoryHungryModel(2 ** 30), { memoryBytes: 256 * MiB, timeoutMs: 60_000 }))
  t.match(err, { code: 'INVALID_ARGUMENT', message: 'loading the model needed more than 256 MiB of memory, the validation limit', details: { limit: String(256 * MiB) } })
  const peak = Number(/peak RSS (\d+) bytes/.exec((err.cause as Error).message)?.[1])
  t.ok(peak > 256 * MiB && peak < 1024 * MiB, `killed on the way up (peak ${Math.round(peak / MiB)} MiB), not after the 1 GiB the model asks for`)
})

t.test('a model that takes longer to load than the timeout is killed', async (t) => {
  const err = await refusal(validateModel(slowToLoadModel(), { memoryBytes: 1024 * MiB, timeoutMs: 1500 }))
  t.match(err, { code: 'INVALID_ARGUMENT', message: 'loading the model took longer than 1.5 s, the validation limit', details: { limit: '1500' } })
})

t.test('onnxruntime dying in the child is reported with its signal, and the daemon lives on', async (t) => {
  const validating = refusal(validateModel(slowToLoadModel(), { memoryBytes: 1024 * MiB, timeoutMs: 60_000 }))
  const [pid] = await poll('the validation child', async () => {
    const pids = await childrenOf(process.pid, 'validator-child')
    return pids.length > 0 ? pids : undefined
  })
  process.kill(pid!, 'SIGSEGV')
  t.match(await validating, { code: 'INVALID_ARGUMENT', message: 'onnxruntime crashed loading the model (SIGSEGV)' })
  t.ok((await validateModel(addModel(), LIMITS)).signature, 'validation still works afterwards')
})

t.test('a daemon killed while validating leaves no child behind', async (t) => {
  const dir = await tempDir(t)
  const script = path.join(dir, 'validate.mts')
  await writeFile(
    script,
    `import { validateModel } from ${JSON.stringify(path.join(ROOT, 'node/models/index.ts'))}
import { slowToLoadModel } from ${JSON.stringify(path.join(ROOT, 'test/harness/onnx.ts'))}
await validateModel(slowToLoadModel(4096, 12), { memoryBytes: 2 ** 30, timeoutMs: 600_000 })`,
  )
  const daemon = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), script], { cwd: ROOT, stdio: 'ignore' })
  t.teardown(() => daemon.kill('SIGKILL'))
  const [child] = await poll('the daemon\'s validation child', async () => {
    const pids = await childrenOf(daemon.pid!, 'validator-child')
    return pids.length > 0 ? pids : undefined
  })
  daemon.kill('SIGKILL')
  await poll('the orphaned child to kill itself', () => isGone(child!), 10_000)
  t.pass('the child noticed its parent was gone and stopped')
})

t.test('validation works from the compiled dist/ with plain node', async (t) => {
  const entry = path.join(ROOT, 'dist/node/models/index.js')
  if (!existsSync(entry)) throw new Error(`${entry} is missing: run "npm run build" first (npm test does)`)
  const dir = await tempDir(t)
  await writeFile(path.join(dir, 'add.onnx'), addModel())
  const code = `import { validateModel } from ${JSON.stringify(entry)}
import { readFileSync } from 'node:fs'
const v = await validateModel(readFileSync(${JSON.stringify(path.join(dir, 'add.onnx'))}), { memoryBytes: 256 * 2 ** 20, timeoutMs: 30000 })
process.stdout.write(JSON.stringify(v.signature))`
  const out = await new Promise<string>((resolve, reject) => {
    const p = spawn(process.execPath, ['--input-type=module', '-e', code], { cwd: dir, env: {}, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    p.stdout.on('data', (d: Buffer) => (stdout += String(d)))
    p.stderr.on('data', (d: Buffer) => (stderr += String(d)))
    p.on('close', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`exit ${code}: ${stderr}`))))
  })
  t.same(JSON.parse(out).inputs.map((i: { name: string }) => i.name), ['a', 'b'])
})

/** Inputs for allTypesModel with N = 2, M = 3, built the way the API builds them: from wire bytes. */
function allTypesInputs(): Record<string, Tensor> {
  const wire = (type: Exclude<Tensor['type'], 'string'>, dims: number[], values: ArrayLike<number | bigint>, name: string): Tensor => {
    const Ctor = { float32: Float32Array, float64: Float64Array, int8: Int8Array, int16: Int16Array, int32: Int32Array, int64: BigInt64Array, uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array, uint64: BigUint64Array, bool: Uint8Array }[type]
    const typed = new (Ctor as unknown as new (v: ArrayLike<number | bigint>) => { buffer: ArrayBuffer })(values)
    // Offset by one byte inside a bigger buffer, as a gRPC message field would be: forces the copy path.
    const raw = new Uint8Array(typed.buffer.byteLength + 1)
    raw.set(new Uint8Array(typed.buffer), 1)
    return tensorFromBytes(type, dims, raw.subarray(1), `input "${name}"`)
  }
  return {
    '0': wire('float32', [2, 2], [1.5, -2, Number.NaN, Infinity], '0'),
    'input.1': wire('float64', [2, 2], [Math.PI, -0, 1e300, Number.MIN_VALUE], 'input.1'),
    int8: wire('int8', [], [-128], 'int8'),
    int16: wire('int16', [2, 3], [-32768, 32767, 0, 1, -1, 2], 'int16'),
    int32: wire('int32', [2, 5], [-(2 ** 31), 2 ** 31 - 1, 0, 1, 2, 3, 4, 5, 6, 7], 'int32'),
    int64: wire('int64', [2], [-(2n ** 63n), 2n ** 63n - 1n], 'int64'),
    uint8: wire('uint8', [3, 2], [0, 255, 1, 2, 3, 4], 'uint8'),
    uint16: wire('uint16', [1, 2, 1, 2], [0, 65535, 7, 8], 'uint16'),
    uint32: wire('uint32', [2, 2], [0, 2 ** 32 - 1, 5, 6], 'uint32'),
    uint64: wire('uint64', [2, 2], [0n, 2n ** 64n - 1n, 2n ** 53n + 1n, 9n], 'uint64'),
    bool: wire('bool', [2, 2], [1, 0, 0, 1], 'bool'),
    string: tensorFromStrings([2, 2], ['', 'héllo', '日本語', '👍 emoji'], 'input "string"'),
  }
}

t.test('a run round-trips every element type through wire bytes and back', async (t) => {
  const s = await session(t, allTypesModel())
  const inputs = allTypesInputs()
  const outputs = await s.run(inputs)
  for (const { name, type } of ALL_TYPES_INPUTS) {
    const got = outputs[`${type}_out`]!
    const sent = inputs[name]!
    t.equal(got.type, type, `${type}: type`)
    t.same(got.dims, sent.dims, `${type}: dims`)
    if (type === 'string') t.same(got.data, sent.data, 'strings, unicode included')
    else t.same(Buffer.from(tensorToBytes(got)), Buffer.from(tensorToBytes(sent)), `${type}: the same bytes (NaN, -0 and extremes included)`)
  }
  const one = await s.run(inputs, ['int64_out'])
  t.same(Object.keys(one), ['int64_out'], 'outputNames picks outputs')
})

t.test('a string model really processes strings; versions of a model answer differently', async (t) => {
  const lower = await session(t, stringModel())
  const out = await lower.run({ text: tensorFromStrings([2], ['Hello World', 'FABRIC']) })
  t.same(out.lower, { type: 'string', dims: [2], data: ['hello world', 'fabric'] })
  const x = f32([1, 4], [1, 2, 3, 4])
  const [v1, v2] = [await session(t, scaleModel(2)), await session(t, scaleModel(10))]
  t.same([...((await v1.run({ x })).y!.data as Float32Array)], [2, 4, 6, 8])
  t.same([...((await v2.run({ x })).y!.data as Float32Array)], [10, 20, 30, 40])
})

t.test('inputs are checked against the signature, naming the input, expected and got', async (t) => {
  const s = await session(t, addModel())
  const ok = f32([2, 3], [1, 2, 3, 4, 5, 6])
  const cases: Array<[string, Record<string, Tensor>, RegExp | string, Record<string, string>]> = [
    ['missing', { a: ok }, 'missing input "b" (float32 [N,3])', { input: 'b', expected: 'float32 [N,3]', got: 'nothing' }],
    ['unknown', { a: ok, b: ok, c: ok }, 'unknown input "c" (the model\'s inputs are "a", "b")', { input: 'c', expected: 'a, b', got: 'c' }],
    ['type', { a: ok, b: { type: 'int32', dims: [2, 3], data: new Int32Array(6) } }, 'input "b": expected float32, got int32', { input: 'b', expected: 'float32', got: 'int32' }],
    ['rank', { a: ok, b: f32([6], [1, 2, 3, 4, 5, 6]) }, 'input "b": expected rank 2 [N,3], got rank 1 [6]', { input: 'b', expected: '[N,3]', got: '[6]' }],
    ['fixed dim', { a: ok, b: f32([2, 2], [1, 2, 3, 4]) }, 'input "b": dim 1 must be 3 (expected [N,3]), got [2,2]', { input: 'b', expected: '[N,3]', got: '[2,2]' }],
    ['N binds', { a: ok, b: f32([1, 3], [1, 2, 3]) }, 'input "b": dim 0 is N, which input "a" set to 2, got 1 (shape [1,3])', { input: 'b', expected: 'N=2', got: 'N=1' }],
    ['data length', { a: ok, b: f32([2, 3], [1, 2, 3]) }, 'input "b": dims [2,3] hold 6 elements, its data has 3', {}],
  ]
  for (const [what, inputs, message, details] of cases) {
    const err = await refusal(s.run(inputs))
    t.equal(err.code, 'INVALID_ARGUMENT', what)
    t.equal(err.message, message, what)
    t.match(err.details, details, what)
  }
  t.match(await refusal(s.run({ a: ok, b: ok }, ['nope'])), { code: 'INVALID_ARGUMENT', message: 'unknown output "nope" (the model\'s outputs are "sum")' })

  const shapes: Signature = {
    inputs: [
      { name: 'x', type: 'float32', shape: ['?', '?'] },
      { name: 'y', type: 'float32', shape: [-1, 2] },
      { name: 'z', type: 'float32', shape: [], unknownRank: true },
    ],
    outputs: [],
  }
  checkInputs(shapes, { x: f32([1, 2], [1, 2]), y: f32([5, 2], new Array(10).fill(0)), z: f32([1, 1, 1], [1]) })
  t.pass("'?' and -1 bind nothing; unknown rank takes any rank")
  t.match(thrown(() => checkInputs(shapes, { x: f32([2], [1, 2]), y: f32([1, 2], [1, 2]), z: f32([], [1]) })), { message: 'input "x": expected rank 2 [?,?], got rank 1 [2]' })
  const square: Signature = { inputs: [{ name: 'm', type: 'float32', shape: ['K', 'K'] }], outputs: [] }
  t.match(thrown(() => checkInputs(square, { m: f32([2, 3], new Array(6).fill(0)) })), { message: /dim 1 is K, which an earlier dim of this input set to 2, got 3/ })
})

t.test('what onnxruntime itself refuses at run time is the caller\'s problem; strings with NUL are refused', async (t) => {
  const unnamed = await session(t, addModel('?'))
  const err = await refusal(unnamed.run({ a: f32([2, 3], new Array(6).fill(1)), b: f32([4, 3], new Array(12).fill(1)) }))
  t.match(err, { code: 'INVALID_ARGUMENT', message: /^the model cannot run on these inputs: Non-zero status code returned while running Add node/ })
  t.ok(err.cause, 'ORT\'s error kept as the cause')
  const lookup = await session(t, lookupModel())
  t.match(await refusal(lookup.run({ idx: { type: 'int64', dims: [1], data: new BigInt64Array([7n]) } })), { code: 'INVALID_ARGUMENT', message: /cannot run on these inputs: .*Gather.*out of/ })
  const lower = await session(t, stringModel())
  t.match(await refusal(lower.run({ text: tensorFromStrings([1], ['a\u0000b']) })), { code: 'INVALID_ARGUMENT', message: 'input "text": string element 0 contains a NUL character, which onnxruntime cannot carry' })
})

t.test('release: in-flight runs finish, new runs are refused, twice is fine', async (t) => {
  const s = await loadSession(scaleModel(3))
  const x = f32([1, 4], [1, 2, 3, 4])
  const runs = Array.from({ length: 5 }, () => s.run({ x }))
  t.equal(s.inflight, 5, 'five runs in flight')
  const released = s.release()
  t.equal(s.release(), released, 'a second release is the same release')
  t.match(await refusal(s.run({ x })), { code: 'UNAVAILABLE', message: 'model version is being unloaded' }, 'a run after release() began is refused')
  const results = await Promise.all(runs)
  for (const r of results) t.same([...(r.y!.data as Float32Array)], [3, 6, 9, 12])
  await released
  t.equal(s.inflight, 0)
  t.match(await refusal(s.run({ x })), { code: 'UNAVAILABLE' }, 'and after it finished')
  await s.release()
})

t.test('loadSession refuses what validation refuses before it loads anything', async (t) => {
  t.match(await refusal(loadSession(garbageBytes())), { code: 'INVALID_ARGUMENT', message: /^not an ONNX model/ })
  t.match(await refusal(loadSession(unknownOpModel())), { code: 'INVALID_ARGUMENT', message: /^does not load in onnxruntime: .*Frobnicate/ })
  t.match(await refusal(loadSession(sequenceModel())), { code: 'INVALID_ARGUMENT', message: /input "items" \(a sequence\)/ })
  t.match(await refusal(loadSession(addModel(), { intraOpThreads: -1 })), { code: 'INVALID_ARGUMENT', message: /^intraOpThreads: expected an integer >= 0/ })
})

t.test('tensors from wire bytes: views when aligned, copies when not, and every size mismatch named', async (t) => {
  const buf = new Uint8Array(32)
  const aligned = tensorFromBytes('float32', [2, 3], buf.subarray(4, 28), 'input "x"')
  t.equal((aligned.data as Float32Array).buffer, buf.buffer, 'aligned: a view of the received bytes')
  const misaligned = tensorFromBytes('float32', [2, 3], buf.subarray(1, 25), 'input "x"')
  t.not((misaligned.data as Float32Array).buffer, buf.buffer, 'misaligned: a copy')
  t.equal(tensorToBytes(aligned).buffer, buf.buffer, 'tensorToBytes is a view')
  const fromGrpc = Buffer.alloc(32)
  fromGrpc.writeFloatLE(1.5, 1)
  const copied = tensorFromBytes('float32', [1], fromGrpc.subarray(1, 5), 'input "x"')
  t.same([...(copied.data as Float32Array)], [1.5], 'a misaligned Buffer (whose slice() is a view) is copied too')
  t.same(tensorFromBytes('int64', [], new Uint8Array(8)).dims, [], 'a scalar is 8 bytes of int64')

  t.match(thrown(() => tensorFromBytes('float32', [2, 3], new Uint8Array(20), 'input "x"')), {
    code: 'INVALID_ARGUMENT',
    message: 'input "x": dims [2,3] need 24 bytes of float32, got 20',
    details: { tensor: 'input "x"', expected: '24', got: '20' },
  })
  t.match(thrown(() => tensorFromBytes('float32', [65536, 65536], new Uint8Array(0), 'input "x"')), {
    message: `input "x": dims [65536,65536] hold more than ${MAX_TENSOR_ELEMENTS} elements (MAX_TENSOR_ELEMENTS)`,
  })
  t.match(thrown(() => tensorFromBytes('float32', [0, 2 ** 40], new Uint8Array(0), 'input "x"')), { message: /hold more than/ }, 'a huge dim is refused even beside a 0')
  t.match(thrown(() => tensorFromBytes('int8', [2, -1], new Uint8Array(0), 'input "x"')), { message: 'input "x": dim 1 is -1, expected an integer >= 0' })
  t.match(thrown(() => tensorFromBytes('int8', [1.5], new Uint8Array(0), 'input "x"')), { message: 'input "x": dim 0 is 1.5, expected an integer >= 0' })
  t.match(thrown(() => tensorFromBytes('bool', [3], new Uint8Array([0, 1, 2]), 'input "m"')), { message: 'input "m": bool element 2 is 2, expected 0 or 1' })
  t.match(thrown(() => tensorFromBytes('string', [1], new Uint8Array(0), 'input "s"')), { message: /carries its elements as strings/ })
  t.match(thrown(() => tensorFromStrings([2, 2], ['a', 'b', 'c'], 'input "s"')), { message: 'input "s": dims [2,2] need 4 strings, got 3' })
})

/** A real session that records the rows of every run it is asked for. */
function observed(s: ModelSession): { runner: Runner; runs: Array<Record<string, number[]>> } {
  const runs: Array<Record<string, number[]>> = []
  return {
    runs,
    runner: {
      run(inputs, outputNames) {
        runs.push(Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, v.dims])))
        return s.run(inputs, outputNames)
      },
    },
  }
}

const rowsOf = (rows: number, width: number, seed: number): Tensor => f32([rows, width], Array.from({ length: rows * width }, (_, i) => seed * 100 + i))

t.test('batching: concurrent requests share runs of at most maxBatch rows, each gets its own answer', async (t) => {
  const s = await session(t, scaleModel(3))
  const { runner, runs } = observed(s)
  const batcher = new Batcher(runner, { maxBatch: 8, maxDelayMs: 20 })
  t.teardown(() => batcher.close())
  const requests = Array.from({ length: 30 }, (_, i) => rowsOf(1 + (i % 3), 4, i))
  const answers = await Promise.all(requests.map((x) => batcher.run({ x })))
  for (const [i, x] of requests.entries()) {
    t.same([...(answers[i]!.y!.data as Float32Array)], [...(x.data as Float32Array)].map((v) => v * 3), `request ${i}`)
  }
  t.ok(runs.length < requests.length, `${requests.length} requests in ${runs.length} runs`)
  t.ok(runs.every((r) => r.x![0]! <= 8), 'no run over maxBatch rows')
  t.equal(runs.reduce((n, r) => n + r.x![0]!, 0), requests.reduce((n, x) => n + x.dims[0]!, 0), 'every row ran exactly once')
  t.equal(batcher.queued, 0)
})

t.test('batching: different trailing shapes go in different runs; big requests run alone; maxBatch flushes at once', async (t) => {
  const s = await session(t, scaleModel(2, 'W'))
  const { runner, runs } = observed(s)
  // A delay far longer than the test: only reaching maxBatch (or a full batch) dispatches.
  const batcher = new Batcher(runner, { maxBatch: 4, maxDelayMs: 600_000 })
  t.teardown(() => batcher.close())
  const a = [rowsOf(2, 2, 1), rowsOf(2, 3, 2), rowsOf(2, 2, 3), rowsOf(2, 3, 4)]
  const answers = await Promise.all(a.map((x) => batcher.run({ x })))
  for (const [i, x] of a.entries()) t.same([...(answers[i]!.y!.data as Float32Array)], [...(x.data as Float32Array)].map((v) => v * 2), `request ${i}`)
  t.same(runs.map((r) => r.x), [[4, 2], [4, 3]], 'one run per width, each flushed on reaching maxBatch')
  runs.length = 0
  const big = await batcher.run({ x: rowsOf(9, 2, 5) })
  t.same(big.y!.dims, [9, 2])
  t.same(runs.map((r) => r.x), [[9, 2]], 'a request over maxBatch runs alone')
})

t.test('batching: a failing batch fails every request in it; the next batch is fine', async (t) => {
  const s = await session(t, lookupModel())
  const batcher = new Batcher(s, { maxBatch: 16, maxDelayMs: 30 })
  t.teardown(() => batcher.close())
  const idx = (...v: bigint[]): Record<string, Tensor> => ({ idx: { type: 'int64', dims: [v.length], data: new BigInt64Array(v) } })
  const results = await Promise.allSettled([batcher.run(idx(0n, 1n)), batcher.run(idx(7n)), batcher.run(idx(2n))])
  const reasons = results.map((r) => (r.status === 'rejected' ? (r.reason as FabricError) : undefined))
  t.ok(reasons.every((e) => e?.code === 'INVALID_ARGUMENT'), 'all three failed')
  t.ok(reasons.every((e) => e === reasons[0]), 'with the same error')
  const good = await Promise.all([batcher.run(idx(3n)), batcher.run(idx(0n, 2n))])
  t.same(good.map((o) => [...(o.y!.data as Float32Array)]), [[40], [10, 30]])
})

t.test('batching: close answers the queued requests at once and refuses new ones', async (t) => {
  const s = await session(t, scaleModel(1))
  const batcher = new Batcher(s, { maxBatch: 100, maxDelayMs: 600_000 })
  const inputs = [rowsOf(1, 4, 1), rowsOf(2, 4, 2)]
  const queued = inputs.map((x) => batcher.run({ x }))
  t.equal(batcher.queued, 2)
  const closed = batcher.close()
  t.equal(batcher.close(), closed, 'close twice is one close')
  t.match(await refusal(batcher.run({ x: rowsOf(1, 4, 3) })), { code: 'UNAVAILABLE', message: 'model version is being unloaded' })
  const answers = await Promise.all(queued)
  for (const [i, x] of inputs.entries()) t.same([...(answers[i]!.y!.data as Float32Array)], [...(x.data as Float32Array)], `queued request ${i} answered, not dropped (a delay of 10 minutes was not waited for)`)
  await closed
  t.equal(batcher.queued, 0)
  t.throws(() => new Batcher(s, { maxBatch: 0, maxDelayMs: 1 }), { code: 'INVALID_ARGUMENT', message: /^maxBatch: expected an integer >= 1, got 0/ })
})

t.test('concatBatch and splitBatch: rows in order, strings included, mismatches refused', async (t) => {
  const strings = (dims: number[], data: string[]): Tensor => ({ type: 'string', dims, data })
  const { inputs, counts } = concatBatch([
    { x: f32([1, 2], [1, 2]), s: strings([1], ['a']) },
    { x: f32([2, 2], [3, 4, 5, 6]), s: strings([2], ['b', 'c']) },
  ])
  t.same(counts, [1, 2])
  t.same(inputs.x, f32([3, 2], [1, 2, 3, 4, 5, 6]))
  t.same(inputs.s, strings([3], ['a', 'b', 'c']))
  const parts = splitBatch({ y: f32([3, 2], [1, 2, 3, 4, 5, 6]), s: strings([3], ['a', 'b', 'c']) }, counts)
  t.same(parts.map((p) => [...(p.y!.data as Float32Array)]), [[1, 2], [3, 4, 5, 6]])
  t.same(parts.map((p) => p.s!.data), [['a'], ['b', 'c']])
  t.match(thrown(() => splitBatch({ y: f32([1, 2], [1, 2]) }, counts)), {
    code: 'FAILED_PRECONDITION',
    message: 'output "y" has dims [1,2] for a batch of 3 rows: the model does not keep the batch dimension, serve it without batching',
  })
  t.match(thrown(() => concatBatch([{ x: f32([1, 2], [1, 2]) }, { x: f32([1, 3], [1, 2, 3]) }])), { message: /input "x" of request 1 is float32 \[1,3\], request 0 has float32 \[1,2\]: only dim 0 may differ/ })
  t.match(thrown(() => concatBatch([{ x: f32([1], [1]) }, { y: f32([1], [1]) }])), { message: /request 1 has inputs y, request 0 has x/ })
})
