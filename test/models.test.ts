/**
 * Models close to the data, on one node: publish ONNX versions, deploy, predict through the CLI
 * (.npy and .json files) and gRPC over every element type; what is refused and why; a hot swap
 * under steady load without one failed request; A/B splits, routing keys, shadows; batching and
 * the streaming form. Real onnxruntime, real nodes, real gRPC.
 */
import t from 'tap'
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { createClient, type Client } from '../node/api/index.ts'
import { isFabricError } from '../node/errors/index.ts'
import { tensorFromBytes, tensorToBytes, type Tensor } from '../node/models/index.ts'
import { ElementType, ModelService, type PredictResponse } from '../proto/gen/fabric/v1/model_pb.ts'
import { decodeNpy, encodeNpy } from '../cli/tensor-files.ts'
import { poll, runCli, runCliOk, startNode, tempDir, type NodeProcess } from './harness/index.ts'
import { ALL_TYPES_INPUTS, allTypesModel, externalDataModel, garbageBytes, memoryHungryModel, scaleModel, stringModel, unknownOpModel } from './harness/onnx.ts'

const cli = (node: NodeProcess, ...args: string[]) => runCliOk([...args, '--server', node.api])
const json = async (node: NodeProcess, ...args: string[]) => JSON.parse((await cli(node, ...args, '-o', 'json')).stdout)

const TYPES: Record<string, ElementType> = {
  float32: ElementType.FLOAT32,
  float64: ElementType.FLOAT64,
  int8: ElementType.INT8,
  int16: ElementType.INT16,
  int32: ElementType.INT32,
  int64: ElementType.INT64,
  uint8: ElementType.UINT8,
  uint16: ElementType.UINT16,
  uint32: ElementType.UINT32,
  uint64: ElementType.UINT64,
  bool: ElementType.BOOL,
  string: ElementType.STRING,
}

const floats = (dims: number[], values: number[]): Tensor => ({ type: 'float32', dims, data: Float32Array.from(values) })

function msg(name: string, tensor: Tensor) {
  const base = { name, type: TYPES[tensor.type]!, dims: tensor.dims.map(BigInt) }
  return tensor.type === 'string' ? { ...base, strings: tensor.data as string[] } : { ...base, data: tensorToBytes(tensor) }
}

function output(r: PredictResponse, name: string): number[] {
  const o = r.outputs.find((x) => x.name === name)
  if (!o) throw new Error(`no output ${name}`)
  return [...(tensorFromBytes('float32', o.dims.map(Number), o.data).data as Float32Array)]
}

async function writeModel(dir: string, name: string, bytes: Uint8Array): Promise<string> {
  const file = path.join(dir, name)
  await writeFile(file, bytes)
  return file
}

/** Publishes scale models acme/scale versions 1..n (version v multiplies by v) and deploys version 1. */
async function scaleVersions(node: NodeProcess, dir: string, n: number, deploy = true): Promise<void> {
  for (let v = 1; v <= n; v++) await cli(node, 'model', 'publish', 'acme/scale', await writeModel(dir, `scale${v}.onnx`, scaleModel(v)), '--version', String(v))
  if (deploy) await cli(node, 'model', 'deploy', 'acme/scale', '--version', '1', '--all-sites')
}

/** Waits until a prediction of `model` succeeds at the node (its versions are loaded). */
function ready(client: Client<typeof ModelService>, model: string, inputs: ReturnType<typeof msg>[], version = ''): Promise<PredictResponse> {
  return poll(`${model} to serve`, () => client.predict({ model, version, inputs }).catch(() => undefined), 30_000, 100)
}

