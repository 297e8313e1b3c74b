/**
 * Tensors as fabric carries them: an element type, dims and a typed array (or string[]), plus the
 * wire form of their data. Pure: no onnxruntime here, so the CLI and the API can use it too.
 *
 * The wire form of a numeric or bool tensor is its elements as contiguous little-endian bytes in
 * row-major order, the layout of both a typed array and ORT's own buffers, so decoding is a view
 * over the received bytes (a copy only when they are not aligned for the element size). Strings
 * travel separately as a string[]; bool is a Uint8Array of 0 and 1.
 */
import { FabricError } from '../errors/index.ts'

export const ELEMENT_TYPES = [
  'float32',
  'float64',
  'int8',
  'int16',
  'int32',
  'int64',
  'uint8',
  'uint16',
  'uint32',
  'uint64',
  'bool',
  'string',
] as const

export type ElementType = (typeof ELEMENT_TYPES)[number]
export type NumericType = Exclude<ElementType, 'string'>

export type TensorData =
  | Float32Array
  | Float64Array
  | Int8Array
  | Int16Array
  | Int32Array
  | BigInt64Array
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | BigUint64Array
  | string[]

export interface Tensor {
  type: ElementType
  /** Row-major dims; [] is a scalar (one element). */
  dims: number[]
  /** data.length is the product of dims. bool is a Uint8Array of 0 and 1. */
  data: TensorData
}

/**
 * The most elements one tensor may have (2^28: 1 GiB of float32, 2 GiB of int64). Far beyond what a
 * request carries; it keeps products of dims exact integers and allocations below Node's limits.
 */
export const MAX_TENSOR_ELEMENTS = 2 ** 28
/** The most dims one tensor may have (numpy allows 64, ONNX models rarely go past 8). */
export const MAX_TENSOR_RANK = 32

type TypedArrayConstructor =
  | Float32ArrayConstructor
  | Float64ArrayConstructor
  | Int8ArrayConstructor
  | Int16ArrayConstructor
  | Int32ArrayConstructor
  | BigInt64ArrayConstructor
  | Uint8ArrayConstructor
  | Uint16ArrayConstructor
  | Uint32ArrayConstructor
  | BigUint64ArrayConstructor

export const ARRAY_OF: { readonly [T in NumericType]: TypedArrayConstructor } = {
  float32: Float32Array,
  float64: Float64Array,
  int8: Int8Array,
  int16: Int16Array,
  int32: Int32Array,
  int64: BigInt64Array,
  uint8: Uint8Array,
  uint16: Uint16Array,
  uint32: Uint32Array,
  uint64: BigUint64Array,
  bool: Uint8Array,
}

// Every platform onnxruntime-node ships for is little-endian; a typed array view over wire bytes is
// only correct there, so refuse loudly rather than serve byte-swapped numbers.
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

export function isElementType(type: string): type is ElementType {
  return (ELEMENT_TYPES as readonly string[]).includes(type)
}

export function bytesPerElement(type: NumericType): number {
  return ARRAY_OF[type].BYTES_PER_ELEMENT
}

/** "[2,3]", "[N,3]", "[]": how shapes appear in every message. */
export function formatShape(shape: ReadonlyArray<number | string>): string {
  return `[${shape.join(',')}]`
}

/**
 * The number of elements dims hold, checking each dim is an integer >= 0 and that the product stays
 * within MAX_TENSOR_ELEMENTS. `what` names the tensor in errors ('input "x"').
 */
export function elementCount(dims: readonly number[], what = 'tensor'): number {
  if (!Array.isArray(dims)) throw FabricError.invalidArgument(`${what}: dims must be an array of integers`)
  if (dims.length > MAX_TENSOR_RANK) {
    throw FabricError.invalidArgument(`${what}: ${dims.length} dims, more than the ${MAX_TENSOR_RANK} fabric accepts (MAX_TENSOR_RANK)`, {
      details: { tensor: what, limit: String(MAX_TENSOR_RANK) },
    })
  }
  let count = 1
  for (const [i, d] of dims.entries()) {
    if (!Number.isSafeInteger(d) || d < 0) {
      throw FabricError.invalidArgument(`${what}: dim ${i} is ${String(d)}, expected an integer >= 0`, { details: { tensor: what } })
    }
    // Checked per dim as well, so [0, 2^60] is refused even though it holds nothing.
    if (d > MAX_TENSOR_ELEMENTS || (count *= d) > MAX_TENSOR_ELEMENTS) {
      throw FabricError.invalidArgument(
        `${what}: dims ${formatShape(dims)} hold more than ${MAX_TENSOR_ELEMENTS} elements (MAX_TENSOR_ELEMENTS)`,
        { details: { tensor: what, limit: String(MAX_TENSOR_ELEMENTS) } },
      )
    }
  }
  return count
}

