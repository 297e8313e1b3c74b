/**
 * Tensor files for the CLI: numpy's .npy (read and written) and JSON nested arrays. Pure codecs
 * plus a read and a write picked by extension. Only types come from node/models, so the CLI never
 * loads onnxruntime to read a file.
 *
 * .npy: format versions 1.0, 2.0 and 3.0. dtypes <f4 <f8 |i1 <i2 <i4 <i8 |u1 <u2 <u4 <u8 |b1 and
 * <U<n> (fixed-width unicode: a string tensor); the big-endian forms (>f4, ...) are converted;
 * fortran_order True is reordered to row-major; 0-d arrays are scalars. The header dict is parsed
 * by a strict little parser for exactly what numpy writes, never evaluated. Files are written the
 * way numpy 2 writes them (v1.0, the same header and padding), byte for byte.
 *
 * JSON: a tensor is nested arrays (a bare value for a scalar). JSON has no element types, so
 * reading needs one. Going out: int64 and uint64 are numbers when they are safe integers (within
 * 2^53) and decimal strings otherwise, element by element; float NaN and infinities are the
 * strings "NaN", "Infinity" and "-Infinity" (JSON has no such numbers); float32 is written with
 * the fewest digits that read back as the same float32 (0.1, not 0.10000000149011612). Reading
 * accepts those same forms.
 */
import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { FabricError, messageOf } from '../node/errors/index.ts'
import type { ElementType, NumericType, Tensor, TensorData } from '../node/models/index.ts'

/** The same bound as the daemon's MAX_TENSOR_ELEMENTS (a type-only import cannot carry it). */
const MAX_ELEMENTS = 2 ** 28
/** numpy refuses headers longer than this unless told otherwise (_MAX_HEADER_SIZE). */
const MAX_HEADER_BYTES = 10_000
const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59] // \x93NUMPY
/** numpy aligns the data to 64 bytes and leaves room for dim 0 to grow to 21 digits. */
const ARRAY_ALIGN = 64
const GROWTH_AXIS_MAX_DIGITS = 21

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json }

type TypedArrayCtor = new (buffer: ArrayBufferLike, byteOffset?: number, length?: number) => Exclude<TensorData, string[]>

interface NumericInfo {
  array: TypedArrayCtor & { BYTES_PER_ELEMENT: number; new (length: number): Exclude<TensorData, string[]> }
  /** The numpy kind letter and size: 'f4', 'i8', 'b1'. */
  code: string
}

const NUMERIC: { readonly [T in NumericType]: NumericInfo } = {
  float32: { array: Float32Array as never, code: 'f4' },
  float64: { array: Float64Array as never, code: 'f8' },
  int8: { array: Int8Array as never, code: 'i1' },
  int16: { array: Int16Array as never, code: 'i2' },
  int32: { array: Int32Array as never, code: 'i4' },
  int64: { array: BigInt64Array as never, code: 'i8' },
  uint8: { array: Uint8Array as never, code: 'u1' },
  uint16: { array: Uint16Array as never, code: 'u2' },
  uint32: { array: Uint32Array as never, code: 'u4' },
  uint64: { array: BigUint64Array as never, code: 'u8' },
  bool: { array: Uint8Array as never, code: 'b1' },
}
const TYPE_OF_CODE = new Map(Object.entries(NUMERIC).map(([type, info]) => [info.code, type as NumericType]))
const SUPPORTED_DTYPES = '<f4 <f8 |i1 <i2 <i4 <i8 |u1 <u2 <u4 <u8 |b1 <U<n> (and their big-endian forms)'

const invalid = (what: string, message: string): FabricError => FabricError.invalidArgument(`${what}: ${message}`, { details: { file: what } })

// ---------------------------------------------------------------------------------------------
// .npy