t.test('publish, show, deploy and predict through the CLI, with .json and .npy files', async (t) => {
  const node = await startNode(t)
  const dir = await tempDir(t)
  const published = await json(node, 'model', 'publish', 'acme/scale', await writeModel(dir, 's.onnx', scaleModel(2)), '--description', 'doubles', '--metric', 'auc=0.91', '--metric', 'loss=0.2')
  t.equal(published.version, '1', 'the first version is 1')
  t.equal(published.path.startsWith('/acme/models/scale/1-'), true, `kept in the namespace (${published.path})`)
  t.same(published.signature.inputs, [{ name: 'x', type: 'float32', shape: ['N', 4] }], 'its signature, symbolic dim included')
  t.same(published.metrics, { auc: 0.91, loss: 0.2 })
  // The bytes are a file of the namespace like any other.
  const stored = await json(node, 'file', 'stat', published.path)
  t.equal(stored.sha256, published.sha256, 'the stored file is the model')
  t.equal((await json(node, 'model', 'publish', 'acme/scale', path.join(dir, 's.onnx'))).version, '2', 'the next version is 2')
  const shown = await json(node, 'model', 'show', 'acme/scale@1')
  t.equal(shown.versions.length, 1)
  t.equal(shown.versions[0].description, 'doubles')
  t.equal(shown.deployment, null, 'not deployed yet')
  t.same((await json(node, 'model', 'ls')).map((m: { name: string; versions: string[] }) => [m.name, m.versions]), [['acme/scale', ['1', '2']]])

  const notDeployed = await runCli(['model', 'predict', 'acme/scale', '--input', `x=${dir}/none.json`, '--server', node.api])
  t.equal(notDeployed.code, 3, 'an input file that does not exist: NOT_FOUND')
  await writeFile(path.join(dir, 'x.json'), JSON.stringify([[1, 2, 3, 4], [0.5, 0, -1, 8]]))
  const refused = await runCli(['model', 'predict', 'acme/scale', '--input', `x=${dir}/x.json`, '--server', node.api])
  t.equal(refused.code, 8, 'not deployed: FAILED_PRECONDITION')
  t.match(refused.stderr, /model acme\/scale is not deployed/)

  const deployed = await json(node, 'model', 'deploy', 'acme/scale', '--version', '1', '--sites', 'local')
  t.same(deployed.traffic, [{ version: '1', weight: 1 }])
  t.same(deployed.sites, ['local'])
  const answer = await poll('the model to answer', async () => {
    const r = await runCli(['model', 'predict', 'acme/scale', '--input', `x=${dir}/x.json`, '-o', 'json', '--server', node.api])
    return r.code === 0 ? JSON.parse(r.stdout) : undefined
  }, 30_000, 200)
  t.equal(answer.version, '1')
  t.equal(answer.site, 'local')
  t.same(answer.outputs.y, { type: 'float32', dims: [2, 4], data: [[2, 4, 6, 8], [1, 0, -2, 16]] }, 'y = 2x')

  // .npy in, .npy out.
  await writeFile(path.join(dir, 'x.npy'), encodeNpy(floats([1, 4], [1, 1, 1, 1])))
  const out = path.join(dir, 'out')
  const text = await cli(node, 'model', 'predict', 'acme/scale@1', '--input', `x=${dir}/x.npy`, '--out', out)
  t.match(text.stdout, /version 1 \(site local/)
  const y = decodeNpy(await readFile(path.join(out, 'y.npy')))
  t.same([...(y.data as Float32Array)], [2, 2, 2, 2], 'the output written as .npy')
  t.same(y.dims, [1, 4])

  const status = await json(node, 'model', 'status', 'acme/scale')
  const mine = status.nodes.find((n: { node: string }) => n.node === node.nodeId)
  t.ok(mine, 'this node is listed')
  const v1 = await poll('status to count the requests', async () => {
    const s = await json(node, 'model', 'status', 'acme/scale')
    const v = s.nodes.find((n: { node: string }) => n.node === node.nodeId)?.versions.find((x: { version: string }) => x.version === '1')
    return v && v.requests >= 2 ? v : undefined
  }, 10_000, 200)
  t.equal(v1.state, 'ready')
  t.ok(v1.latencyP50Ms > 0, 'a latency is reported')
  const metrics = await (await fetch(`http://${node.http}/metrics`)).text()
  t.match(metrics, /fabric_model_requests_total\{model="acme\/scale",version="1",code="OK"\} [1-9]/, 'Prometheus counts the requests per version')

  // Versions are immutable; a deployed one cannot be removed.
  const again = await runCli(['model', 'publish', 'acme/scale', path.join(dir, 's.onnx'), '--version', '1', '--server', node.api])
  t.equal(again.code, 4, 'publishing an existing version: ALREADY_EXISTS')
  const rm = await runCli(['model', 'rm', 'acme/scale@1', '--server', node.api])
  t.equal(rm.code, 8, 'removing a deployed version: FAILED_PRECONDITION')
  t.match(rm.stderr, /is deployed/)
  await cli(node, 'model', 'rm', 'acme/scale@2')
  t.equal((await runCli(['file', 'stat', (await json(node, 'model', 'show', 'acme/scale@1')).versions[0].path.replace('/1-', '/2-'), '--server', node.api])).code, 3, 'the removed version has no bytes left')
  await cli(node, 'model', 'undeploy', 'acme/scale')
  await cli(node, 'model', 'rm', 'acme/scale@1')
  t.same(await json(node, 'model', 'ls'), [], 'nothing left')
})

t.test('every element type, tensor names like "0" and "input.1", and strings, through gRPC', async (t) => {
  const node = await startNode(t)
  const dir = await tempDir(t)
  await cli(node, 'model', 'publish', 'lab/types', await writeModel(dir, 'types.onnx', allTypesModel()))
  await cli(node, 'model', 'publish', 'lab/lower', await writeModel(dir, 'lower.onnx', stringModel()))
  await cli(node, 'model', 'deploy', 'lab/types', '--version', '1', '--all-sites')
  await cli(node, 'model', 'deploy', 'lab/lower', '--version', '1', '--all-sites')
  const client = createClient(ModelService, node.api)
  t.teardown(() => client.close())

  const N = 2
  const values: Record<string, Tensor> = {
    '0': { type: 'float32', dims: [N, 2], data: Float32Array.from([1.5, -2, 3.25, 1e-8]) },
    'input.1': { type: 'float64', dims: [N, 2], data: Float64Array.from([Math.PI, -0, 1e300, 5]) },
    int8: { type: 'int8', dims: [], data: Int8Array.from([-128]) },
    int16: { type: 'int16', dims: [2, 3], data: Int16Array.from([-32768, 0, 1, 2, 3, 32767]) },
    int32: { type: 'int32', dims: [N, 3], data: Int32Array.from([-(2 ** 31), 0, 1, 2, 3, 2 ** 31 - 1]) },
    int64: { type: 'int64', dims: [N], data: BigInt64Array.from([-(2n ** 63n), 2n ** 63n - 1n]) },
    uint8: { type: 'uint8', dims: [3, 2], data: Uint8Array.from([0, 1, 2, 253, 254, 255]) },
    uint16: { type: 'uint16', dims: [2, 2, 1], data: Uint16Array.from([0, 1, 65534, 65535]) },
    uint32: { type: 'uint32', dims: [N, 2], data: Uint32Array.from([0, 1, 2 ** 32 - 2, 2 ** 32 - 1]) },
    uint64: { type: 'uint64', dims: [N, 2], data: BigUint64Array.from([0n, 1n, 2n ** 64n - 2n, 2n ** 64n - 1n]) },
    bool: { type: 'bool', dims: [N, 2], data: Uint8Array.from([1, 0, 0, 1]) },
    string: { type: 'string', dims: [N, 2], data: ['a', 'Ünïcode ✓', '', 'x'.repeat(1000)] },
  }
  const inputs = Object.entries(values).map(([name, tensor]) => msg(name, tensor))
  const r = await ready(client, 'lab/types', inputs)
  for (const spec of ALL_TYPES_INPUTS) {
    const sent = values[spec.name]!
    const got = r.outputs.find((o) => o.name === `${spec.type}_out`)
    t.ok(got, `output ${spec.type}_out`)
    t.same(got?.dims.map(Number), sent.dims, `${spec.type}: dims`)
    t.equal(got?.type, TYPES[spec.type], `${spec.type}: element type`)
    if (sent.type === 'string') t.same(got?.strings, sent.data, 'strings: the same strings back')
    else t.same(Buffer.from(got!.data), Buffer.from(tensorToBytes(sent)), `${spec.type}: the same bytes back`)
  }
  // Only some outputs.
  const some = await client.predict({ model: 'lab/types', inputs, outputs: ['int8_out', 'string_out'] })
  t.same(some.outputs.map((o) => o.name).sort(), ['int8_out', 'string_out'], 'outputs asked for')
  const lower = await ready(client, 'lab/lower', [msg('text', { type: 'string', dims: [2], data: ['HeLLo', 'WORLD'] })])
  t.same(lower.outputs[0]?.strings, ['hello', 'world'], 'onnxruntime really processed the strings')

  // The CLI with --out writes outputs named "0"-style and "float32_out" as files.
  await writeFile(path.join(dir, 'zero.npy'), encodeNpy(values['0']!))
  const out = path.join(dir, 'out')
  const cliInputs = Object.keys(values).flatMap((name) => {
    const file = path.join(dir, `in-${encodeURIComponent(name)}.npy`)
    return ['--input', `${name}=${file}`]
  })
  for (const [name, tensor] of Object.entries(values)) await writeFile(path.join(dir, `in-${encodeURIComponent(name)}.npy`), encodeNpy(tensor))
  await cli(node, 'model', 'predict', 'lab/types', ...cliInputs, '--out', out)
  const files = (await readdir(out)).sort()
  t.same(files, ALL_TYPES_INPUTS.map((i) => `${i.type}_out.npy`).sort(), 'one .npy per output')
  const back = decodeNpy(await readFile(path.join(out, 'uint64_out.npy')))
  t.same([...(back.data as BigUint64Array)], [...(values['uint64']!.data as BigUint64Array)], 'uint64 survives .npy both ways')
})

t.test('what is refused, with the right status, and nothing stored', async (t) => {
  const node = await startNode(t, { config: { models: { validation_memory: '256MiB', validation_timeout: '30s' } } })
  const dir = await tempDir(t)
  const publish = (bytes: Uint8Array, name = 'acme/bad') => writeModel(dir, 'm.onnx', bytes).then((f) => runCli(['model', 'publish', name, f, '--server', node.api]))
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ['not ONNX', garbageBytes(), /not an ONNX model/],
    ['an operator onnxruntime does not know', unknownOpModel(), /does not load in onnxruntime/],
    ['external data', externalDataModel('../../etc/passwd'), /external data file \.\.\/\.\.\/etc\/passwd/],
    ['memory beyond the limit while loading', memoryHungryModel(), /memory/],
  ]
  for (const [what, bytes, why] of cases) {
    const r = await publish(bytes)
    t.equal(r.code, 2, `${what}: INVALID_ARGUMENT`)
    t.match(r.stderr, why, `${what}: says why (${r.stderr.trim()})`)
  }
  t.same(await json(node, 'model', 'ls'), [], 'no model recorded')
  t.equal((await runCli(['file', 'ls', '/acme/models', '--server', node.api])).code === 0 ? (await json(node, 'file', 'ls', '/acme/models')).length : 0, 0, 'no bytes stored')
  t.equal((await publish(scaleModel(1), 'Acme/Scale')).code, 2, 'a bad model name: INVALID_ARGUMENT')
  const badVersion = await runCli(['model', 'publish', 'acme/scale', path.join(dir, 'm.onnx'), '--version', '../1', '--server', node.api])
  t.equal(badVersion.code, 2, 'a bad version: INVALID_ARGUMENT')
  const badLineage = await runCli(['model', 'publish', 'acme/scale', path.join(dir, 'm.onnx'), '--trained-on', '/nope@s1', '--server', node.api])
  t.equal(badLineage.code, 3, 'lineage naming a volume that does not exist: NOT_FOUND')

  // A snapshot as lineage.
  await cli(node, 'volume', 'create', '/acme')
  await cli(node, 'snap', 'create', '/acme', '--name', 'train-1')
  await writeFile(path.join(dir, 'ok.onnx'), scaleModel(3))
  const withLineage = await json(node, 'model', 'publish', 'acme/scale', path.join(dir, 'ok.onnx'), '--trained-on', '/acme@train-1')
  t.equal(withLineage.trainedOn, '/acme@train-1')
  t.ok(withLineage.trainedOnSeq > 0, 'with the snapshot position')

  // Deploy checks.
  t.equal((await runCli(['model', 'deploy', 'acme/scale', '--version', '9', '--all-sites', '--server', node.api])).code, 3, 'an unknown version: NOT_FOUND')
  t.equal((await runCli(['model', 'deploy', 'acme/nope', '--version', '1', '--all-sites', '--server', node.api])).code, 3, 'an unknown model: NOT_FOUND')
  t.equal((await runCli(['model', 'deploy', 'acme/scale', '--version', '1', '--server', node.api])).code, 2, 'a first deployment without sites: INVALID_ARGUMENT')
  t.equal((await runCli(['model', 'deploy', 'acme/scale', '--traffic', '1=x', '--all-sites', '--server', node.api])).code, 2, 'a bad split: INVALID_ARGUMENT')

  // Predict checks, against the signature.
  await cli(node, 'model', 'deploy', 'acme/scale', '--version', '1', '--all-sites')
  const client = createClient(ModelService, node.api)
  t.teardown(() => client.close())
  await ready(client, 'acme/scale', [msg('x', floats([1, 4], [1, 2, 3, 4]))])
  const bad: Array<[string, ReturnType<typeof msg>[], RegExp]> = [
    ['a missing input', [], /missing input "x"/i],
    ['an unknown input', [msg('x', floats([1, 4], [1, 2, 3, 4])), msg('z', floats([1], [1]))], /"z"/],
    ['the wrong element type', [msg('x', { type: 'int32', dims: [1, 4], data: Int32Array.from([1, 2, 3, 4]) })], /float32/],
    ['the wrong rank', [msg('x', floats([4], [1, 2, 3, 4]))], /rank|dims/i],
    ['a fixed dim that differs', [msg('x', floats([1, 3], [1, 2, 3]))], /4/],
    ['dims that do not match the data', [{ ...msg('x', floats([1, 4], [1, 2, 3, 4])), dims: [2n, 4n] }], /bytes/],
  ]
  for (const [what, inputs, why] of bad) {
    const err = await client.predict({ model: 'acme/scale', inputs }).then(() => undefined, (e: unknown) => e)
    t.ok(isFabricError(err, 'INVALID_ARGUMENT'), `${what}: INVALID_ARGUMENT`)
    t.match(String((err as Error)?.message), why, `${what}: ${(err as Error)?.message}`)
  }
  const unknown = await client.predict({ model: 'acme/none', inputs: [] }).then(() => undefined, (e: unknown) => e)
  t.ok(isFabricError(unknown, 'NOT_FOUND'), 'a model that does not exist: NOT_FOUND')
  const pinned = await client.predict({ model: 'acme/scale', version: '7', inputs: [msg('x', floats([1, 4], [1, 2, 3, 4]))] }).then(() => undefined, (e: unknown) => e)
  t.ok(isFabricError(pinned, 'NOT_FOUND'), 'a version that does not exist: NOT_FOUND')
})

