/**
 * Model serving's runtime: tensors and their wire form, ONNX inspection, validation in a child
 * process, in-process serving sessions and dynamic batching. The only public entry of models/;
 * only this subsystem imports onnxruntime-node (session.ts and validator-child.ts).
 */
export {
  ELEMENT_TYPES,
  MAX_TENSOR_ELEMENTS,
  MAX_TENSOR_RANK,
  bytesPerElement,
  checkTensor,
  elementCount,
  formatShape,
  isElementType,
  tensorFromBytes,
  tensorFromStrings,
  tensorToBytes,
  type ElementType,
  type NumericType,
  type Tensor,
  type TensorData,
} from './tensor.ts'
export {
  UNNAMED_DIM,
  batchable,
  checkInputs,
  formatSpec,
  isDynamicDim,
  refuseUnservable,
  signatureFromOrt,
  type Dim,
  type OrtValueMetadata,
  type Signature,
  type TensorSpec,
} from './signature.ts'
export { elementTypeName, inspectOnnx, refuseExternalData, type OnnxInfo, type OnnxValue } from './onnx.ts'
export { MIN_VALIDATION_MEMORY_BYTES, validateModel, type ValidatedModel, type ValidationLimits } from './validate.ts'
export { loadSession, type ModelSession, type SessionOptions } from './session.ts'
export { ortSessionOptions } from './ort-options.ts'
export { Batcher, concatBatch, splitBatch, type Batch, type BatcherOptions, type Runner } from './batcher.ts'
