/** gRPC handlers of ModelService: translate messages and tensors, call the registry and the server. */
import type { MessageInitShape } from '@bufbuild/protobuf'
import { timestampFromMs } from '@bufbuild/protobuf/wkt'
import {
  ElementType as ElementTypeMsg,
  ModelService,
  VersionState,
  type DeploymentSchema,
  type ModelVersionSchema,
  type PredictRequest,
  type PredictResponseSchema,
  type SignatureSchema,
  type TensorSpecSchema,
} from '../../proto/gen/fabric/v1/model_pb.ts'
import type { Catalog, DeploymentEntry, ModelEntry } from '../catalog/index.ts'
import { CHUNK_BYTES } from '../datasets/index.ts'
import { FabricError } from '../errors/index.ts'
import type { ElementType, Signature, Tensor, TensorSpec } from '../models/index.ts'
import type { ModelRegistry, ModelServer, PredictCall, PredictResult } from '../serving/index.ts'
import type { ServedVersion } from '../sites/index.ts'
import type { ServiceImpl } from './adapter.ts'
import { splitFirst, toServiceError } from './adapter.ts'
import { ELEMENT_TYPE_MSG, tensorMsg, tensorOf } from './tensors.ts'

const STATE_MSG: Record<ServedVersion['state'], VersionState> = {
  waiting: VersionState.WAITING,
  loading: VersionState.LOADING,
  ready: VersionState.READY,
  failed: VersionState.FAILED,
}

/**
 * PredictStream: requests in flight on one call at most (answers keep the request order). Twice
 * the largest useful batch of most deployments, so that one stream can fill the next batch while
 * the current one runs.
 */
const STREAM_IN_FLIGHT = 128

/** A request's tensors, checked: each named once, with a type and dims that fit its data. */
function inputsOf(tensors: PredictRequest['inputs']): Record<string, Tensor> {
  const out: Record<string, Tensor> = {}
  for (const t of tensors) {
    if (!t.name) throw FabricError.invalidArgument('an input tensor has no name')
    if (t.name in out) throw FabricError.invalidArgument(`input "${t.name}" is given twice`, { details: { input: t.name } })
    out[t.name] = tensorOf(t, 'input')
  }
  return out
}

function callOf(req: PredictRequest): PredictCall {
  if (!req.model) throw FabricError.invalidArgument('predict: name the model')
  return {
    model: req.model,
    ...(req.version ? { version: req.version } : {}),
    ...(req.routingKey ? { routingKey: req.routingKey } : {}),
    inputs: inputsOf(req.inputs),
    ...(req.outputs.length ? { outputs: req.outputs } : {}),
  }
}

function resultMsg(r: PredictResult): MessageInitShape<typeof PredictResponseSchema> {
  return { version: r.version, site: r.site, node: r.node, outputs: Object.entries(r.outputs).map(([n, t]) => tensorMsg(n, t)) }
}

function specMsg(s: TensorSpec): MessageInitShape<typeof TensorSpecSchema> {
  return {
    name: s.name,
    type: ELEMENT_TYPE_MSG[s.type as ElementType] ?? ElementTypeMsg.UNSPECIFIED,
    shape: s.shape.map((d) => (typeof d === 'number' && d >= 0 ? { dim: { case: 'size' as const, value: BigInt(d) } } : { dim: { case: 'symbol' as const, value: typeof d === 'string' ? d : '?' } })),
    anyRank: s.unknownRank ?? false,
  }
}

function signatureMsg(s: Signature): MessageInitShape<typeof SignatureSchema> {
  return { inputs: s.inputs.map(specMsg), outputs: s.outputs.map(specMsg) }
}

export function modelVersionMsg(m: ModelEntry): MessageInitShape<typeof ModelVersionSchema> {
  return {
    name: m.name,
    version: m.version,
    description: m.description,
    metrics: m.metrics,
    trainedOn: m.trainedOn ? `${m.trainedOn.volume}@${m.trainedOn.snapshot}` : '',
    trainedOnSeq: BigInt(m.trainedOn?.seq ?? 0),
    sha256: m.sha256,
    size: BigInt(m.size),
    signature: signatureMsg(m.signature),
    path: m.path,
    producer: m.producer,
    opset: BigInt(m.opset),
    createdAt: timestampFromMs(m.createdMs),
  }
}

export function deploymentMsg(d: DeploymentEntry): MessageInitShape<typeof DeploymentSchema> {
  return {
    model: d.model,
    traffic: d.traffic,
    shadow: d.shadow ?? '',
    sites: d.sites,
    allSites: d.allSites,
    maxBatch: d.batching?.maxBatch ?? 0,
    maxDelayMs: d.batching?.maxDelayMs ?? 0,
    updatedAt: timestampFromMs(d.updatedMs),
  }
}

/**
 * Runs fn on each item of source with up to `limit` in flight and yields the results in the
 * source's order (a slow prediction holds back the answers after it, not the work on them).
 */