t.test('a hot swap under steady load: not one request fails, and the answers move to the new version', async (t) => {
  const node = await startNode(t)
  const dir = await tempDir(t)
  await scaleVersions(node, dir, 3)
  const client = createClient(ModelService, node.api)
  t.teardown(() => client.close())
  const x = floats([1, 4], [1, 1, 1, 1])
  await ready(client, 'acme/scale', [msg('x', x)])

  let running = true
  let failures = 0
  let answered = 0
  const errors: string[] = []
  const seen: string[] = []
  const loop = async () => {
    while (running) {
      try {
        const r = await client.predict({ model: 'acme/scale', inputs: [msg('x', x)] })
        const y = output(r, 'y')[0]
        if (y !== Number(r.version)) throw new Error(`version ${r.version} answered ${y}`)
        if (seen[seen.length - 1] !== r.version) seen.push(r.version)
        answered++
      } catch (err) {
        failures++
        if (errors.length < 5) errors.push(String(err))
      }
    }
  }
  const loops = Array.from({ length: 4 }, loop)
  const servedBy = (version: string) => poll(`version ${version} to answer`, () => seen[seen.length - 1] === version || undefined, 30_000, 20)
  await servedBy('1')
  await cli(node, 'model', 'deploy', 'acme/scale', '--version', '2')
  await servedBy('2')
  // With batching, and then a rollback.
  await cli(node, 'model', 'deploy', 'acme/scale', '--version', '3', '--max-batch', '8', '--max-delay-ms', '2')
  await servedBy('3')
  await cli(node, 'model', 'deploy', 'acme/scale', '--version', '1', '--max-batch', '0')
  await servedBy('1')
  const before = answered
  await poll('a few more answers after the last swap', () => answered > before + 50 || undefined, 10_000, 20)
  running = false
  await Promise.all(loops)
  t.equal(failures, 0, `no request failed (${answered} answered${errors.length ? `; ${errors.join('; ')}` : ''})`)
  t.same(seen.filter((v, i) => seen.indexOf(v) === i), ['1', '2', '3'], `answers moved 1 -> 2 -> 3 -> 1 (${seen.join(' ')})`)
  t.equal(seen[seen.length - 1], '1', 'the rollback took')
  // The versions no longer deployed were unloaded (as the node's next heartbeats tell).
  const status = await poll('versions 2 and 3 to be unloaded', async () => {
    const s = await json(node, 'model', 'status', 'acme/scale')
    const versions = s.nodes.find((n: { node: string }) => n.node === node.nodeId)?.versions.map((v: { version: string }) => v.version)
    return versions?.join() === '1' ? versions : undefined
  }, 15_000, 200)
  t.same(status, ['1'], 'only version 1 is loaded')
})

