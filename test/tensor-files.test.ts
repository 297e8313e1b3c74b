/** The CLI's tensor files: .npy written by numpy 2.4 (test/fixtures/npy), JSON nested arrays. */
import t from 'tap'
import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { decodeNpy, encodeNpy, readTensorFile, tensorFromJson, tensorToJson, writeTensorFile } from '../cli/tensor-files.ts'
import { isFabricError, type FabricError } from '../node/errors/index.ts'
import type { ElementType, Tensor } from '../node/models/index.ts'
import { refusal, ROOT, tempDir, thrown } from './harness/index.ts'

const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'npy')
const fixture = (name: string): Promise<Buffer> => readFile(path.join(FIXTURES, name))

const values = (t: Tensor): unknown[] => Array.from(t.data as ArrayLike<unknown>)



/** What numpy put in each fixture (see the script in test/fixtures/npy/README.md). */
const EXPECTED: Record<string, { type: ElementType; dims: number[]; values: unknown[] }> = {
  'f4_2x3.npy': { type: 'float32', dims: [2, 3], values: [-0.5, -0.25, 0, 0.25, 0.5, 0.75] },
  'f8_special.npy': { type: 'float64', dims: [6], values: [Math.PI, -0, Infinity, -Infinity, Number.NaN, 1e300] },
  'i1.npy': { type: 'int8', dims: [3], values: [-128, 0, 127] },
  'i2_2x2x2.npy': { type: 'int16', dims: [2, 2, 2], values: [-4, -3, -2, -1, 0, 1, 2, 3] },
  'i4.npy': { type: 'int32', dims: [2], values: [-(2 ** 31), 2 ** 31 - 1] },
  'i8.npy': { type: 'int64', dims: [4], values: [-(2n ** 63n), 2n ** 63n - 1n, 2n ** 53n + 1n, 0n] },
  'u1.npy': { type: 'uint8', dims: [1, 2], values: [0, 255] },
  'u2.npy': { type: 'uint16', dims: [2], values: [0, 65535] },
  'u4.npy': { type: 'uint32', dims: [2], values: [0, 2 ** 32 - 1] },
  'u8.npy': { type: 'uint64', dims: [2], values: [0n, 2n ** 64n - 1n] },
  'b1.npy': { type: 'bool', dims: [2, 2], values: [1, 0, 0, 1] },
  'U.npy': { type: 'string', dims: [4], values: ['', 'héllo', '日本語', '👍 emoji'] },
  'scalar.npy': { type: 'float32', dims: [], values: [3.5] },
  'empty_0x3.npy': { type: 'float32', dims: [0, 3], values: [] },
  'fortran_i4_2x3.npy': { type: 'int32', dims: [2, 3], values: [0, 1, 2, 3, 4, 5] },
  'fortran_i2_2x3x4.npy': { type: 'int16', dims: [2, 3, 4], values: Array.from({ length: 24 }, (_, i) => i) },
  'be_f4.npy': { type: 'float32', dims: [3], values: [0, 1, 2] },
  'be_i8.npy': { type: 'int64', dims: [3], values: [1n, -2n, 2n ** 40n] },
  'be_U.npy': { type: 'string', dims: [2], values: ['ab', 'ü'] },
  'v2_f4.npy': { type: 'float32', dims: [3], values: [0, 1, 2] },
  'v3_f4.npy': { type: 'float32', dims: [3], values: [0, 1, 2] },
}

/** The fixtures numpy wrote as fabric writes: C order, little-endian, format 1.0. */
const CANONICAL = ['f4_2x3', 'f8_special', 'i1', 'i2_2x2x2', 'i4', 'i8', 'u1', 'u2', 'u4', 'u8', 'b1', 'U', 'scalar', 'empty_0x3'].map((n) => `${n}.npy`)

