/**
 * Tensors on the wire: fabric's element types and the proto's ElementType, both ways, and a
 * Tensor message from and to a models Tensor. Shared by the ModelService handlers and the CLI.
 */
import type { MessageInitShape } from '@bufbuild/protobuf'
import { ElementType, type Tensor as TensorMsg, type TensorSchema } from '../../proto/gen/fabric/v1/model_pb.ts'
import { FabricError } from '../errors/index.ts'
import { tensorFromBytes, tensorFromStrings, tensorToBytes, type ElementType as Type, type Tensor } from '../models/index.ts'

export const ELEMENT_TYPE_OF: { readonly [E in ElementType]: Type | undefined } = {
  [ElementType.UNSPECIFIED]: undefined,
  [ElementType.FLOAT32]: 'float32',
  [ElementType.FLOAT64]: 'float64',
  [ElementType.INT8]: 'int8',
  [ElementType.INT16]: 'int16',
  [ElementType.INT32]: 'int32',
  [ElementType.INT64]: 'int64',
  [ElementType.UINT8]: 'uint8',
  [ElementType.UINT16]: 'uint16',
  [ElementType.UINT32]: 'uint32',
  [ElementType.UINT64]: 'uint64',
  [ElementType.BOOL]: 'bool',
  [ElementType.STRING]: 'string',
}

export const ELEMENT_TYPE_MSG = Object.fromEntries(
  Object.entries(ELEMENT_TYPE_OF)
    .filter(([, t]) => t !== undefined)
    .map(([e, t]) => [t, Number(e) as ElementType]),
) as { readonly [T in Type]: ElementType }

/** A Tensor message for a tensor (numbers as a view of its bytes, no copy). */
export function tensorMsg(name: string, t: Tensor): MessageInitShape<typeof TensorSchema> {
  const base = { name, type: ELEMENT_TYPE_MSG[t.type], dims: t.dims.map(BigInt) }
  return t.type === 'string' ? { ...base, strings: t.data as string[] } : { ...base, data: tensorToBytes(t) }
}

/** The tensor a Tensor message carries, checked (type named, dims fit the data); `role` names it in errors ("input"). */
export function tensorOf(m: TensorMsg, role: string): Tensor {
  const what = `${role} "${m.name}"`
  const type = ELEMENT_TYPE_OF[m.type]
  if (!type) throw FabricError.invalidArgument(`${what}: no element type`, { details: { [role]: m.name } })
  const dims = m.dims.map(Number)
  return type === 'string' ? tensorFromStrings(dims, m.strings, what) : tensorFromBytes(type, dims, m.data, what)
}