t.test('A/B splits in proportion, routing keys stick, the shadow runs and is recorded', async (t) => {
  const node = await startNode(t)
  const dir = await tempDir(t)
  await scaleVersions(node, dir, 3, false)
  await cli(node, 'model', 'deploy', 'acme/scale', '--traffic', '1=80,2=20', '--shadow', '3', '--all-sites')
  const client = createClient(ModelService, node.api)
  t.teardown(() => client.close())
  const inputs = [msg('x', floats([1, 4], [1, 1, 1, 1]))]
  await ready(client, 'acme/scale', inputs)
  await poll('the shadow to be loaded', async () => {
    const s = await json(node, 'model', 'status', 'acme/scale')
    return s.nodes[0]?.versions.some((v: { version: string; state: string }) => v.version === '3' && v.state === 'ready') || undefined
  }, 20_000, 200)

  const counts: Record<string, number> = {}
  const N = 2000
  for (let i = 0; i < N; i += 50) {
    const batch = await Promise.all(Array.from({ length: 50 }, () => client.predict({ model: 'acme/scale', inputs })))
    for (const r of batch) {
      counts[r.version] = (counts[r.version] ?? 0) + 1
      t.not(r.version, '3', 'the shadow never answers')
      if (output(r, 'y')[0] !== Number(r.version)) t.fail(`version ${r.version} gave ${output(r, 'y')[0]}`)
    }
  }
  const share = (counts['2'] ?? 0) / N
  t.ok(share > 0.15 && share < 0.25, `version 2 got ${(share * 100).toFixed(1)} % of ${N} requests (20 % asked; ${JSON.stringify(counts)})`)

  // The same key, the same version; different keys spread over both.
  const byKey = new Map<string, Set<string>>()
  for (let k = 0; k < 60; k++) {
    for (let i = 0; i < 4; i++) {
      const r = await client.predict({ model: 'acme/scale', inputs, routingKey: `customer-${k}` })
      const set = byKey.get(`customer-${k}`) ?? new Set()
      set.add(r.version)
      byKey.set(`customer-${k}`, set)
    }
  }
  t.ok([...byKey.values()].every((s) => s.size === 1), 'every key got one version, every time')
  const keyed = [...byKey.values()].map((s) => [...s][0])
  t.ok(keyed.includes('1') && keyed.includes('2'), `keys spread over both versions (${keyed.filter((v) => v === '2').length} of 60 on 2)`)

  // Pinning a version, the shadow's included.
  t.equal((await client.predict({ model: 'acme/scale', version: '3', inputs })).version, '3', 'a pinned version answers')

  const shadow = await poll('the shadow to be counted', async () => {
    const s = await json(node, 'model', 'status', 'acme/scale')
    const v = s.nodes[0]?.versions.find((x: { version: string }) => x.version === '3')
    return v && v.requests >= N ? v : undefined
  }, 15_000, 200)
  t.equal(shadow.shadow, true)
  t.ok(shadow.shadowDiffered >= N, `its answers (3x) differed from the primary's (${shadow.shadowDiffered})`)
  const metrics = await (await fetch(`http://${node.http}/metrics`)).text()
  t.match(metrics, /fabric_model_shadow_total\{model="acme\/scale",version="3",outcome="differed"\} [1-9]/, 'Prometheus has the shadow outcomes')
})