/**
 * A numeric or bool tensor over wire bytes (see the top of this file). The result is a view of
 * `raw` when it is aligned for the element size, else a copy: callers must not reuse `raw`.
 */
export function tensorFromBytes(type: ElementType, dims: number[], raw: Uint8Array, what = 'tensor'): Tensor {
  if (type === 'string') throw FabricError.invalidArgument(`${what}: a string tensor carries its elements as strings, not bytes`)
  if (!isElementType(type)) throw FabricError.invalidArgument(`${what}: unknown element type ${String(type)} (known: ${ELEMENT_TYPES.join(', ')})`)
  if (!LITTLE_ENDIAN) throw FabricError.internal('fabric tensors need a little-endian machine')
  const count = elementCount(dims, what)
  const size = bytesPerElement(type)
  if (raw.byteLength !== count * size) {
    throw FabricError.invalidArgument(`${what}: dims ${formatShape(dims)} need ${count * size} bytes of ${type}, got ${raw.byteLength}`, {
      details: { tensor: what, expected: String(count * size), got: String(raw.byteLength) },
    })
  }
  // new Uint8Array(raw) copies; raw.slice() would not when raw is a Buffer (Buffer's slice is a view).
  const aligned = raw.byteOffset % size === 0 ? raw : new Uint8Array(raw)
  const View = ARRAY_OF[type] as unknown as new (buffer: ArrayBufferLike, byteOffset: number, length: number) => Exclude<TensorData, string[]>
  const data = new View(aligned.buffer, aligned.byteOffset, count)
  if (type === 'bool') checkBools(data as Uint8Array, what)
  return { type, dims: [...dims], data }
}

/** The wire bytes of a numeric or bool tensor: a view of its data, never a copy. */
export function tensorToBytes(t: Tensor): Uint8Array {
  if (t.type === 'string' || Array.isArray(t.data)) throw FabricError.internal('tensorToBytes: a string tensor has no byte form')
  if (!LITTLE_ENDIAN) throw FabricError.internal('fabric tensors need a little-endian machine')
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)
}

export function tensorFromStrings(dims: number[], strings: readonly string[], what = 'tensor'): Tensor {
  const count = elementCount(dims, what)
  if (strings.length !== count) {
    throw FabricError.invalidArgument(`${what}: dims ${formatShape(dims)} need ${count} strings, got ${strings.length}`, {
      details: { tensor: what, expected: String(count), got: String(strings.length) },
    })
  }
  for (const [i, s] of strings.entries()) {
    if (typeof s !== 'string') throw FabricError.invalidArgument(`${what}: element ${i} is not a string`, { details: { tensor: what } })
  }
  return { type: 'string', dims: [...dims], data: [...strings] }
}

/**
 * Checks that a tensor built in-process is what its type and dims say (the right array kind, the
 * right length, bools 0 or 1), so a bad one is refused with its name instead of confusing ORT.
 */
export function checkTensor(t: Tensor, what = 'tensor'): void {
  if (!t || typeof t !== 'object') throw FabricError.invalidArgument(`${what}: not a tensor`)
  if (!isElementType(t.type)) throw FabricError.invalidArgument(`${what}: unknown element type ${String(t.type)} (known: ${ELEMENT_TYPES.join(', ')})`)
  const count = elementCount(t.dims, what)
  if (t.type === 'string') {
    if (!Array.isArray(t.data) || t.data.some((s) => typeof s !== 'string')) throw FabricError.invalidArgument(`${what}: a string tensor's data must be strings`)
  } else if (!(t.data instanceof ARRAY_OF[t.type])) {
    throw FabricError.invalidArgument(`${what}: ${t.type} data must be a ${ARRAY_OF[t.type].name}`)
  }
  if (t.data.length !== count) {
    throw FabricError.invalidArgument(`${what}: dims ${formatShape(t.dims)} hold ${count} elements, its data has ${t.data.length}`, {
      details: { tensor: what, expected: String(count), got: String(t.data.length) },
    })
  }
  if (t.type === 'bool') checkBools(t.data as Uint8Array, what)
}

function checkBools(data: Uint8Array, what: string): void {
  // ORT reads bools as bytes; anything but 0/1 gives kernel-dependent answers.
  const i = data.findIndex((b) => b > 1)
  if (i >= 0) throw FabricError.invalidArgument(`${what}: bool element ${i} is ${data[i]}, expected 0 or 1`, { details: { tensor: what } })
}
