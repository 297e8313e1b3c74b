/**
 * Small ONNX models for tests, built with onnx-proto (IR 8, opset 17), as the bytes a user would
 * publish. Each builder says what onnxruntime does with its model.
 */
import onnxp from 'onnx-proto'
import type { onnx as OnnxTypes } from 'onnx-proto'

const { onnx } = onnxp
const T = onnx.TensorProto.DataType

/** A shape entry: a number is fixed, '?' an unnamed dynamic dim, any other string a symbolic one. */
type Dim = number | string

const ELEMENT: Record<string, number> = {
  float32: T.FLOAT,
  float64: T.DOUBLE,
  int8: T.INT8,
  int16: T.INT16,
  int32: T.INT32,
  int64: T.INT64,
  uint8: T.UINT8,
  uint16: T.UINT16,
  uint32: T.UINT32,
  uint64: T.UINT64,
  bool: T.BOOL,
  string: T.STRING,
  float16: T.FLOAT16,
  bfloat16: T.BFLOAT16,
}

/** A graph input or output; `shape` undefined declares no shape at all (unknown rank). */
export function tensorValue(name: string, type: keyof typeof ELEMENT | string, shape: Dim[] | undefined): OnnxTypes.IValueInfoProto {
  const elemType = ELEMENT[type]
  if (elemType === undefined) throw new Error(`tensorValue: unknown type ${type}`)
  const dims = shape?.map((d) => (typeof d === 'number' ? { dimValue: d } : d === '?' ? {} : { dimParam: d }))
  return { name, type: { tensorType: { elemType, ...(dims ? { shape: { dim: dims } } : {}) } } }
}

export function encodeModel(graph: OnnxTypes.IGraphProto, extra: Partial<OnnxTypes.IModelProto> = {}): Uint8Array {
  const model = onnx.ModelProto.create({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 17 }],
    producerName: 'fabric-tests',
    producerVersion: '1',
    ...extra,
    graph,
  })
  return onnx.ModelProto.encode(model).finish()
}

const tensorAttr = (name: string, t: OnnxTypes.ITensorProto): OnnxTypes.IAttributeProto => ({ name, type: onnx.AttributeProto.AttributeType.TENSOR, t })

/** sum = a + b, a and b float32 [N,3] (or [batch,3] with batch '?', unnamed: then N binds nothing). */
export function addModel(batch: Dim = 'N'): Uint8Array {
  return encodeModel(
    {
      name: 'add',
      node: [{ opType: 'Add', input: ['a', 'b'], output: ['sum'] }],
      input: [tensorValue('a', 'float32', [batch, 3]), tensorValue('b', 'float32', [batch, 3])],
      output: [tensorValue('sum', 'float32', [batch, 3])],
    },
    { docString: 'adds two float32 [N,3] tensors' },
  )
}

/** y = x * factor, x float32 [N,width]: versions with different factors answer differently. */
export function scaleModel(factor: number, width: Dim = 4): Uint8Array {
  return encodeModel({
    name: 'scale',
    initializer: [{ name: 'factor', dataType: T.FLOAT, dims: [], floatData: [factor] }],
    node: [{ opType: 'Mul', input: ['x', 'factor'], output: ['y'] }],
    input: [tensorValue('x', 'float32', ['N', width])],
    output: [tensorValue('y', 'float32', ['N', width])],
  })
}

/**
 * One Identity per element type fabric serves. Input names include '0' and 'input.1' (what
 * PyTorch's exporter produces); the shapes cover a scalar, fixed dims, a second symbol (M), an
 * unnamed dynamic dim and a declared-shapeless (unknown rank) input. Output of input i is
 * `<type>_out`.
 */
export const ALL_TYPES_INPUTS: ReadonlyArray<{ name: string; type: string; shape: Dim[] | undefined }> = [
  { name: '0', type: 'float32', shape: ['N', 2] },
  { name: 'input.1', type: 'float64', shape: ['N', 2] },
  { name: 'int8', type: 'int8', shape: [] },
  { name: 'int16', type: 'int16', shape: [2, 3] },
  { name: 'int32', type: 'int32', shape: ['N', '?'] },
  { name: 'int64', type: 'int64', shape: ['N'] },
  { name: 'uint8', type: 'uint8', shape: ['M', 2] },
  { name: 'uint16', type: 'uint16', shape: undefined },
  { name: 'uint32', type: 'uint32', shape: ['N', 2] },
  { name: 'uint64', type: 'uint64', shape: ['N', 2] },
  { name: 'bool', type: 'bool', shape: ['N', 2] },
  { name: 'string', type: 'string', shape: ['N', 2] },
]

export function allTypesModel(): Uint8Array {
  return encodeModel({
    name: 'all-types',
    node: ALL_TYPES_INPUTS.map((i) => ({ opType: 'Identity', input: [i.name], output: [`${i.type}_out`] })),
    input: ALL_TYPES_INPUTS.map((i) => tensorValue(i.name, i.type, i.shape)),
    output: ALL_TYPES_INPUTS.map((i) => tensorValue(`${i.type}_out`, i.type, i.shape)),
  })
}