t.test('dynamic batching answers each request with its own rows; PredictStream keeps order and survives bad requests', async (t) => {
  const node = await startNode(t)
  const dir = await tempDir(t)
  await cli(node, 'model', 'publish', 'acme/scale', await writeModel(dir, 's.onnx', scaleModel(5)))
  await cli(node, 'model', 'deploy', 'acme/scale', '--version', '1', '--all-sites', '--max-batch', '16', '--max-delay-ms', '5')
  const client = createClient(ModelService, node.api)
  t.teardown(() => client.close())
  await ready(client, 'acme/scale', [msg('x', floats([1, 4], [0, 0, 0, 0]))])
  const answers = await Promise.all(
    Array.from({ length: 200 }, async (_, i) => {
      const rows = 1 + (i % 3)
      const values = Array.from({ length: rows * 4 }, (_, j) => i * 100 + j)
      const r = await client.predict({ model: 'acme/scale', inputs: [msg('x', floats([rows, 4], values))] })
      return { values, got: output(r, 'y'), dims: r.outputs[0]?.dims.map(Number) }
    }),
  )
  t.ok(answers.every((a) => a.dims?.[0] === a.values.length / 4), 'each answer has its own rows')
  t.ok(answers.every((a) => a.got.every((v, j) => v === a.values[j]! * 5)), 'and its own values')
  const batched = await (await fetch(`http://${node.http}/metrics`)).text()
  t.match(batched, /fabric_model_requests_total\{model="acme\/scale",version="1",code="OK"\} 20[0-9]/)

  // PredictStream: 300 requests, every 50th one bad; answers in order, errors inline.
  async function* requests() {
    for (let i = 0; i < 300; i++) {
      const x = i % 50 === 49 ? floats([1, 3], [1, 2, 3]) : floats([1, 4], [i, i, i, i])
      yield { requestId: `r${i}`, request: { model: 'acme/scale', inputs: [msg('x', x)] } }
    }
  }
  const got: Array<{ id: string; ok: boolean; y?: number }> = []
  for await (const r of client.predictStream(requests())) {
    got.push({ id: r.requestId, ok: !!r.response, ...(r.response ? { y: output(r.response, 'y')[0]! } : {}) })
    if (r.error) t.equal(r.error.code, 3, `bad request ${r.requestId}: INVALID_ARGUMENT (${r.error.message})`)
  }
  t.same(got.map((g) => g.id), Array.from({ length: 300 }, (_, i) => `r${i}`), 'answers in request order')
  t.equal(got.filter((g) => !g.ok).length, 6, 'six bad requests answered with their errors; the stream went on')
  t.ok(got.every((g, i) => !g.ok || g.y === i * 5), 'every good request got its own answer')
})