t.test('.npy files written by numpy decode to their values: every dtype, 0-d, empty, Fortran order, big-endian, versions 1-3', async (t) => {
  for (const [name, want] of Object.entries(EXPECTED)) {
    const got = decodeNpy(await fixture(name), name)
    t.equal(got.type, want.type, `${name}: type`)
    t.same(got.dims, want.dims, `${name}: dims`)
    t.same(values(got), want.values, `${name}: values`)
  }
})

t.test("fabric's encoder writes numpy's bytes exactly, and round-trips what it reads", async (t) => {
  for (const name of CANONICAL) {
    const bytes = await fixture(name)
    t.same(Buffer.from(encodeNpy(decodeNpy(bytes, name))), bytes, `${name}: byte for byte`)
  }
  for (const name of ['fortran_i2_2x3x4.npy', 'be_i8.npy', 'be_U.npy', 'v3_f4.npy']) {
    const once = decodeNpy(await fixture(name), name)
    const again = decodeNpy(encodeNpy(once), name)
    t.same([again.type, again.dims, values(again)], [once.type, once.dims, values(once)], `${name}: written as C-order little-endian 1.0, reads back the same`)
  }
})

t.test('.npy files fabric cannot read are refused, saying why and naming the file', async (t) => {
  const refusals: Array<[string, RegExp]> = [
    ['f2.npy', /^f2\.npy: dtype <f2 is not supported: float16; convert with a\.astype\(np\.float32\)/],
    ['S.npy', /^S\.npy: dtype \|S2 is not supported: byte strings; save text as unicode/],
    ['O.npy', /^O\.npy: object arrays \(\|O\) are not supported: they are pickled Python objects$/],
  ]
  for (const [name, message] of refusals) {
    const bytes = await fixture(name)
    t.match(thrown(() => decodeNpy(bytes, name)), { code: 'INVALID_ARGUMENT', message, details: { file: name } }, name)
  }
  t.match(thrown(() => decodeNpy(Buffer.from('{"not": "npy"}'), 'x.npy')).message, 'x.npy: not a .npy file (it does not start with \\x93NUMPY)')

  const good = await fixture('f4_2x3.npy')
  t.match(thrown(() => decodeNpy(good.subarray(0, good.length - 1), 'x.npy')).message, 'x.npy: truncated: shape (2, 3) of <f4 needs 24 bytes of data, the file has 23')
  t.match(thrown(() => decodeNpy(Buffer.concat([good, Buffer.from([0])]), 'x.npy')).message, 'x.npy: has 1 bytes after the array data (shape (2, 3) of <f4 is 24 bytes)')
  const version = Buffer.from(good)
  version[6] = 4
  t.match(thrown(() => decodeNpy(version, 'x.npy')).message, 'x.npy: .npy format version 4.0 is not supported (1.0, 2.0 and 3.0 are)')

  /** The f4_2x3 fixture with its header dict replaced (padded to the same length). */
  const withHeader = (dict: string): Buffer => {
    const header = good.subarray(10, 10 + good.readUInt16LE(8)).toString('latin1')
    if (dict.length > header.length - 1) throw new Error('test header too long')
    return Buffer.concat([good.subarray(0, 10), Buffer.from(dict.padEnd(header.length - 1) + '\n', 'latin1'), good.subarray(10 + header.length)])
  }
  const headers: Array<[string, RegExp]> = [
    ["{'descr': '<f4', 'fortran_order': False, 'shape': (6), }", /expected ',' after the only dim/],
    ["{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3), }", /expected True or False/],
    ["{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", /unknown key 'x'/],
    ["{'descr': '<f4', 'descr': '<f4', 'shape': (2, 3), }", /each key once, 'descr' is repeated/],
    ["{'descr': '<f4', 'shape': (2, 3), }", /no 'fortran_order'/],
    ["{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", /structured dtypes \(a list of fields\) are not supported/],
    ["{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }", /expected a non-negative integer/],
    ["__import__('os').system('true')", /expected '\{' at character 0/],
    ["{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } junk", /only spaces and a newline after the dict/],
  ]
  for (const [dict, message] of headers) t.match(thrown(() => decodeNpy(withHeader(dict), 'x.npy')).message, message, dict)
  // A trailing comma in the tuple and double quotes are Python too, and accepted.
  t.same(decodeNpy(withHeader('{"descr": "<f4", "fortran_order": False, "shape": (2, 3,)}'), 'x.npy').dims, [2, 3])
  t.match(thrown(() => decodeNpy(withHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (65536, 65536), }"), 'x.npy')).message, /holds more than 268435456 elements/)
})

t.test('JSON nested arrays become tensors of the given type; errors name the JSON path', async (t) => {
  t.same(tensorFromJson([[1, 2, 3], [4, 5, 6]], 'float32'), { type: 'float32', dims: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) })
  t.same(tensorFromJson(7, 'int32'), { type: 'int32', dims: [], data: new Int32Array([7]) }, 'a bare value is a scalar')
  t.same(tensorFromJson([[], []], 'float32').dims, [2, 0])
  t.same(tensorFromJson([], 'string'), { type: 'string', dims: [0], data: [] })
  t.same(values(tensorFromJson(['NaN', 'Infinity', '-Infinity', 1.5], 'float64')), [Number.NaN, Infinity, -Infinity, 1.5])
  t.same(values(tensorFromJson([-1, '-9223372036854775808'], 'int64')), [-1n, -(2n ** 63n)])
  t.same(values(tensorFromJson(['18446744073709551615', 0], 'uint64')), [2n ** 64n - 1n, 0n])
  t.same(values(tensorFromJson([[true], [false]], 'bool')), [1, 0])
  t.same(tensorFromJson([['a', 'b']], 'string').data, ['a', 'b'])

  const errors: Array<[unknown, ElementType, string]> = [
    [[[1, 2], [3]], 'float32', 'in.json at [1]: expected an array of 2, got an array of 1 (the arrays are ragged)'],
    [[[1, 2], 3], 'float32', 'in.json at [1]: expected an array of 2, got 3 (the arrays are ragged)'],
    [[1, [2]], 'float32', 'in.json at [1]: expected a number, got an array (the arrays are ragged)'],
    [[[1, 2], [3, 'x']], 'float32', 'in.json at [1][1]: expected a number, got "x"'],
    [[[0, 1], [2, 256]], 'uint8', 'in.json at [1][1]: 256 is out of range for uint8 (0..255)'],
    [[-129], 'int8', 'in.json at [0]: -129 is out of range for int8 (-128..127)'],
    [[1.5], 'int32', 'in.json at [0]: 1.5 is not an integer (int32)'],
    [[Number.NaN], 'int16', 'in.json at [0]: NaN is not a finite number (int16)'],
    [[Infinity], 'int64', 'in.json at [0]: Infinity is not a finite number (int64)'],
    [[2 ** 60], 'int64', 'in.json at [0]: 1152921504606847000 is beyond 2^53, where JSON numbers lose digits: write int64 values that large as strings of digits'],
    [['9223372036854775808'], 'int64', 'in.json at [0]: 9223372036854775808 is out of range for int64 (-9223372036854775808..9223372036854775807)'],
    [[-1], 'uint64', 'in.json at [0]: -1 is out of range for uint64 (0..18446744073709551615)'],
    [['12a'], 'int64', 'in.json at [0]: expected an integer (a number, or a string of digits), got "12a"'],
    [[1e39], 'float32', 'in.json at [0]: 1e+39 is out of range for float32'],
    [[1], 'bool', 'in.json at [0]: expected true or false, got 1'],
    [[null], 'string', 'in.json at [0]: expected a string, got null'],
    [{ a: 1 }, 'float32', 'in.json: expected a number, got an object'],
  ]
  for (const [value, type, message] of errors) {
    const err = thrown(() => tensorFromJson(value, type, 'in.json'))
    t.equal(err.code, 'INVALID_ARGUMENT')
    t.equal(err.message, message)
  }
})

t.test('tensors become JSON: int64 as numbers while safe, else strings; non-finite floats as strings; float32 in its shortest form', async (t) => {
  t.same(tensorToJson({ type: 'float32', dims: [2, 2], data: new Float32Array([0.1, Number.NaN, -Infinity, 1 / 3]) }), [[0.1, 'NaN'], ['-Infinity', 0.33333334]])
  t.same(tensorToJson({ type: 'float64', dims: [2], data: new Float64Array([0.1, Infinity]) }), [0.1, 'Infinity'])
  t.same(tensorToJson({ type: 'int64', dims: [3], data: new BigInt64Array([-5n, 2n ** 53n - 1n, 2n ** 53n]) }), [-5, 2 ** 53 - 1, '9007199254740992'])
  t.same(tensorToJson({ type: 'uint64', dims: [1], data: new BigUint64Array([2n ** 64n - 1n]) }), ['18446744073709551615'])
  t.same(tensorToJson({ type: 'bool', dims: [2], data: new Uint8Array([1, 0]) }), [true, false])
  t.same(tensorToJson({ type: 'int8', dims: [], data: new Int8Array([-3]) }), -3, 'a scalar is a bare value')
  t.same(tensorToJson({ type: 'string', dims: [2, 0], data: [] }), [[], []])
  for (const [type, value] of [
    ['float32', [[0.1, 'NaN'], [1e-7, -2]]],
    ['int64', [['-9223372036854775808', 3]]],
    ['uint64', ['18446744073709551615', 0]],
    ['string', [['x'], ['ü']]],
    ['bool', [true, false]],
  ] as const) {
    t.same(tensorToJson(tensorFromJson(value, type)), value, `${type} round trip`)
  }
})

t.test('tensor files are picked by extension, and every error names the file', async (t) => {
  const dir = await tempDir(t)
  const tensor: Tensor = { type: 'int64', dims: [2, 2], data: new BigInt64Array([1n, -2n, 2n ** 62n, 0n]) }
  for (const ext of ['npy', 'json']) {
    const file = path.join(dir, `t.${ext}`)
    await writeTensorFile(file, tensor)
    t.same(await readTensorFile(file, 'int64'), tensor, `.${ext} round trip`)
  }
  t.same(await readFile(path.join(dir, 't.json'), 'utf8'), '[[1,-2],["4611686018427387904",0]]\n')
  t.same((await readTensorFile(path.join(FIXTURES, 'U.npy'))).type, 'string', '.npy needs no type')

  const json = path.join(dir, 't.json')
  const npy = path.join(FIXTURES, 'f8_special.npy')
  t.match(await refusal(readTensorFile(json)), { code: 'INVALID_ARGUMENT', message: `${json}: JSON carries no element type: give one (float32, int64, ...)` })
  t.match(await refusal(readTensorFile(npy, 'float32')), { message: `${npy}: holds float64, expected float32 (convert it with a.astype(np.float32))` })
  t.match(await refusal(readTensorFile(path.join(dir, 'missing.npy'))), { code: 'NOT_FOUND', message: /^cannot read .*missing\.npy: ENOENT/ })
  t.match(await refusal(readTensorFile(path.join(dir, 'x.csv'))), { message: /x\.csv: unknown tensor file type "\.csv" \(expected \.npy or \.json\)/ })
  const broken = path.join(dir, 'broken.json')
  await writeFile(broken, '[1, 2')
  t.match(await refusal(readTensorFile(broken, 'float32')), { message: new RegExp(`^${broken.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: not valid JSON`) })
  const ragged = path.join(dir, 'ragged.json')
  await writeFile(ragged, '[[1], [2, 3]]')
  t.match(await refusal(readTensorFile(ragged, 'float32')), { message: `${ragged} at [1]: expected an array of 1, got an array of 2 (the arrays are ragged)` })
  t.throws(() => encodeNpy({ type: 'string', dims: [1], data: ['a\u0000'] }), { message: 'string element 0 ends with a NUL character, which .npy cannot keep' })
})
