/** `fabric model ...`: publish ONNX models, deploy them to sites, watch them, ask them. */
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, stat } from 'node:fs/promises'
import path from 'node:path'
import { Command, InvalidArgumentError, Option } from 'commander'
import {
  ModelService,
  VersionState,
  type Deployment,
  type ModelVersion,
  type Signature,
  type TensorSpec,
} from '../proto/gen/fabric/v1/model_pb.ts'
import { FabricError } from '../node/errors/index.ts'
import { ELEMENT_TYPE_OF, tensorMsg, tensorOf } from '../node/api/tensors.ts'
import type { ElementType as Type } from '../node/models/index.ts'
import { serverOption, withClient } from './client.ts'
import { formatBytes, keyValues, outputOption, toJson, type OutputFormat } from './output.ts'
import { readTensorFile, tensorToJson, writeTensorFile } from './tensor-files.ts'
import { columns, iso, parseCount, writeLine } from './util.ts'

type Common = { server: string; output: OutputFormat }
const CHUNK = 256 * 1024

const TYPE_NAME = ELEMENT_TYPE_OF
const STATE_NAME: Record<VersionState, string> = {
  [VersionState.UNSPECIFIED]: '?',
  [VersionState.WAITING]: 'waiting',
  [VersionState.LOADING]: 'loading',
  [VersionState.READY]: 'ready',
  [VersionState.FAILED]: 'failed',
}

/** "tenant/name@version" -> [name, version]. */
function splitRef(ref: string): [string, string] {
  const at = ref.lastIndexOf('@')
  return at < 0 ? [ref, ''] : [ref.slice(0, at), ref.slice(at + 1)]
}

/** "KEY=VALUE" pairs, collected. */
function pair(what: string) {
  return (value: string, previous: Array<[string, string]> = []): Array<[string, string]> => {
    const eq = value.indexOf('=')
    if (eq <= 0 || eq === value.length - 1) throw new InvalidArgumentError(`expected ${what}, got ${JSON.stringify(value)}`)
    return [...previous, [value.slice(0, eq), value.slice(eq + 1)]]
  }
}

const list = (value: string) => value.split(',').map((s) => s.trim()).filter(Boolean)

function shapeText(s: TensorSpec): string {
  if (s.anyRank) return '(any shape)'
  return `[${s.shape.map((d) => (d.dim.case === 'size' ? String(d.dim.value) : d.dim.case === 'symbol' ? d.dim.value : '?')).join(',')}]`
}

const specJson = (s: TensorSpec) => ({ name: s.name, type: TYPE_NAME[s.type] ?? 'unknown', shape: s.anyRank ? null : s.shape.map((d) => (d.dim.case === 'size' ? Number(d.dim.value) : d.dim.case === 'symbol' ? d.dim.value : '?')) })

const signatureJson = (s: Signature | undefined) => ({ inputs: (s?.inputs ?? []).map(specJson), outputs: (s?.outputs ?? []).map(specJson) })

function versionJson(m: ModelVersion) {
  return {
    name: m.name,
    version: m.version,
    description: m.description,
    metrics: m.metrics,
    trainedOn: m.trainedOn || null,
    ...(m.trainedOn ? { trainedOnSeq: m.trainedOnSeq } : {}),
    sha256: m.sha256,
    size: m.size,
    path: m.path,
    producer: m.producer,
    opset: m.opset,
    createdAt: iso(m.createdAt),
    signature: signatureJson(m.signature),
  }
}

function deploymentJson(d: Deployment | undefined) {
  if (!d) return null
  return {
    model: d.model,
    traffic: d.traffic.map((t) => ({ version: t.version, weight: t.weight })),
    shadow: d.shadow || null,
    sites: d.allSites ? 'all' : d.sites,
    ...(d.maxBatch > 1 ? { maxBatch: d.maxBatch, maxDelayMs: d.maxDelayMs } : {}),
    updatedAt: iso(d.updatedAt),
  }
}

function deploymentText(d: Deployment | undefined): string {
  if (!d) return 'not deployed'
  const total = d.traffic.reduce((n, t) => n + t.weight, 0)
  const split = d.traffic.map((t) => `${t.version}=${Math.round((t.weight / total) * 1000) / 10}%`).join(' ')
  return `${split}${d.shadow ? `, shadow ${d.shadow}` : ''} at ${d.allSites ? 'all sites' : d.sites.join(', ')}${d.maxBatch > 1 ? `, batching up to ${d.maxBatch} rows / ${d.maxDelayMs} ms` : ''}`
}

/**
 * A file name for a tensor name: ONNX names may hold "/" or ":" ("dense/BiasAdd:0"); every
 * character outside [A-Za-z0-9._-] is percent-encoded, so the name can be read back from the file.
 */
