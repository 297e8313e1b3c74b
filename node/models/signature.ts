/**
 * A model's signature (its inputs and outputs with element types and shapes), how it is derived
 * from what onnxruntime reports, and the check of a request's inputs against it. Pure.
 *
 * Shapes: a number is a fixed dim; a string is a dynamic one, either named (a symbolic dim such as
 * 'N', which binds: every input using 'N' must agree) or UNNAMED_DIM ('?', ORT reports '' and ONNX
 * files may say -1 or nothing: anything goes, no binding). '?' was chosen over '' because it reads
 * well in `fabric model show` and in JSON. A negative number is accepted as '?' too, for records
 * written by hand or by other tools. `unknownRank` marks a tensor whose model declares no shape at
 * all (ORT reports those as [], the same as a scalar); its shape is [] and any rank is accepted.
 */
import { FabricError } from '../errors/index.ts'
import { checkTensor, ELEMENT_TYPES, formatShape, isElementType, type ElementType, type Tensor } from './tensor.ts'
import type { OnnxInfo, OnnxValue } from './onnx.ts'

export const UNNAMED_DIM = '?'

export type Dim = number | string

export interface TensorSpec {
  name: string
  /** An ElementType, or for a type fabric does not serve (kept for display) the name ORT gives it. */
  type: ElementType | string
  shape: Dim[]
  /** The model declares no shape: any rank is accepted (shape is then []). */
  unknownRank?: boolean
}

export interface Signature {
  inputs: TensorSpec[]
  outputs: TensorSpec[]
}

/** What onnxruntime's InferenceSession.inputMetadata / outputMetadata entries look like. */
export interface OrtValueMetadata {
  name: string
  isTensor: boolean
  type?: string
  shape?: ReadonlyArray<number | string>
}

export function isDynamicDim(d: Dim): boolean {
  return typeof d === 'string' || d < 0
}

/** A dim that binds across inputs: a named symbolic one. */
function symbolOf(d: Dim): string | undefined {
  return typeof d === 'string' && d !== UNNAMED_DIM && d !== '' ? d : undefined
}

/** "float32 [N,3]", "string [?]", "int64 (any shape)". */
export function formatSpec(spec: TensorSpec): string {
  return `${spec.type} ${spec.unknownRank ? '(any shape)' : formatShape(spec.shape)}`
}

/**
 * The signature of a loaded session. `info` (the model's own declarations, from inspectOnnx) tells
 * an input of unknown rank from a scalar. Refuses, naming all of them at once, inputs and outputs
 * fabric cannot serve: non-tensors (sequences, maps, optionals) and element types outside
 * ELEMENT_TYPES (float16, bfloat16, ...).
 */
export function signatureFromOrt(
  inputs: readonly OrtValueMetadata[],
  outputs: readonly OrtValueMetadata[],
  info?: Pick<OnnxInfo, 'inputs' | 'outputs'>,
): Signature {
  const problems: string[] = []
  const convert = (role: Role, list: readonly OrtValueMetadata[], declared: readonly OnnxValue[] | undefined): TensorSpec[] =>
    list.map((m) => {
      const decl = declared?.find((d) => d.name === m.name)
      if (!m.isTensor) {
        problems.push(`${role} "${m.name}" (${decl && decl.kind !== 'tensor' && decl.kind !== 'unknown' ? kindName(decl.kind) : 'not a tensor'})`)
        return { name: m.name, type: decl?.kind ?? 'unknown', shape: [] }
      }
      const type = m.type ?? 'unknown'
      if (!isElementType(type)) problems.push(`${role} "${m.name}" (${type})`)
      const unknownRank = decl?.kind === 'tensor' && decl.rank === undefined
      const shape = unknownRank ? [] : (m.shape ?? []).map((d) => (d === '' ? UNNAMED_DIM : d))
      return unknownRank ? { name: m.name, type, shape, unknownRank } : { name: m.name, type, shape }
    })
  const signature = { inputs: convert('input', inputs, info?.inputs), outputs: convert('output', outputs, info?.outputs) }
  refuse(problems)
  return signature
}

/**
 * The same refusal from the model's declarations alone, before any ORT load: cheaper, and clearer
 * for the types ORT's JavaScript binding cannot even describe (bfloat16 fails with "Unsupported
 * data type: 16"). Values declared without a type are left to ORT.
 */