/** Decodes a .npy file. `what` names it in errors (the file's path). */
export function decodeNpy(bytes: Uint8Array, what = '.npy data'): Tensor {
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) throw invalid(what, 'not a .npy file (it does not start with \\x93NUMPY)')
  const major = bytes[6]!
  const minor = bytes[7]!
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  let headerStart: number
  let headerLength: number
  if (major === 1 && minor === 0) {
    headerStart = 10
    headerLength = view.getUint16(8, true)
  } else if ((major === 2 || major === 3) && minor === 0) {
    if (bytes.length < 12) throw invalid(what, 'truncated .npy header')
    headerStart = 12
    headerLength = view.getUint32(8, true)
  } else {
    throw invalid(what, `.npy format version ${major}.${minor} is not supported (1.0, 2.0 and 3.0 are)`)
  }
  if (headerLength > MAX_HEADER_BYTES) throw invalid(what, `its .npy header has ${headerLength} bytes, more than the ${MAX_HEADER_BYTES} numpy itself accepts`)
  const dataStart = headerStart + headerLength
  if (bytes.length < dataStart) throw invalid(what, `truncated: its header needs ${dataStart} bytes, the file has ${bytes.length}`)
  const headerBytes = bytes.subarray(headerStart, dataStart)
  // Versions 1 and 2 are latin1, version 3 is UTF-8 (for structured dtype field names).
  const header = new TextDecoder(major === 3 ? 'utf-8' : 'latin1', { fatal: true }).decode(headerBytes)
  const { descr, fortranOrder, shape } = parseHeader(header, what)
  const dtype = parseDescr(descr, what)
  const count = checkedCount(shape, what)
  const dataBytes = count * dtype.itemSize
  const available = bytes.length - dataStart
  if (available < dataBytes) throw invalid(what, `truncated: shape ${pyTuple(shape)} of ${descr} needs ${dataBytes} bytes of data, the file has ${available}`)
  if (available > dataBytes) throw invalid(what, `has ${available - dataBytes} bytes after the array data (shape ${pyTuple(shape)} of ${descr} is ${dataBytes} bytes)`)
  const raw = bytes.subarray(dataStart)
  let data: TensorData = dtype.type === 'string' ? decodeUnicode(raw, dtype.itemSize / 4, dtype.bigEndian, what) : numericData(dtype.type, raw, count, dtype.bigEndian)
  if (dtype.type === 'bool') {
    const bad = (data as Uint8Array).findIndex((b) => b > 1)
    if (bad >= 0) throw invalid(what, `bool element ${bad} is ${(data as Uint8Array)[bad]}, expected 0 or 1`)
  }
  if (fortranOrder && shape.length > 1) data = fortranToC(data, shape)
  return { type: dtype.type, dims: shape, data }
}