export function tensorFileName(name: string): string {
  const safe = name.replace(/[^A-Za-z0-9._-]/g, (c) => encodeURIComponent(c).replace(/[!'()*]/g, (x) => `%${x.charCodeAt(0).toString(16).toUpperCase()}`))
  return `${safe === '.' || safe === '..' ? encodeURIComponent(safe).replace(/\./g, '%2E') : safe}.npy`
}

export function modelCommand(): Command {
  const cmd = new Command('model').description('models: publish ONNX versions, deploy them to sites, serve predictions next to the data')
  cmd
    .command('publish <name> <file>')
    .description('publish FILE (.onnx) as a new, immutable version of NAME (tenant/name): validated in onnxruntime first, then kept in the namespace')
    .option('--version <version>', 'the version (default: one more than the highest whole-number version)')
    .option('--description <text>', 'what this version is', '')
    .option('--metric <key=value>', 'a metric to record, e.g. auc=0.91 (repeatable)', pair('KEY=VALUE'), [])
    .option('--trained-on <volume@snapshot>', 'lineage: the snapshot it was trained on, e.g. /acme@train-2026-11')
    .option('--dataset <path>', 'the files dataset to keep its bytes in (default /<tenant>/models)')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (name: string, file: string, o: Common & { version?: string; description: string; metric: Array<[string, string]>; trainedOn?: string; dataset?: string }) => {
      const metrics: Record<string, number> = {}
      for (const [k, v] of o.metric) {
        const n = Number(v)
        if (v.trim() === '' || !Number.isFinite(n)) throw FabricError.invalidArgument(`--metric ${k}=${v}: the value must be a number`, { details: { metric: k } })
        metrics[k] = n
      }
      const st = await stat(file).catch(() => {
        throw FabricError.invalidArgument(`${file}: no such file`, { details: { file } })
      })
      if (!st.isFile()) throw FabricError.invalidArgument(`${file}: not a regular file`, { details: { file } })
      const hash = createHash('sha256')
      async function* requests() {
        yield {
          msg: {
            case: 'header' as const,
            value: { name, version: o.version ?? '', description: o.description, metrics, trainedOn: o.trainedOn ?? '', size: BigInt(st.size), dataset: o.dataset ?? '' },
          },
        }
        for await (const piece of createReadStream(file, { highWaterMark: CHUNK }) as AsyncIterable<Buffer>) {
          hash.update(piece)
          yield { msg: { case: 'data' as const, value: piece } }
        }
        yield { msg: { case: 'trailer' as const, value: { sha256: hash.digest('hex') } } }
      }
      const r = await withClient(ModelService, o.server, (c) => c.publishModel(requests()))
      const m = r.model!
      writeLine(o.output === 'json' ? toJson(versionJson(m)) : `published ${m.name} version ${m.version} (${formatBytes(m.size)}, sha256 ${m.sha256}; inputs ${m.signature?.inputs.map((i) => `${i.name} ${TYPE_NAME[i.type]} ${shapeText(i)}`).join(', ')})`)
    })
  cmd
    .command('ls')
    .description('list models, their versions and where they are deployed')
    .option('--tenant <tenant>', 'only this tenant')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (o: Common & { tenant?: string }) => {
      const r = await withClient(ModelService, o.server, (c) => c.listModels({ tenant: o.tenant ?? '' }))
      const rows = r.models.map((m) => ({ name: m.name, versions: m.versions, deployment: deploymentJson(m.deployment) }))
      writeLine(o.output === 'json' ? toJson(rows) : columns(['MODEL', 'VERSIONS', 'DEPLOYED'], r.models.map((m) => [m.name, m.versions.join(','), deploymentText(m.deployment)])))
    })
  cmd
    .command('show <ref>')
    .description('show a model (NAME) or one version (NAME@VERSION): signature, metrics, lineage, deployment')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (ref: string, o: Common) => {
      const [name, version] = splitRef(ref)
      const r = await withClient(ModelService, o.server, (c) => c.getModel({ name, version }))
      if (o.output === 'json') {
        writeLine(toJson({ versions: r.versions.map(versionJson), deployment: deploymentJson(r.deployment) }))
        return
      }
      const blocks = r.versions.map((m) =>
        keyValues([
          ['model', `${m.name}@${m.version}`],
          ...(m.description ? [['description', m.description] as const] : []),
          ['size', `${formatBytes(m.size)} (sha256 ${m.sha256})`],
          ['stored at', m.path],
          ['producer', `${m.producer || '?'} (opset ${m.opset})`],
          ['published', iso(m.createdAt)],
          ['trained on', m.trainedOn ? `${m.trainedOn} (position ${m.trainedOnSeq})` : '-'],
          ['metrics', Object.entries(m.metrics).map(([k, v]) => `${k}=${v}`).join(' ') || '-'],
          ...(m.signature?.inputs ?? []).map((i) => [`input ${JSON.stringify(i.name)}`, `${TYPE_NAME[i.type] ?? 'unknown'} ${shapeText(i)}`] as const),
          ...(m.signature?.outputs ?? []).map((i) => [`output ${JSON.stringify(i.name)}`, `${TYPE_NAME[i.type] ?? 'unknown'} ${shapeText(i)}`] as const),
        ]),
      )
      writeLine([...blocks, `deployment  ${deploymentText(r.deployment)}`].join('\n\n'))
    })
  cmd
    .command('rm <ref>')
    .description('remove a version (NAME@VERSION) and its bytes; refused while it is deployed')
    .addOption(serverOption())
    .action(async (ref: string, o: { server: string }) => {
      const [name, version] = splitRef(ref)
      if (!version) throw FabricError.invalidArgument(`${ref}: name the version to remove (NAME@VERSION)`)
      await withClient(ModelService, o.server, (c) => c.deleteModelVersion({ name, version }))
      writeLine(`removed ${name} version ${version}`)
    })
  cmd
    .command('deploy <name>')
    .description('deploy versions of NAME: one version, or a traffic split; to sites or all sites; optionally a shadow and batching. Serving never stops while it changes.')
    .option('--version <version>', 'the version that takes all the traffic')
    .option('--traffic <splits>', 'a traffic split, e.g. 3=90,4=10 (version=weight, comma-separated)')
    .option('--shadow <version>', 'also run this version on every request and record its results (not returned)')
    .option('--sites <sites>', 'the sites to serve it at (comma-separated); default: the current deployment\'s')
    .option('--all-sites', 'serve it at every site that holds its bytes')
    .addOption(new Option('--max-batch <rows>', 'dynamic batching: run requests arriving together as one batch of up to this many rows (0: off)').argParser(parseCount))
    .addOption(new Option('--max-delay-ms <ms>', 'dynamic batching: how long a request may wait for others').argParser(parseCount))
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (name: string, o: Common & { version?: string; traffic?: string; shadow?: string; sites?: string; allSites?: boolean; maxBatch?: number; maxDelayMs?: number }) => {
      if (o.version && o.traffic) throw FabricError.invalidArgument('give --version or --traffic, not both')
      if (!o.version && !o.traffic) throw FabricError.invalidArgument('name what to deploy: --version V, or --traffic V1=90,V2=10')
      if (o.sites !== undefined && o.allSites) throw FabricError.invalidArgument('give --sites or --all-sites, not both')
      const traffic = o.version
        ? [{ version: o.version, weight: 1 }]
        : list(o.traffic!).map((part) => {
            const [v, w] = part.split('=')
            if (!v || !w || !/^\d+$/.test(w)) throw FabricError.invalidArgument(`--traffic ${o.traffic}: expected VERSION=WEIGHT pairs, e.g. 3=90,4=10; got ${JSON.stringify(part)}`)
            return { version: v, weight: Number(w) }
          })
      const r = await withClient(ModelService, o.server, (c) =>
        c.deploy({
          model: name,
          traffic,
          shadow: o.shadow ?? '',
          sites: o.sites === undefined ? [] : list(o.sites),
          allSites: o.allSites ?? false,
          ...(o.maxBatch !== undefined ? { maxBatch: o.maxBatch } : {}),
          ...(o.maxDelayMs !== undefined ? { maxDelayMs: o.maxDelayMs } : {}),
        }),
      )
      writeLine(o.output === 'json' ? toJson(deploymentJson(r.deployment)) : `deployed ${name}: ${deploymentText(r.deployment)}`)
    })
  cmd
    .command('undeploy <name>')
    .description('stop serving NAME (everywhere, or at --sites only)')
    .option('--sites <sites>', 'only at these sites (comma-separated)')
    .addOption(serverOption())
    .action(async (name: string, o: { server: string; sites?: string }) => {
      const r = await withClient(ModelService, o.server, (c) => c.undeploy({ model: name, sites: o.sites ? list(o.sites) : [] }))
      writeLine(r.deployment ? `${name} now ${deploymentText(r.deployment)}` : `undeployed ${name}`)
    })
  cmd
    .command('status <name>')
    .description('per node of the sites NAME is deployed to: versions loaded, their state and errors, requests and latency')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (name: string, o: Common) => {
      const r = await withClient(ModelService, o.server, (c) => c.getModelStatus({ model: name }))
      const nodes = r.nodes.map((n) => ({
        site: n.site,
        node: n.node,
        connected: n.connected,
        versions: n.versions.map((v) => ({
          version: v.version,
          state: STATE_NAME[v.state],
          ...(v.error ? { error: v.error } : {}),
          shadow: v.shadow,
          requests: v.requests,
          errors: v.errors,
          latencyP50Ms: v.latencyP50Ms,
          latencyP99Ms: v.latencyP99Ms,
          ...(v.shadow ? { shadowDiffered: v.shadowDiffered } : {}),
        })),
      }))
      if (o.output === 'json') {
        writeLine(toJson({ deployment: deploymentJson(r.deployment), nodes }))
        return
      }
      const rows = nodes.flatMap((n) =>
        n.versions.length === 0
          ? [[n.site, n.node, n.connected ? 'yes' : 'no', '-', 'not loaded', '-', '-', '-', '']]
          : n.versions.map((v) => [
              n.site,
              n.node,
              n.connected ? 'yes' : 'no',
              `${v.version}${v.shadow ? ' (shadow)' : ''}`,
              v.state,
              String(v.requests),
              String(v.errors),
              v.requests ? `${v.latencyP50Ms.toFixed(2)}/${v.latencyP99Ms.toFixed(2)}` : '-',
              v.error ?? (v.shadow && v.requests ? `${v.shadowDiffered ?? 0n} differed` : ''),
            ]),
      )
      writeLine(`${name}: ${deploymentText(r.deployment)}\n${columns(['SITE', 'NODE', 'CONNECTED', 'VERSION', 'STATE', 'REQUESTS', 'ERRORS', 'P50/P99 MS', 'NOTE'], rows)}`)
    })
  cmd
    .command('predict <ref>')
    .description('run NAME (or NAME@VERSION) on input tensors from .npy or .json files (nested arrays)')
    .requiredOption('--input <name=file>', 'an input tensor and the file holding it (repeatable), e.g. --input input.1=x.npy', pair('NAME=FILE'), [])
    .option('--key <key>', 'routing key: the same key always gets the same version')
    .option('--out <dir>', 'write each output to DIR/<output name>.npy instead of printing it')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (ref: string, o: Common & { input: Array<[string, string]>; key?: string; out?: string }) => {
      const [name, version] = splitRef(ref)
      const r = await withClient(ModelService, o.server, async (c) => {
        // JSON files carry no element type: the signature gives it.
        const needsTypes = o.input.some(([, f]) => f.toLowerCase().endsWith('.json'))
        const types = new Map<string, Type>()
        if (needsTypes) {
          const m = await c.getModel({ name, version })
          const pick = version ? m.versions[0] : (m.versions.find((v) => v.version === m.deployment?.traffic[0]?.version) ?? m.versions[m.versions.length - 1])
          for (const i of pick?.signature?.inputs ?? []) {
            const t = TYPE_NAME[i.type]
            if (t) types.set(i.name, t)
          }
        }
        const inputs = []
        for (const [input, file] of o.input) {
          const type = types.get(input)
          if (file.toLowerCase().endsWith('.json') && !type) throw FabricError.invalidArgument(`--input ${input}=${file}: the model has no input named ${JSON.stringify(input)} (it has ${[...types.keys()].map((k) => JSON.stringify(k)).join(', ')})`, { details: { input } })
          inputs.push(tensorMsg(input, await readTensorFile(file, type)))
        }
        return c.predict({ model: name, version, routingKey: o.key ?? '', inputs })
      })
      const outputs = r.outputs.map((t) => ({ name: t.name, tensor: tensorOf(t, 'output') }))
      if (o.out) {
        await mkdir(o.out, { recursive: true })
        for (const { name: n, tensor } of outputs) await writeTensorFile(path.join(o.out, tensorFileName(n)), tensor)
      }
      if (o.output === 'json') {
        writeLine(
          toJson({
            version: r.version,
            site: r.site,
            node: r.node,
            outputs: Object.fromEntries(outputs.map(({ name: n, tensor }) => [n, { type: tensor.type, dims: tensor.dims, ...(o.out ? { file: path.join(o.out, tensorFileName(n)) } : { data: tensorToJson(tensor) }) }])),
          }),
        )
        return
      }
      const lines = [`version ${r.version} (site ${r.site}, node ${r.node})`]
      for (const { name: n, tensor } of outputs) {
        lines.push(o.out ? `${JSON.stringify(n)} ${tensor.type} [${tensor.dims.join(',')}] -> ${path.join(o.out, tensorFileName(n))}` : `${JSON.stringify(n)} ${tensor.type} [${tensor.dims.join(',')}]: ${JSON.stringify(tensorToJson(tensor))}`)
      }
      writeLine(lines.join('\n'))
    })
  return cmd
}
