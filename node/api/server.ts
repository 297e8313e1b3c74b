/**
 * The gRPC server: fabric's services, the standard health service (grpc.health.v1) and server
 * reflection (so grpcurl and other generic tools work). Stop = health NOT_SERVING, stop accepting,
 * let in-flight calls finish within the grace time, then cut what is left.
 */
import grpc from '@grpc/grpc-js'
import { ReflectionService } from '@grpc/reflection'
import { HealthImplementation } from 'grpc-health-check'
import { toBinary, type DescFile } from '@bufbuild/protobuf'
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt'
import { formatHostPort, type HostPort } from '../config/index.ts'
import { FabricError } from '../errors/index.ts'
import { Lifecycle, type Service } from '../lifecycle/index.ts'
import type { Logger } from '../log/index.ts'
import { FLOW_CONTROL_WINDOW, grpcDefinition, grpcHandlers, type AnyService, type CallObserver, type ServiceImpl } from './adapter.ts'
import { localAdminAuthenticator, type Authenticator } from './context.ts'

export interface ApiServerOptions {
  listen: HostPort
  log: Logger
  authenticate?: Authenticator
  observe?: CallObserver
  /** How long stop() lets in-flight calls run before cancelling them. */
  shutdownGraceMs?: number
}

interface Registration {
  service: AnyService
  impl: ServiceImpl<AnyService>
}

export class ApiServer implements Service {
  readonly name = 'api'
  private readonly lifecycle = new Lifecycle(() => this.doStart(), () => this.doStop())
  private readonly registrations: Registration[] = []
  private readonly health = new HealthImplementation({ '': 'NOT_SERVING' })
  private server: grpc.Server | undefined
  private boundPort: number | undefined

  constructor(private readonly o: ApiServerOptions) {}

  /** Registers a service; before start() only. */
  add<S extends AnyService>(service: S, impl: ServiceImpl<S>): this {
    if (this.server) throw new Error('ApiServer.add after start')
    this.registrations.push({ service, impl: impl as unknown as ServiceImpl<AnyService> })
    return this
  }

  /** "host:port" the server listens on (the real port when 0 was asked for). */
  get listening(): boolean {
    return this.boundPort !== undefined
  }

  get address(): string {
    if (this.boundPort === undefined) throw new Error('ApiServer is not listening')
    return formatHostPort({ host: this.o.listen.host, port: this.boundPort })
  }

  start(): Promise<void> {
    return this.lifecycle.start()
  }

  stop(): Promise<void> {
    return this.lifecycle.stop()
  }

  private async doStart(): Promise<void> {
    const server = new grpc.Server({ 'grpc.max_receive_message_length': 8 * 1024 * 1024, 'grpc.enable_channelz': 0 })
    widenFlowControl(server, this.o.log)
    const authenticate = this.o.authenticate ?? localAdminAuthenticator
    for (const { service, impl } of this.registrations) {
      server.addService(grpcDefinition(service), grpcHandlers(service, impl, { authenticate, log: this.o.log, observe: this.o.observe }))
    }
    this.health.addToServer(server)
    new ReflectionService(reflectionPackage(this.registrations.map((r) => r.service))).addToServer(server)

    const target = formatHostPort(this.o.listen)
    this.boundPort = await new Promise<number>((resolve, reject) =>
      server.bindAsync(target, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
    ).catch((cause: Error) => {
      throw FabricError.unavailable(`api.listen: cannot listen on ${target}: ${cause.message}`, { cause, details: { key: 'api.listen', address: target } })
    })
    this.server = server
    this.health.setStatus('', 'SERVING')
    for (const { service } of this.registrations) this.health.setStatus(service.typeName, 'SERVING')
    this.o.log.info({ address: this.address }, 'api listening')
  }

  private async doStop(): Promise<void> {
    const server = this.server
    if (!server) return
    this.health.setStatus('', 'NOT_SERVING')
    for (const { service } of this.registrations) this.health.setStatus(service.typeName, 'NOT_SERVING')
    const grace = this.o.shutdownGraceMs ?? 10_000
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.o.log.warn({ graceMs: grace }, 'in-flight calls did not finish in time; cancelling them')
        server.forceShutdown()
        resolve()
      }, grace)
      server.tryShutdown(() => {
        clearTimeout(timer)
        resolve()
      })
    })
    this.o.log.info('api stopped')
  }
}

/**
 * @grpc/reflection reads a proto-loader package definition only for its serialized file
 * descriptors; we give it those of our generated files (and their imports) directly, so the
 * descriptors compiled into the code are the single source of truth.
 */
function reflectionPackage(services: AnyService[]): ConstructorParameters<typeof ReflectionService>[0] {
  const files = new Map<string, DescFile>()
  const visit = (file: DescFile) => {
    if (files.has(file.name)) return
    files.set(file.name, file)
    file.dependencies.forEach(visit)
  }
  services.forEach((s) => visit(s.file))
  const fileDescriptorProtos = [...files.values()].map((f) => Buffer.from(toBinary(FileDescriptorProtoSchema, f.proto)))
  return Object.fromEntries(services.map((s) => [s.typeName, { fileDescriptorProtos }])) as unknown as ConstructorParameters<typeof ReflectionService>[0]
}

/**
 * Gives uploads the same flow-control window clients use for downloads (FLOW_CONTROL_WINDOW).
 * grpc-js has no server option for it, so this sets the HTTP/2 settings grpc-js passes to
 * http2.createServer (a documented http2 option) and widens each new session's connection
 * window. Both reach into grpc-js internals (checked with 1.14): if they are not there, uploads
 * still work at the default window, and the node says so at debug level.
 */
function widenFlowControl(server: grpc.Server, log: Logger): void {
  const internals = server as unknown as { commonServerOptions?: { settings?: Record<string, unknown> }; http2Servers?: Map<{ on(event: 'session', fn: (s: { setLocalWindowSize?(n: number): void }) => void): void }, unknown> }
  if (!internals.commonServerOptions) {
    log.debug('grpc-js internals changed: uploads use the default HTTP/2 window')
    return
  }
  internals.commonServerOptions.settings = { ...internals.commonServerOptions.settings, initialWindowSize: FLOW_CONTROL_WINDOW }
  const bindAsync = server.bindAsync.bind(server)
  server.bindAsync = (port, creds, callback) =>
    bindAsync(port, creds, (err, bound) => {
      for (const h2 of internals.http2Servers?.keys() ?? []) {
        h2.on('session', (session) => {
          try {
            session.setLocalWindowSize?.(FLOW_CONTROL_WINDOW)
          } catch {
            // a session already closing: nothing to widen
          }
        })
      }
      callback(err, bound)
    })
}