/** Encodes a tensor the way numpy 2's np.save writes the same array. */
export function encodeNpy(t: Tensor): Uint8Array {
  let descr: string
  let body: Uint8Array
  if (t.type === 'string') {
    const strings = t.data as string[]
    const codePoints = strings.map((s, i) => {
      const cps = Array.from(s, (c) => c.codePointAt(0)!)
      // numpy drops trailing NULs when it reads; refuse rather than lose them.
      if (cps.at(-1) === 0) throw FabricError.invalidArgument(`string element ${i} ends with a NUL character, which .npy cannot keep`)
      return cps
    })
    const width = Math.max(1, ...codePoints.map((c) => c.length))
    descr = `<U${width}`
    body = new Uint8Array(strings.length * width * 4)
    const out = new DataView(body.buffer)
    codePoints.forEach((cps, i) => cps.forEach((cp, j) => out.setUint32((i * width + j) * 4, cp, true)))
  } else {
    const info = NUMERIC[t.type]
    if (!info) throw FabricError.invalidArgument(`element type ${String(t.type)} cannot be written to .npy`)
    descr = `${info.array.BYTES_PER_ELEMENT === 1 ? '|' : '<'}${info.code}`
    const data = t.data as Exclude<TensorData, string[]>
    body = new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
  }
  const growth = t.dims.length > 0 ? Math.max(0, GROWTH_AXIS_MAX_DIGITS - String(t.dims[0]).length) : 0
  const dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${pyTuple(t.dims)}, }${' '.repeat(growth)}`
  const header = wrapHeader(dict)
  const out = new Uint8Array(header.length + body.length)
  out.set(header)
  out.set(body, header.length)
  return out
}

/** numpy's _wrap_header: version 1.0 unless the header is too long for its 2-byte length. */
function wrapHeader(dict: string): Uint8Array {
  for (const [major, lengthBytes] of [[1, 2], [2, 4]] as const) {
    const hlen = dict.length + 1
    const pad = ARRAY_ALIGN - ((MAGIC.length + 2 + lengthBytes + hlen) % ARRAY_ALIGN)
    const total = hlen + pad
    if (lengthBytes === 2 && total > 0xffff) continue
    const out = new Uint8Array(MAGIC.length + 2 + lengthBytes + total)
    out.set(MAGIC)
    out[6] = major
    out[7] = 0
    const view = new DataView(out.buffer)
    if (lengthBytes === 2) view.setUint16(8, total, true)
    else view.setUint32(8, total, true)
    const text = `${dict}${' '.repeat(pad)}\n`
    for (let i = 0; i < text.length; i++) out[MAGIC.length + 2 + lengthBytes + i] = text.charCodeAt(i)
    return out
  }
  throw new Error('unreachable: a .npy header over 4 GiB')
}

function pyTuple(dims: readonly number[]): string {
  return dims.length === 1 ? `(${dims[0]},)` : `(${dims.join(', ')})`
}

interface Dtype {
  type: ElementType
  itemSize: number
  bigEndian: boolean
}

function parseDescr(descr: string, what: string): Dtype {
  const m = /^([<>|=])([a-zA-Z])(\d+)$/.exec(descr)
  const unsupported = (why = ''): FabricError => invalid(what, `dtype ${descr} is not supported${why} (supported: ${SUPPORTED_DTYPES})`)
  if (!m) {
    if (descr === '|O' || descr === 'O') throw invalid(what, 'object arrays (|O) are not supported: they are pickled Python objects')
    throw unsupported()
  }
  const [, order, kind, sizeText] = m as unknown as [string, string, string, string]
  const size = Number(sizeText)
  const bigEndian = order === '>'
  if (kind === 'U') {
    if (size < 1 || order === '|') throw unsupported()
    return { type: 'string', itemSize: size * 4, bigEndian }
  }
  if (kind === 'S' || kind === 'a') throw unsupported(': byte strings; save text as unicode (np.str_, <U)')
  if (kind === 'f' && size === 2) throw unsupported(': float16; convert with a.astype(np.float32)')
  const type = TYPE_OF_CODE.get(`${kind}${size}`)
  if (type === undefined) throw unsupported()
  // '|' (byte order not applicable) is only right for one-byte types; '=' is this machine's order,
  // which numpy never writes to a file.
  if (order === '=' || (order === '|' && size !== 1)) throw unsupported()
  return { type, itemSize: size, bigEndian: bigEndian && size > 1 }
}

function numericData(type: NumericType, raw: Uint8Array, count: number, bigEndian: boolean): TensorData {
  const { array } = NUMERIC[type]
  const size = array.BYTES_PER_ELEMENT
  if (!bigEndian && raw.byteOffset % size === 0) return new array(raw.buffer, raw.byteOffset, count)
  // A copy: new Uint8Array(view) copies, a Buffer's slice() would not.
  const copy = new Uint8Array(raw.subarray(0, count * size))
  if (bigEndian) for (let i = 0; i < copy.length; i += size) copy.subarray(i, i + size).reverse()
  return new array(copy.buffer, 0, count)
}

function decodeUnicode(raw: Uint8Array, width: number, bigEndian: boolean, what: string): string[] {
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength)
  const count = raw.byteLength / (width * 4)
  const out: string[] = new Array(count)
  for (let i = 0; i < count; i++) {
    let end = width
    while (end > 0 && view.getUint32((i * width + end - 1) * 4, !bigEndian) === 0) end--
    const cps: number[] = new Array(end)
    for (let j = 0; j < end; j++) {
      const cp = view.getUint32((i * width + j) * 4, !bigEndian)
      if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) throw invalid(what, `string element ${i} has an invalid code point U+${cp.toString(16).toUpperCase()}`)
      cps[j] = cp
    }
    out[i] = String.fromCodePoint(...cps)
  }
  return out
}

/** Reorders column-major data to row-major. */
function fortranToC(data: TensorData, dims: readonly number[]): TensorData {
  const count = data.length
  const out = Array.isArray(data) ? new Array<string>(count) : new (data.constructor as new (n: number) => Exclude<TensorData, string[]>)(count)
  const rank = dims.length
  const fStride: number[] = []
  for (let k = 0, s = 1; k < rank; s *= dims[k]!, k++) fStride.push(s)
  const index = new Array<number>(rank).fill(0)
  let f = 0
  for (let c = 0; c < count; c++) {
    ;(out as unknown as unknown[])[c] = (data as unknown as unknown[])[f]
    // Advance the row-major index (last dim fastest) and keep the column-major offset in step.
    for (let k = rank - 1; k >= 0; k--) {
      if (++index[k]! < dims[k]!) {
        f += fStride[k]!
        break
      }
      f -= (dims[k]! - 1) * fStride[k]!
      index[k] = 0
    }
  }
  return out as TensorData
}

function checkedCount(shape: readonly number[], what: string): number {
  let count = 1
  for (const d of shape) {
    if (d > MAX_ELEMENTS || (count *= d) > MAX_ELEMENTS) throw invalid(what, `shape ${pyTuple(shape)} holds more than ${MAX_ELEMENTS} elements`)
  }
  return count
}

/**
 * Parses the header dict numpy writes: {'descr': <str>, 'fortran_order': <bool>, 'shape': <tuple
 * of ints>, } with exactly those three keys, then spaces and a newline. Python literal syntax,
 * read strictly: anything else is an error naming what was found.
 */
function parseHeader(text: string, what: string): { descr: string; fortranOrder: boolean; shape: number[] } {
  let i = 0
  const fail = (expected: string): never => {
    throw invalid(what, `malformed .npy header: expected ${expected} at character ${i} of ${JSON.stringify(text.trimEnd())}`)
  }
  const space = (): void => {
    while (i < text.length && (text[i] === ' ' || text[i] === '\t')) i++
  }
  const eat = (c: string): boolean => {
    space()
    if (text[i] !== c) return false
    i++
    return true
  }
  const string = (): string => {
    space()
    const quote = text[i]
    if (quote !== "'" && quote !== '"') fail('a quoted string')
    const end = text.indexOf(quote!, i + 1)
    if (end < 0) fail('the end of a string')
    const s = text.slice(i + 1, end)
    if (s.includes('\\')) fail('a string without escapes')
    i = end + 1
    return s
  }
  const integer = (): number => {
    space()
    const m = /^\d+/.exec(text.slice(i))
    if (!m) fail('a non-negative integer')
    i += m![0].length
    const n = Number(m![0])
    if (!Number.isSafeInteger(n)) fail('a dim below 2^53')
    return n
  }
  const values: Record<string, unknown> = {}
  if (!eat('{')) fail("'{'")
  for (;;) {
    if (eat('}')) break
    const key = string()
    if (!eat(':')) fail("':'")
    if (Object.hasOwn(values, key)) fail(`each key once, '${key}' is repeated`)
    space()
    if (key === 'descr') {
      if (text[i] === '[') throw invalid(what, 'structured dtypes (a list of fields) are not supported')
      values.descr = string()
    } else if (key === 'fortran_order') {
      if (text.startsWith('True', i)) values.fortran_order = true
      else if (text.startsWith('False', i)) values.fortran_order = false
      else fail('True or False')
      i += values.fortran_order ? 4 : 5
    } else if (key === 'shape') {
      if (!eat('(')) fail("'(' (shape is a tuple)")
      const dims: number[] = []
      if (!eat(')')) {
        for (;;) {
          dims.push(integer())
          if (eat(',')) {
            if (eat(')')) break
            continue
          }
          // A 1-tuple needs its comma: (3) is the int 3 in Python, not a shape.
          if (dims.length === 1) fail("',' after the only dim")
          if (!eat(')')) fail("',' or ')'")
          break
        }
      }
      values.shape = dims
    } else {
      throw invalid(what, `malformed .npy header: unknown key '${key}' (expected descr, fortran_order, shape)`)
    }
    if (!eat(',')) {
      if (eat('}')) break
      fail("',' or '}'")
    }
  }
  if (!/^[ \t]*\n?[ \t]*$/.test(text.slice(i))) fail('only spaces and a newline after the dict')
  for (const key of ['descr', 'fortran_order', 'shape']) if (!Object.hasOwn(values, key)) throw invalid(what, `malformed .npy header: no '${key}'`)
  return { descr: values.descr as string, fortranOrder: values.fortran_order as boolean, shape: values.shape as number[] }
}

// ---------------------------------------------------------------------------------------------
// JSON

const INT_RANGE: Partial<Record<ElementType, [number, number]>> = {
  int8: [-128, 127],
  int16: [-32768, 32767],
  int32: [-(2 ** 31), 2 ** 31 - 1],
  uint8: [0, 255],
  uint16: [0, 65535],
  uint32: [0, 2 ** 32 - 1],
}
const BIG_RANGE: Partial<Record<ElementType, [bigint, bigint]>> = {
  int64: [-(2n ** 63n), 2n ** 63n - 1n],
  uint64: [0n, 2n ** 64n - 1n],
}
const FLOAT32_MAX = 3.4028234663852886e38
const NON_FINITE: Record<string, number> = { NaN: Number.NaN, Infinity: Infinity, '-Infinity': -Infinity }

const describe = (v: unknown): string =>
  Array.isArray(v) ? `an array of ${v.length}` : v === null ? 'null' : typeof v === 'string' ? JSON.stringify(v) : typeof v === 'object' ? 'an object' : String(v)

/**
 * A tensor from JSON nested arrays of the given element type. The shape is the nesting; errors
 * name the JSON path ("x.json at [1][2]: expected a number, got \"a\"").
 */
export function tensorFromJson(value: unknown, type: ElementType, what = 'JSON'): Tensor {
  const at = (p: string): string => (p ? `${what} at ${p}` : what)
  const dims: number[] = []
  for (let v = value; Array.isArray(v); v = v[0]) {
    dims.push(v.length)
    if (v.length === 0) break
  }
  const count = checkedCount(dims, what)
  const leaves: unknown[] = []
  const walk = (v: unknown, depth: number, p: string): void => {
    if (depth === dims.length) {
      if (Array.isArray(v)) throw invalid(at(p), `expected ${type === 'string' ? 'a string' : type === 'bool' ? 'true or false' : 'a number'}, got an array (the arrays are ragged)`)
      leaves.push(v)
      return
    }
    if (!Array.isArray(v) || v.length !== dims[depth]) throw invalid(at(p), `expected an array of ${dims[depth]}, got ${describe(v)} (the arrays are ragged)`)
    v.forEach((item, i) => walk(item, depth + 1, `${p}[${i}]`))
  }
  walk(value, 0, '')
  const pathOf = (flat: number): string => {
    let p = ''
    let rest = flat
    for (let k = 0, size = count; k < dims.length; k++) {
      size /= dims[k]!
      p += `[${Math.floor(rest / size)}]`
      rest %= size
    }
    return p
  }
  const bad = (i: number, message: string): FabricError => invalid(at(pathOf(i)), message)
  return { type, dims, data: convertLeaves(type, leaves, bad) }
}

function convertLeaves(type: ElementType, leaves: unknown[], bad: (i: number, message: string) => FabricError): TensorData {
  if (type === 'string') {
    return leaves.map((v, i) => {
      if (typeof v !== 'string') throw bad(i, `expected a string, got ${describe(v)}`)
      return v
    })
  }
  if (type === 'bool') {
    return Uint8Array.from(leaves, (v, i) => {
      if (typeof v !== 'boolean') throw bad(i, `expected true or false, got ${describe(v)}`)
      return v ? 1 : 0
    })
  }
  if (type === 'float32' || type === 'float64') {
    const out = new (type === 'float32' ? Float32Array : Float64Array)(leaves.length)
    leaves.forEach((v, i) => {
      const n = typeof v === 'string' && Object.hasOwn(NON_FINITE, v) ? NON_FINITE[v]! : v
      if (typeof n !== 'number') throw bad(i, `expected a number, got ${describe(v)}`)
      if (type === 'float32' && Number.isFinite(n) && Math.abs(n) > FLOAT32_MAX) throw bad(i, `${n} is out of range for float32`)
      out[i] = n
    })
    return out
  }
  const big = BIG_RANGE[type]
  if (big) {
    const out = type === 'int64' ? new BigInt64Array(leaves.length) : new BigUint64Array(leaves.length)
    leaves.forEach((v, i) => {
      let n: bigint
      if (typeof v === 'number') {
        if (!Number.isFinite(v)) throw bad(i, `${v} is not a finite number (${type})`)
        if (!Number.isInteger(v)) throw bad(i, `${v} is not an integer (${type})`)
        if (!Number.isSafeInteger(v)) throw bad(i, `${v} is beyond 2^53, where JSON numbers lose digits: write ${type} values that large as strings of digits`)
        n = BigInt(v)
      } else if (typeof v === 'string' && /^-?\d+$/.test(v)) {
        n = BigInt(v)
      } else {
        throw bad(i, `expected an integer (a number, or a string of digits), got ${describe(v)}`)
      }
      if (n < big[0] || n > big[1]) throw bad(i, `${n} is out of range for ${type} (${big[0]}..${big[1]})`)
      out[i] = n
    })
    return out
  }
  const [min, max] = INT_RANGE[type]!
  const out = new (NUMERIC[type as NumericType].array as unknown as new (n: number) => Int32Array)(leaves.length)
  leaves.forEach((v, i) => {
    if (typeof v !== 'number') throw bad(i, `expected an integer, got ${describe(v)}`)
    if (!Number.isFinite(v)) throw bad(i, `${v} is not a finite number (${type})`)
    if (!Number.isInteger(v)) throw bad(i, `${v} is not an integer (${type})`)
    if (v < min || v > max) throw bad(i, `${v} is out of range for ${type} (${min}..${max})`)
    out[i] = v
  })
  return out
}

/** A tensor as JSON nested arrays (see the top of this file for how values are written). */
export function tensorToJson(t: Tensor): Json {
  const element = jsonElement(t.type)
  const data = t.data as ArrayLike<unknown>
  const build = (depth: number, offset: number, size: number): Json => {
    if (depth === t.dims.length) return element(data[offset])
    const n = t.dims[depth]!
    const inner = n === 0 ? 0 : size / n
    return Array.from({ length: n }, (_, i) => build(depth + 1, offset + i * inner, inner))
  }
  return build(0, 0, data.length)
}

function jsonElement(type: ElementType): (v: unknown) => Json {
  const float = (n: number): Json => (Number.isFinite(n) ? n : String(n))
  switch (type) {
    case 'float32':
      return (v) => (Number.isFinite(v as number) ? shortestFloat32(v as number) : String(v))
    case 'float64':
      return (v) => float(v as number)
    case 'int64':
    case 'uint64':
      return (v) => {
        const b = v as bigint
        return b >= -BigInt(Number.MAX_SAFE_INTEGER) && b <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : b.toString()
      }
    case 'bool':
      return (v) => v === 1
    default:
      return (v) => v as Json
  }
}

/** The number with the fewest significant digits that is still the same float32. */
function shortestFloat32(x: number): number {
  for (let p = 1; p < 9; p++) {
    const n = Number(x.toPrecision(p))
    if (Math.fround(n) === x) return n
  }
  return Number(x.toPrecision(9))
}

// ---------------------------------------------------------------------------------------------
// Files

/**
 * Reads a tensor file: .npy (its own element type; `type`, if given, must match) or .json (`type`
 * required). Errors name the file.
 */
export async function readTensorFile(file: string, type?: ElementType): Promise<Tensor> {
  const ext = path.extname(file).toLowerCase()
  if (ext !== '.npy' && ext !== '.json') throw invalid(file, `unknown tensor file type "${ext || '(none)'}" (expected .npy or .json)`)
  let bytes: Uint8Array
  try {
    bytes = await readFile(file)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    const message = `cannot read ${file}: ${messageOf(err)}`
    throw code === 'ENOENT' ? FabricError.notFound(message, { cause: err, details: { file } }) : FabricError.invalidArgument(message, { cause: err, details: { file } })
  }
  if (ext === '.npy') {
    const t = decodeNpy(bytes, file)
    if (type !== undefined && t.type !== type) {
      const hint = type === 'string' ? '' : ` (convert it with a.astype(np.${type === 'bool' ? 'bool_' : type}))`
      throw invalid(file, `holds ${t.type}, expected ${type}${hint}`)
    }
    return t
  }
  if (type === undefined) throw invalid(file, 'JSON carries no element type: give one (float32, int64, ...)')
  let value: unknown
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes))
  } catch (err) {
    throw invalid(file, `not valid JSON: ${messageOf(err)}`)
  }
  return tensorFromJson(value, type, file)
}

/** Writes a tensor to a .npy or .json file, by its extension. */
export async function writeTensorFile(file: string, t: Tensor): Promise<void> {
  const ext = path.extname(file).toLowerCase()
  if (ext === '.npy') return writeFile(file, encodeNpy(t))
  if (ext === '.json') return writeFile(file, `${JSON.stringify(tensorToJson(t))}\n`)
  throw invalid(file, `unknown tensor file type "${ext || '(none)'}" (expected .npy or .json)`)
}