export function refuseUnservable(info: Pick<OnnxInfo, 'inputs' | 'outputs'>): void {
  const problems: string[] = []
  const check = (role: Role, values: readonly OnnxValue[]): void => {
    for (const v of values) {
      if (v.kind === 'tensor' && v.elementType !== undefined && !isElementType(v.elementType)) problems.push(`${role} "${v.name}" (${v.elementType})`)
      else if (v.kind !== 'tensor' && v.kind !== 'unknown') problems.push(`${role} "${v.name}" (${kindName(v.kind)})`)
    }
  }
  check('input', info.inputs)
  check('output', info.outputs)
  refuse(problems)
}

type Role = 'input' | 'output'

const kindName = (kind: OnnxValue['kind']): string => (kind === 'sparse_tensor' ? 'a sparse tensor' : kind === 'optional' ? 'an optional' : `a ${kind}`)

function refuse(problems: string[]): void {
  if (problems.length === 0) return
  throw FabricError.invalidArgument(
    `the model has inputs or outputs fabric cannot serve: ${problems.join(', ')}; fabric serves tensors of ${ELEMENT_TYPES.join(', ')}`,
    { details: { unsupported: problems.join(', ') } },
  )
}

function mismatch(input: string, message: string, expected: string, got: string): FabricError {
  return FabricError.invalidArgument(`input "${input}": ${message}`, { details: { input, expected, got } })
}

/**
 * Checks a request's inputs against the signature: every input present and no unknown one, equal
 * element types and ranks, fixed dims equal, and each named symbolic dim bound to one value across
 * all inputs. Also checks each tensor is consistent in itself (checkTensor). Throws
 * INVALID_ARGUMENT naming the input, with details { input, expected, got }.
 */
export function checkInputs(signature: Signature, inputs: Readonly<Record<string, Tensor>>): void {
  const known = new Set(signature.inputs.map((s) => s.name))
  for (const name of Object.keys(inputs)) {
    if (!known.has(name)) {
      const names = signature.inputs.map((s) => `"${s.name}"`).join(', ')
      throw FabricError.invalidArgument(`unknown input "${name}" (the model's inputs are ${names || 'none'})`, {
        details: { input: name, expected: signature.inputs.map((s) => s.name).join(', '), got: name },
      })
    }
  }
  const bound = new Map<string, { value: number; input: string }>()
  for (const spec of signature.inputs) {
    const t = Object.hasOwn(inputs, spec.name) ? inputs[spec.name] : undefined
    if (t === undefined) {
      throw FabricError.invalidArgument(`missing input "${spec.name}" (${formatSpec(spec)})`, {
        details: { input: spec.name, expected: formatSpec(spec), got: 'nothing' },
      })
    }
    if (t.type !== spec.type) throw mismatch(spec.name, `expected ${spec.type}, got ${String(t.type)}`, spec.type, String(t.type))
    checkTensor(t, `input "${spec.name}"`)
    if (spec.unknownRank) continue
    const want = formatShape(spec.shape)
    const got = formatShape(t.dims)
    if (t.dims.length !== spec.shape.length) {
      throw mismatch(spec.name, `expected rank ${spec.shape.length} ${want}, got rank ${t.dims.length} ${got}`, want, got)
    }
    for (const [i, d] of spec.shape.entries()) {
      const value = t.dims[i]!
      if (!isDynamicDim(d)) {
        if (value !== d) throw mismatch(spec.name, `dim ${i} must be ${d} (expected ${want}), got ${got}`, want, got)
        continue
      }
      const symbol = symbolOf(d)
      if (symbol === undefined) continue
      const first = bound.get(symbol)
      if (first === undefined) bound.set(symbol, { value, input: spec.name })
      else if (first.value !== value) {
        const where = first.input === spec.name ? 'an earlier dim of this input' : `input "${first.input}"`
        throw mismatch(spec.name, `dim ${i} is ${symbol}, which ${where} set to ${first.value}, got ${value} (shape ${got})`, `${symbol}=${first.value}`, `${symbol}=${value}`)
      }
    }
  }
}

/**
 * Whether requests can be batched along dim 0: every input and output has a dynamic first dim.
 * (An output whose first dim is not the batch, say a model that sums over its inputs' rows, would
 * still pass this; splitBatch catches that when the rows do not add up.)
 */
export function batchable(signature: Signature): boolean {
  const all = [...signature.inputs, ...signature.outputs]
  return all.length > 0 && all.every((s) => !s.unknownRank && s.shape.length > 0 && isDynamicDim(s.shape[0]!))
}