/**
 * lower = StringNormalizer(text, LOWER): text string [N] (ORT really processes the strings). The
 * locale is C: ORT makes it "C.UTF-8", which glibc always has; the default, en_US, fails to load on
 * hosts without that locale installed ("Failed to construct locale with name:en_US.UTF-8").
 */
export function stringModel(): Uint8Array {
  return encodeModel({
    name: 'lower',
    node: [
      {
        opType: 'StringNormalizer',
        input: ['text'],
        output: ['lower'],
        attribute: [
          { name: 'case_change_action', type: onnx.AttributeProto.AttributeType.STRING, s: new TextEncoder().encode('LOWER') },
          { name: 'locale', type: onnx.AttributeProto.AttributeType.STRING, s: new TextEncoder().encode('C') },
        ],
      },
    ],
    input: [tensorValue('text', 'string', ['N'])],
    output: [tensorValue('lower', 'string', ['N'])],
  })
}

/** y = Gather(table [10,20,30,40], idx): idx int64 [N]. An index outside 0..3 fails at run time. */
export function lookupModel(): Uint8Array {
  return encodeModel({
    name: 'lookup',
    initializer: [{ name: 'table', dataType: T.FLOAT, dims: [4], floatData: [10, 20, 30, 40] }],
    node: [{ opType: 'Gather', input: ['table', 'idx'], output: ['y'], attribute: [{ name: 'axis', type: onnx.AttributeProto.AttributeType.INT, i: 0 }] }],
    input: [tensorValue('idx', 'int64', ['N'])],
    output: [tensorValue('y', 'float32', ['N'])],
  })
}

/** Not protobuf at all: protobuf-js fails on the first field (wire type 7 does not exist). */
export function garbageBytes(): Uint8Array {
  return new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x0f, 0x6e, 0x6f, 0x74, 0x20, 0x6f, 0x6e, 0x6e, 0x78])
}

/** Parses, but onnxruntime has no kernel for its op: ORT's load fails naming it. */
export function unknownOpModel(): Uint8Array {
  return encodeModel({
    name: 'frobnicate',
    node: [{ opType: 'Frobnicate', input: ['x'], output: ['y'] }],
    input: [tensorValue('x', 'float32', ['N'])],
    output: [tensorValue('y', 'float32', ['N'])],
  })
}

/** An element type onnxruntime runs but fabric does not serve. */
export function unservableTypeModel(type: 'float16' | 'bfloat16' = 'float16'): Uint8Array {
  return encodeModel({
    name: 'half',
    node: [{ opType: 'Identity', input: ['h'], output: ['h_out'] }],
    input: [tensorValue('h', type, ['N'])],
    output: [tensorValue('h_out', type, ['N'])],
  })
}

/** An input that is a sequence of tensors, not a tensor: onnxruntime loads it, fabric refuses it. */
export function sequenceModel(): Uint8Array {
  return encodeModel({
    name: 'seq',
    node: [{ opType: 'SequenceLength', input: ['items'], output: ['count'] }],
    input: [{ name: 'items', type: { sequenceType: { elemType: { tensorType: { elemType: T.FLOAT } } } } }],
    output: [tensorValue('count', 'int64', [])],
  })
}

const EXTERNAL = onnx.TensorProto.DataLocation.EXTERNAL
const externalTensor = (name: string, location: string): OnnxTypes.ITensorProto => ({
  name,
  dataType: T.FLOAT,
  dims: [3],
  dataLocation: EXTERNAL,
  externalData: [
    { key: 'location', value: location },
    { key: 'offset', value: '0' },
    { key: 'length', value: '12' },
  ],
})

/** y = x + w where the initializer w's bytes are "in" the given file. */
export function externalDataModel(location = '../../etc/passwd'): Uint8Array {
  return encodeModel({
    name: 'external',
    initializer: [externalTensor('w', location)],
    node: [{ opType: 'Add', input: ['x', 'w'], output: ['y'] }],
    input: [tensorValue('x', 'float32', [3])],
    output: [tensorValue('y', 'float32', [3])],
  })
}

/**
 * The external reference only inside a subgraph: If(cond) then Constant(external) else
 * Constant(inline). The main graph has no initializer at all.
 */
export function subgraphExternalDataModel(location = '../../etc/passwd'): Uint8Array {
  const branch = (name: string, value: OnnxTypes.ITensorProto): OnnxTypes.IGraphProto => ({
    name,
    node: [{ opType: 'Constant', output: [`${name}_y`], attribute: [tensorAttr('value', value)] }],
    output: [tensorValue(`${name}_y`, 'float32', [3])],
  })
  return encodeModel({
    name: 'external-in-branch',
    node: [
      {
        opType: 'If',
        input: ['cond'],
        output: ['y'],
        attribute: [
          { name: 'then_branch', type: onnx.AttributeProto.AttributeType.GRAPH, g: branch('then', externalTensor('secret', location)) },
          { name: 'else_branch', type: onnx.AttributeProto.AttributeType.GRAPH, g: branch('else', { dataType: T.FLOAT, dims: [3], floatData: [1, 2, 3] }) },
        ],
      },
    ],
    input: [tensorValue('cond', 'bool', [])],
    output: [tensorValue('y', 'float32', [3])],
  })
}