async function* ordered<T, R>(source: AsyncIterable<T>, fn: (item: T) => Promise<R>, limit: number): AsyncGenerator<R> {
  const it = source[Symbol.asyncIterator]()
  const pending: Array<Promise<R>> = []
  let done = false
  let reading: Promise<IteratorResult<T>> | undefined
  while (!done || pending.length > 0) {
    while (!done && pending.length < limit) {
      reading ??= it.next()
      // With answers waiting, take only requests that are there already; yield otherwise.
      const next = pending.length === 0 ? await reading : await Promise.race([reading, pending[0]!.then(() => undefined, () => undefined)])
      if (next === undefined) break
      reading = undefined
      if (next.done) done = true
      else pending.push(fn(next.value))
    }
    if (pending.length > 0) yield await pending.shift()!
  }
}

export function modelServiceImpl(registry: ModelRegistry, server: ModelServer, catalog: Catalog): ServiceImpl<typeof ModelService> {
  return {
    publishModel: async (reqs) => {
      const { first, rest } = await splitFirst(reqs)
      if (first?.msg.case !== 'header') throw FabricError.invalidArgument('model upload: the first message must be the header')
      const h = first.msg.value
      let trailer: string | undefined
      async function* content() {
        for await (const req of rest) {
          if (trailer !== undefined) throw FabricError.invalidArgument('model upload: nothing may follow the trailer')
          if (req.msg.case === 'trailer') trailer = req.msg.value.sha256
          else if (req.msg.case === 'data') {
            if (req.msg.value.length > CHUNK_BYTES) throw FabricError.invalidArgument(`model upload: a message carries ${req.msg.value.length} bytes; the limit is ${CHUNK_BYTES}`)
            yield req.msg.value
          } else throw FabricError.invalidArgument('model upload: only data and a trailer may follow the header')
        }
      }
      const m = await registry.publish(
        { name: h.name, version: h.version, description: h.description, metrics: h.metrics, trainedOn: h.trainedOn, size: h.size === undefined ? undefined : Number(h.size), sha256: h.sha256 || undefined, dataset: h.dataset },
        content(),
        () => (trailer ? { sha256: trailer } : {}),
      )
      return { model: modelVersionMsg(m) }
    },
    listModels: async (req) => {
      const names = new Map<string, string[]>()
      for (const m of catalog.listModels(req.tenant ? `${req.tenant}/` : '')) names.set(m.name, [...(names.get(m.name) ?? []), m.version])
      return {
        models: [...names].map(([name, versions]) => {
          const d = catalog.deployment(name)
          return { name, versions, ...(d ? { deployment: deploymentMsg(d) } : {}) }
        }),
      }
    },
    getModel: async (req) => {
      const versions = catalog.modelVersions(req.name)
      if (versions.length === 0) throw FabricError.notFound(`model ${req.name} does not exist`, { details: { model: req.name } })
      const picked = req.version ? versions.filter((m) => m.version === req.version) : versions
      if (picked.length === 0) throw FabricError.notFound(`model ${req.name} has no version ${req.version} (it has ${versions.map((m) => m.version).join(', ')})`, { details: { model: req.name, version: req.version } })
      const d = catalog.deployment(req.name)
      return { versions: picked.map(modelVersionMsg), ...(d ? { deployment: deploymentMsg(d) } : {}) }
    },
    deleteModelVersion: async (req) => {
      await registry.remove(req.name, req.version)
      return {}
    },
    deploy: async (req) => {
      const d = await registry.deploy({
        model: req.model,
        traffic: req.traffic.map((t) => ({ version: t.version, weight: t.weight })),
        shadow: req.shadow,
        sites: req.sites,
        allSites: req.allSites,
        maxBatch: req.maxBatch,
        maxDelayMs: req.maxDelayMs,
      })
      return { deployment: deploymentMsg(d) }
    },
    undeploy: async (req) => {
      const d = await registry.undeploy(req.model, req.sites)
      return d ? { deployment: deploymentMsg(d) } : {}
    },
    getModelStatus: async (req) => {
      const { deployment, nodes } = server.status(req.model)
      return {
        ...(deployment ? { deployment: deploymentMsg(deployment) } : {}),
        nodes: nodes.map(({ node: n, versions }) => ({
          site: n.site,
          node: n.node,
          connected: n.connected,
          versions: versions.map((v) => ({
            version: v.version,
            state: STATE_MSG[v.state],
            error: v.error ?? '',
            requests: BigInt(v.requests),
            errors: BigInt(v.errors),
            latencyP50Ms: v.p50Ms,
            latencyP99Ms: v.p99Ms,
            shadow: v.shadow,
            shadowDiffered: BigInt(v.differed),
          })),
        })),
      }
    },
    predict: async (req) => resultMsg(await server.predict(callOf(req))),
    predictStream: (reqs, ctx) =>
      ordered(
        reqs,
        async (req) => {
          try {
            if (!req.request) throw FabricError.invalidArgument('a stream message must carry a request')
            return { requestId: req.requestId, response: resultMsg(await server.predict(callOf(req.request))) }
          } catch (err) {
            const se = toServiceError(err, ctx.log, ctx.method)
            return { requestId: req.requestId, error: { code: se.code ?? 13, message: se.details ?? 'internal error' } }
          }
        },
        STREAM_IN_FLIGHT,
      ),
  }
}
