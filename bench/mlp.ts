/**
 * A small but real model for the serving benchmarks: a multilayer perceptron as PyTorch exports
 * one (each nn.Linear a Gemm with transB=1, weights [out, in]; ReLU between layers), float32
 * weights from a seeded generator, the batch dim symbolic ("N"). Built with onnx-proto through
 * the test harness's encodeModel, as the bytes a user would publish.
 */
import onnxp from 'onnx-proto'
import type { onnx as OnnxTypes } from 'onnx-proto'
import { encodeModel, tensorValue } from '../test/harness/onnx.ts'

const { onnx } = onnxp
const FLOAT = onnx.TensorProto.DataType.FLOAT

/** The layer widths of the benchmarks' model: 16 inputs, two hidden layers of 64, 4 outputs. */
export const MLP_LAYERS: readonly number[] = [16, 64, 64, 4]

/** Uniform floats in [-0.5, 0.5) from a 32-bit LCG: the same seed, the same model. */
export function seededFloats(seed: number): () => number {
  let x = seed >>> 0
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0
    return x / 2 ** 32 - 0.5
  }
}

const floatTensor = (name: string, dims: number[], values: Float32Array): OnnxTypes.ITensorProto => ({
  name,
  dataType: FLOAT,
  dims,
  rawData: new Uint8Array(values.buffer, values.byteOffset, values.byteLength),
})

/**
 * y = L3(relu(L2(relu(L1(x))))), x float32 [N, layers[0]], y float32 [N, layers.at(-1)]. Different
 * seeds give different weights, hence different answers (versions a hot swap can tell apart).
 */
export function mlpModel(seed: number, layers: readonly number[] = MLP_LAYERS): Uint8Array {
  const next = seededFloats(seed)
  const initializer: OnnxTypes.ITensorProto[] = []
  const node: OnnxTypes.INodeProto[] = []
  let input = 'x'
  for (let l = 0; l < layers.length - 1; l++) {
    const fanIn = layers[l]!
    const fanOut = layers[l + 1]!
    const last = l === layers.length - 2
    // Kaiming-like scale, so that activations neither vanish nor blow up through the layers.
    initializer.push(floatTensor(`fc${l}.weight`, [fanOut, fanIn], Float32Array.from({ length: fanIn * fanOut }, () => (next() * 2 * Math.sqrt(6)) / Math.sqrt(fanIn))))
    initializer.push(floatTensor(`fc${l}.bias`, [fanOut], Float32Array.from({ length: fanOut }, () => next() * 0.1)))
    const gemm = last ? 'y' : `fc${l}`
    node.push({ opType: 'Gemm', input: [input, `fc${l}.weight`, `fc${l}.bias`], output: [gemm], attribute: [{ name: 'transB', type: onnx.AttributeProto.AttributeType.INT, i: 1 }] })
    if (!last) {
      node.push({ opType: 'Relu', input: [gemm], output: [`relu${l}`] })
      input = `relu${l}`
    }
  }
  return encodeModel(
    {
      name: 'mlp',
      initializer,
      node,
      input: [tensorValue('x', 'float32', ['N', layers[0]!])],
      output: [tensorValue('y', 'float32', ['N', layers.at(-1)!])],
    },
    { docString: `MLP ${layers.join('->')}, float32, seed ${seed}` },
  )
}
