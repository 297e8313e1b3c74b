/** The gRPC boundary: generic tools (health, reflection) work, and errors map to the right status. */
import t from 'tap'
import grpc from '@grpc/grpc-js'
import protoLoader from '@grpc/proto-loader'
import { createRequire } from 'node:module'
import path from 'node:path'
import { PassThrough } from 'node:stream'
import { NodeService } from '../proto/gen/fabric/v1/node_pb.ts'
import { ApiServer, createClient, nodeServiceImpl, type CallContext } from '../node/api/index.ts'
import { FabricError, isFabricError } from '../node/errors/index.ts'
import { createLogger } from '../node/log/index.ts'
import { startNode } from './harness/index.ts'

const require = createRequire(import.meta.url)

function loadService(protoFile: string, pkgPath: string[]): grpc.ServiceClientConstructor {
  const def = protoLoader.loadSync(protoFile, { keepCase: true, defaults: true, enums: String })
  let obj: unknown = grpc.loadPackageDefinition(def)
  for (const p of pkgPath) obj = (obj as Record<string, unknown>)[p]
  return obj as grpc.ServiceClientConstructor
}

t.test('grpc.health.v1 reports SERVING for the node and for each fabric service', async (t) => {
  const node = await startNode(t)
  const healthProto = path.join(path.dirname(require.resolve('grpc-health-check/package.json')), 'proto/health/v1/health.proto')
  const Health = loadService(healthProto, ['grpc', 'health', 'v1', 'Health'])
  const client = new Health(node.api, grpc.credentials.createInsecure())
  t.teardown(() => client.close())
  const check = (service: string) =>
    new Promise<{ status: string }>((resolve, reject) => (client as any).Check({ service }, (err: Error | null, res: { status: string }) => (err ? reject(err) : resolve(res))))
  t.same(await check(''), { status: 'SERVING' })
  t.same(await check('fabric.v1.NodeService'), { status: 'SERVING' })
  await t.rejects(check('no.such.Service'), { code: grpc.status.NOT_FOUND })
})

t.test('server reflection lists fabric services and serves their descriptors', async (t) => {
  const node = await startNode(t)
  const reflectionProto = path.join(path.dirname(require.resolve('@grpc/reflection/package.json')), 'build/proto/grpc/reflection/v1/reflection.proto')
  const Reflection = loadService(reflectionProto, ['grpc', 'reflection', 'v1', 'ServerReflection'])
  const client = new Reflection(node.api, grpc.credentials.createInsecure())
  t.teardown(() => client.close())
  const ask = (req: object) =>
    new Promise<any>((resolve, reject) => {
      const call = (client as any).ServerReflectionInfo()
      call.on('data', (res: unknown) => {
        resolve(res)
        call.end()
      })
      call.on('error', reject)
      call.write(req)
    })
  const list = await ask({ list_services: '*' })
  const names = list.list_services_response.service.map((s: { name: string }) => s.name)
  t.ok(names.includes('fabric.v1.NodeService'), `lists fabric.v1.NodeService (${names.join(', ')})`)
  const file = await ask({ file_containing_symbol: 'fabric.v1.NodeService' })
  t.ok(file.file_descriptor_response.file_descriptor_proto.length >= 1, 'returns its file descriptor')
  t.match(Buffer.concat(file.file_descriptor_response.file_descriptor_proto).toString('latin1'), /fabric\/v1\/node\.proto/)
})

t.test('errors keep their code, message and details across gRPC; unexpected ones are INTERNAL and logged', async (t) => {
  const logged = new PassThrough()
  let logText = ''
  logged.on('data', (d: Buffer) => (logText += d.toString()))
  const log = createLogger({ level: 'info', format: 'json', destination: logged })
  let next: () => Promise<never> = async () => {
    throw FabricError.notFound('dataset /acme/temps does not exist', { details: { path: '/acme/temps' } })
  }
  let seen: CallContext | undefined
  const api = new ApiServer({ listen: { host: '127.0.0.1', port: 0 }, log })
  api.add(NodeService, {
    getStatus: async (_req, ctx) => {
      seen = ctx
      return next()
    },
  } satisfies Parameters<typeof api.add<typeof NodeService>>[1])
  await api.start()
  t.teardown(() => api.stop())
  const client = createClient(NodeService, api.address)
  t.teardown(() => client.close())

  const err = await client.getStatus({}).catch((e: unknown) => e)
  t.ok(isFabricError(err, 'NOT_FOUND'), 'NOT_FOUND comes back as NOT_FOUND')
  t.equal((err as FabricError).message, 'dataset /acme/temps does not exist')
  t.same((err as FabricError).details, { path: '/acme/temps' })
  t.same(seen?.principal, { kind: 'admin', name: 'local-admin' }, 'every call carries a principal')
  t.equal(seen?.method, 'fabric.v1.NodeService/GetStatus')

  next = async () => {
    throw new Error('disk on fire: /secret/path')
  }
  const internal = await client.getStatus({}).catch((e: unknown) => e)
  t.ok(isFabricError(internal, 'INTERNAL'))
  t.equal((internal as FabricError).message, 'internal error', 'the cause is not sent to the client')
  t.match(logText, /disk on fire/, 'but it is logged')

  for (const code of ['INVALID_ARGUMENT', 'ALREADY_EXISTS', 'PERMISSION_DENIED', 'UNAUTHENTICATED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'UNAVAILABLE'] as const) {
    next = async () => {
      throw new FabricError(code, `failed with ${code}`)
    }
    const e = await client.getStatus({}).catch((x: unknown) => x)
    t.ok(isFabricError(e, code), `${code} round-trips`)
  }
})

t.test('a stop lets in-flight calls finish and refuses new ones', async (t) => {
  const log = createLogger({ level: 'silent', format: 'json' })
  let release!: () => void
  const held = new Promise<void>((r) => (release = r))
  let entered!: () => void
  const inFlight = new Promise<void>((r) => (entered = r))
  const api = new ApiServer({ listen: { host: '127.0.0.1', port: 0 }, log, shutdownGraceMs: 10_000 })
  api.add(
    NodeService,
    nodeServiceImpl(async () => {
      entered()
      await held
      return { nodeId: 'slow' }
    }),
  )
  await api.start()
  const address = api.address
  const client = createClient(NodeService, address)
  t.teardown(() => client.close())
  const call = client.getStatus({})
  await inFlight
  const stopping = api.stop()
  const late = createClient(NodeService, address)
  t.teardown(() => late.close())
  const refused = await late.getStatus({}, { timeoutMs: 2_000 }).catch((e: unknown) => e)
  t.ok(isFabricError(refused, 'UNAVAILABLE'), 'a new call during the stop is refused')
  release()
  t.equal((await call).nodeId, 'slow', 'the in-flight call completed')
  await stopping
})
