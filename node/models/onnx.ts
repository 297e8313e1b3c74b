/**
 * What fabric reads from an ONNX file without onnxruntime: its metadata, the inputs and outputs it
 * declares, and every reference to external data. Pure functions on bytes (onnx-proto, which is
 * protobufjs: decoding is synchronous and keeps tensor bytes as views of the input, not copies).
 *
 * External data is why this exists before any ORT load: a model may say "my weights are in file
 * X", and onnxruntime, given bytes, resolves X against the process's working directory. A published
 * model must never make a node read its local files, so such models are refused outright.
 */
import onnxp from 'onnx-proto'
import { FabricError, messageOf } from '../errors/index.ts'

const { onnx } = onnxp

export interface OnnxValue {
  name: string
  kind: 'tensor' | 'sequence' | 'map' | 'optional' | 'sparse_tensor' | 'unknown'
  /** For tensors: the element type as onnxruntime names it ('float32', 'float16', 'bfloat16', ...). */
  elementType?: string
  /** For tensors: the declared rank; undefined when the model declares no shape (unknown rank). */
  rank?: number
}

export interface OnnxInfo {
  irVersion: number
  opsets: Array<{ domain: string; version: number }>
  producerName: string
  producerVersion: string
  graphName: string
  docString: string
  /** Every external data file the model references, first occurrence first, each once. */
  externalData: string[]
  /** The graph's inputs as declared, without initializers (ORT does not count those as inputs). */
  inputs: OnnxValue[]
  outputs: OnnxValue[]
}

/** ONNX TensorProto.DataType -> the name onnxruntime (and fabric's messages) use. */
const ELEMENT_TYPE_NAMES: Readonly<Record<number, string>> = {
  1: 'float32',
  2: 'uint8',
  3: 'int8',
  4: 'uint16',
  5: 'int16',
  6: 'int32',
  7: 'int64',
  8: 'string',
  9: 'bool',
  10: 'float16',
  11: 'float64',
  12: 'uint32',
  13: 'uint64',
  14: 'complex64',
  15: 'complex128',
  16: 'bfloat16',
  17: 'float8e4m3fn',
  18: 'float8e4m3fnuz',
  19: 'float8e5m2',
  20: 'float8e5m2fnuz',
  21: 'uint4',
  22: 'int4',
  23: 'float4e2m1',
}

const EXTERNAL = onnx.TensorProto.DataLocation.EXTERNAL

type Int64 = number | { toNumber(): number }
const toNumber = (v: Int64 | null | undefined): number => (v == null ? 0 : typeof v === 'number' ? v : v.toNumber())

export function elementTypeName(dataType: number): string {
  return ELEMENT_TYPE_NAMES[dataType] ?? `element type ${dataType}`
}

/** Parses an ONNX model. Bytes that are not one: INVALID_ARGUMENT "not an ONNX model: ...". */
export function inspectOnnx(bytes: Uint8Array): OnnxInfo {
  let model: onnxp.onnx.ModelProto
  try {
    model = onnx.ModelProto.decode(bytes)
  } catch (err) {
    throw FabricError.invalidArgument(`not an ONNX model: ${messageOf(err)}`, { cause: err })
  }
  // Protobuf skips unknown fields, so some non-ONNX bytes decode "successfully" into an empty model.
  if (!model.graph) throw FabricError.invalidArgument('not an ONNX model: it has no graph')
  if (toNumber(model.irVersion) <= 0) throw FabricError.invalidArgument('not an ONNX model: it has no IR version')
  const graph = model.graph
  const initializers = new Set((graph.initializer ?? []).map((t) => t.name ?? ''))
  return {
    irVersion: toNumber(model.irVersion),
    opsets: (model.opsetImport ?? []).map((o) => ({ domain: o.domain ?? '', version: toNumber(o.version) })),
    producerName: model.producerName ?? '',
    producerVersion: model.producerVersion ?? '',
    graphName: graph.name ?? '',
    docString: model.docString ?? '',
    externalData: externalDataOf(model),
    inputs: (graph.input ?? []).filter((v) => !initializers.has(v.name ?? '')).map(valueOf),
    outputs: (graph.output ?? []).map(valueOf),
  }
}

/** INVALID_ARGUMENT naming the first external data file, if the model references any. */
export function refuseExternalData(info: Pick<OnnxInfo, 'externalData'>): void {
  const first = info.externalData[0]
  if (first === undefined) return
  throw FabricError.invalidArgument(`the model references external data file ${first}; fabric only accepts self-contained models`, {
    details: { location: first },
  })
}

function valueOf(v: onnxp.onnx.IValueInfoProto): OnnxValue {
  const name = v.name ?? ''
  const type = v.type
  if (type?.tensorType) {
    const t = type.tensorType
    const value: OnnxValue = { name, kind: 'tensor', elementType: elementTypeName(t.elemType ?? 0) }
    if (t.shape) value.rank = (t.shape.dim ?? []).length
    return value
  }
  if (type?.sequenceType) return { name, kind: 'sequence' }
  if (type?.mapType) return { name, kind: 'map' }
  if (type?.optionalType) return { name, kind: 'optional' }
  if (type?.sparseTensorType) return { name, kind: 'sparse_tensor' }
  return { name, kind: 'unknown' }
}

/**
 * Walks every place a tensor can sit: graph initializers and sparse initializers, node attributes
 * (tensor, tensors, sparse tensors) and, recursively, subgraphs in attributes (If, Loop, Scan), in
 * the model's local functions and in its training info. ORT would resolve a reference in any of
 * them, so all of them count.
 */
function externalDataOf(model: onnxp.onnx.IModelProto): string[] {
  const found = new Set<string>()
  const tensor = (t: onnxp.onnx.ITensorProto | null | undefined): void => {
    if (!t) return
    const entries = t.externalData ?? []
    if (t.dataLocation !== EXTERNAL && entries.length === 0) return
    const location = entries.find((e) => e.key === 'location')?.value
    found.add(location ?? `(no location, in tensor "${t.name ?? ''}")`)
  }
  const sparse = (s: onnxp.onnx.ISparseTensorProto | null | undefined): void => {
    if (!s) return
    tensor(s.values)
    tensor(s.indices)
  }
  const nodes = (list: onnxp.onnx.INodeProto[] | null | undefined): void => {
    for (const node of list ?? []) {
      for (const a of node.attribute ?? []) {
        tensor(a.t)
        for (const t of a.tensors ?? []) tensor(t)
        sparse(a.sparseTensor)
        for (const s of a.sparseTensors ?? []) sparse(s)
        graph(a.g)
        for (const g of a.graphs ?? []) graph(g)
      }
    }
  }
  const graph = (g: onnxp.onnx.IGraphProto | null | undefined): void => {
    if (!g) return
    for (const t of g.initializer ?? []) tensor(t)
    for (const s of g.sparseInitializer ?? []) sparse(s)
    nodes(g.node)
  }
  graph(model.graph)
  for (const f of model.functions ?? []) nodes(f.node)
  for (const ti of model.trainingInfo ?? []) {
    graph(ti.initialization)
    graph(ti.algorithm)
  }
  return [...found]
}