/**
 * External references in every other place a tensor can sit, one file each, in walk order:
 * a.bin an initializer, b.bin a sparse initializer's values, c.bin an attribute's tensor list,
 * d.bin a Constant in a Loop body nested in an If branch, e.bin a Constant in a local function.
 * Only for inspectOnnx: it is not meant to load.
 */
export function externalDataEverywhereModel(): Uint8Array {
  const A = onnx.AttributeProto.AttributeType
  const constant = (out: string, file: string): OnnxTypes.INodeProto => ({ opType: 'Constant', output: [out], attribute: [tensorAttr('value', externalTensor(out, file))] })
  const loopBody: OnnxTypes.IGraphProto = { name: 'body', node: [constant('d', 'd.bin')], output: [tensorValue('d', 'float32', [3])] }
  const thenBranch: OnnxTypes.IGraphProto = {
    name: 'then',
    node: [{ opType: 'Loop', input: ['', ''], output: ['loop_out'], attribute: [{ name: 'body', type: A.GRAPH, g: loopBody }] }],
    output: [tensorValue('loop_out', 'float32', [3])],
  }
  return encodeModel(
    {
      name: 'everywhere',
      initializer: [externalTensor('a', 'a.bin')],
      sparseInitializer: [{ dims: [3], values: externalTensor('b', 'b.bin'), indices: { dataType: T.INT64, dims: [1], int64Data: [0] } }],
      node: [
        { opType: 'Custom', domain: 'test', input: ['a'], output: ['c_out'], attribute: [{ name: 'tables', type: A.TENSORS, tensors: [externalTensor('c', 'c.bin')] }] },
        { opType: 'If', input: ['cond'], output: ['y'], attribute: [{ name: 'then_branch', type: A.GRAPH, g: thenBranch }] },
        { opType: 'Fn', domain: 'local', input: [], output: ['e'] },
      ],
      input: [tensorValue('cond', 'bool', [])],
      output: [tensorValue('y', 'float32', [3])],
    },
    {
      opsetImport: [{ domain: '', version: 17 }, { domain: 'local', version: 1 }],
      functions: [{ name: 'Fn', domain: 'local', input: [], output: ['e'], node: [constant('e', 'e.bin')], opsetImport: [{ domain: '', version: 17 }] }],
    },
  )
}

/**
 * Tiny on disk, huge once loaded: onnxruntime constant-folds ConstantOfShape(shape) at session
 * creation, materialising `bytes` of float32 (1 GiB by default: the loading process's RSS grows
 * past 1.1 GB, at about 1.2 GB/s here). y = x + big, x float32 [1].
 */
export function memoryHungryModel(bytes = 2 ** 30): Uint8Array {
  const n = Math.floor(bytes / 4)
  return encodeModel({
    name: 'hungry',
    initializer: [{ name: 'shape', dataType: T.INT64, dims: [1], int64Data: [n] }],
    node: [
      { opType: 'ConstantOfShape', input: ['shape'], output: ['big'], attribute: [tensorAttr('value', { dataType: T.FLOAT, dims: [1], floatData: [1] })] },
      { opType: 'Add', input: ['x', 'big'], output: ['y'] },
    ],
    input: [tensorValue('x', 'float32', [1])],
    output: [tensorValue('y', 'float32', [n])],
  })
}

/**
 * Slow to load: onnxruntime constant-folds a chain of `chain` MatMuls of size x size float32
 * matrices at session creation (2 * size^3 flops each; 4096 x 3 takes ~6 s on one core here, with
 * a peak RSS of ~400 MB). y = x + the product, x float32 [1].
 */
export function slowToLoadModel(size = 4096, chain = 3): Uint8Array {
  const node: OnnxTypes.INodeProto[] = [
    { opType: 'ConstantOfShape', input: ['shape'], output: ['m0'], attribute: [tensorAttr('value', { dataType: T.FLOAT, dims: [1], floatData: [1 / size] })] },
  ]
  for (let i = 0; i < chain; i++) node.push({ opType: 'MatMul', input: [`m${i}`, 'm0'], output: [`m${i + 1}`] })
  node.push({ opType: 'Add', input: ['x', `m${chain}`], output: ['y'] })
  return encodeModel({
    name: 'slow',
    initializer: [{ name: 'shape', dataType: T.INT64, dims: [2], int64Data: [size, size] }],
    node,
    input: [tensorValue('x', 'float32', [1])],
    output: [tensorValue('y', 'float32', [size, size])],
  })
}
