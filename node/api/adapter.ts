/**
 * protobuf-es service descriptors -> grpc-js, both ways. Handlers are typed from the generated
 * descriptors (a missing or mistyped RPC is a compile error); messages are (de)serialised by
 * protobuf-es; thrown errors become gRPC statuses through one table (status.ts).
 */
import grpc from '@grpc/grpc-js'
import {
  create,
  fromBinary,
  toBinary,
  type DescMessage,
  type DescMethod,
  type DescService,
  type MessageInitShape,
  type MessageShape,
} from '@bufbuild/protobuf'
import type { GenService, GenServiceMethods } from '@bufbuild/protobuf/codegenv2'
import { FabricError } from '../errors/index.ts'
import type { Logger } from '../log/index.ts'
import { DETAIL_PREFIX, ERROR_CODE_OF, GRPC_STATUS_OF } from './status.ts'
import type { Authenticator, CallContext, Principal } from './context.ts'

export type AnyService = GenService<GenServiceMethods>

type Shape<M> = M extends DescMessage ? MessageShape<M> : never
type Init<M> = M extends DescMessage ? MessageInitShape<M> : never

type MethodImpl<M> = M extends { methodKind: 'unary'; input: infer I; output: infer O }
  ? (req: Shape<I>, ctx: CallContext) => Promise<Init<O>>
  : M extends { methodKind: 'server_streaming'; input: infer I; output: infer O }
    ? (req: Shape<I>, ctx: CallContext) => AsyncIterable<Init<O>>
    : M extends { methodKind: 'client_streaming'; input: infer I; output: infer O }
      ? (reqs: AsyncIterable<Shape<I>>, ctx: CallContext) => Promise<Init<O>>
      : M extends { methodKind: 'bidi_streaming'; input: infer I; output: infer O }
        ? (reqs: AsyncIterable<Shape<I>>, ctx: CallContext) => AsyncIterable<Init<O>>
        : never

/** The handlers of one service, keyed by the methods' local names (getStatus, ...). */
export type ServiceImpl<S extends AnyService> = { [K in keyof S['method']]: MethodImpl<S['method'][K]> }

/** Observes every call once it ends: for metrics and logs. */
export type CallObserver = (method: string, code: grpc.status, durationMs: number) => void

export interface HandlerOptions {
  authenticate: Authenticator
  log: Logger
  observe?: CallObserver
}

function pathOf(service: DescService, method: DescMethod): string {
  return `/${service.typeName}/${method.name}`
}

function serializer(desc: DescMessage) {
  return (msg: unknown): Buffer => Buffer.from(toBinary(desc, msg as MessageShape<DescMessage>))
}

function deserializer(desc: DescMessage) {
  return (bytes: Buffer): MessageShape<DescMessage> => fromBinary(desc, bytes)
}

/** The grpc-js service definition of a protobuf-es service. */
export function grpcDefinition(service: DescService): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = {}
  for (const method of service.methods) {
    def[method.name] = {
      path: pathOf(service, method),
      requestStream: method.methodKind === 'client_streaming' || method.methodKind === 'bidi_streaming',
      responseStream: method.methodKind === 'server_streaming' || method.methodKind === 'bidi_streaming',
      requestSerialize: serializer(method.input),
      requestDeserialize: deserializer(method.input),
      responseSerialize: serializer(method.output),
      responseDeserialize: deserializer(method.output),
    }
  }
  return def
}

/** The first message of a client stream (which names what the rest is for) and the rest. */
export async function splitFirst<T>(stream: AsyncIterable<T>): Promise<{ first: T | undefined; rest: AsyncIterable<T> }> {
  const it = stream[Symbol.asyncIterator]()
  const head = await it.next()
  return { first: head.done ? undefined : head.value, rest: { [Symbol.asyncIterator]: () => it } }
}

/** Turns anything thrown by a handler into a gRPC error; unexpected ones are logged with cause. */
export function toServiceError(err: unknown, log: Logger, method: string): Partial<grpc.StatusObject> {
  const fe = FabricError.from(err)
  if (fe.code === 'INTERNAL') log.error({ err: fe.cause ?? fe, method }, 'call failed with an internal error')
  const metadata = new grpc.Metadata()
  for (const [k, v] of Object.entries(fe.details)) {
    // Metadata values must be printable ASCII; anything else (a key with NUL or non-Latin text)
    // is sent percent-encoded rather than breaking the response.
    metadata.set(DETAIL_PREFIX + k.toLowerCase().replace(/[^a-z0-9_.-]/g, '-'), /^[ -~]*$/.test(v) ? v : encodeURIComponent(v))
  }
  return { code: GRPC_STATUS_OF[fe.code], details: toAsciiSafe(fe.message), metadata }
}

/** grpc-js sends the status message as a header: keep it printable so no message breaks a call. */
function toAsciiSafe(message: string): string {
  return message.replace(/[\u0000-\u001f\u007f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

/** grpc-js handlers that call the typed implementation with a context. */
export function grpcHandlers<S extends AnyService>(service: S, impl: ServiceImpl<S>, o: HandlerOptions): grpc.UntypedServiceImplementation {
  const handlers: grpc.UntypedServiceImplementation = {}
  for (const method of service.methods) {
    const fn = (impl as Record<string, unknown>)[method.localName] as (...args: unknown[]) => unknown
    if (typeof fn !== 'function') throw new Error(`${service.typeName}: no handler for ${method.name}`)
    const name = `${service.typeName}/${method.name}`
    handlers[method.name] = makeHandler(method, name, fn.bind(impl), o)
  }
  return handlers
}

type AnyCall = grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerReadableStream<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>

function makeHandler(method: DescMethod, name: string, fn: (...args: unknown[]) => unknown, o: HandlerOptions): grpc.UntypedHandleCall {
  /** The call's context; synchronous unless the authenticator is asynchronous (no extra tick per call). */
  const begin = (call: AnyCall): CallContext | Promise<CallContext> => {
    // The abort signal, the peer string and the child logger are built on first use: most calls
    // need none of them, and building them (an AbortController, an error with its stack, a pino
    // child) cost more than a small read. grpc-js also emits 'cancelled' after a call has ended
    // normally; that costs nothing now.
    // The 'cancelled' listener is added with the signal, on first use; a call cancelled before
    // that shows in call.cancelled.
    let controller: AbortController | undefined
    let peer: string | undefined
    const peerOf = () => (peer ??= call.getPeer())
    let log: Logger | undefined
    const context = (principal: Principal): CallContext => ({
      principal,
      get signal() {
        if (!controller) {
          const c = (controller = new AbortController())
          const cancel = () => c.abort(FabricError.unavailable('the call was cancelled'))
          if ((call as { cancelled?: boolean }).cancelled) cancel()
          else (call as grpc.ServerUnaryCall<unknown, unknown>).once('cancelled', cancel)
        }
        return controller.signal
      },
      method: name,
      get peer() {
        return peerOf()
      },
      get log() {
        return (log ??= o.log.child({ method: name }))
      },
    })
    const principal = o.authenticate(call.metadata, peerOf)
    return principal instanceof Promise ? principal.then(context) : context(principal)
  }
  const finish = (started: number, code: grpc.status) => o.observe?.(name, code, performance.now() - started)

  switch (method.methodKind) {
    case 'unary':
    case 'client_streaming':
      return (call: AnyCall, callback: grpc.sendUnaryData<unknown>) => {
        const started = performance.now()
        const input = method.methodKind === 'unary' ? (call as grpc.ServerUnaryCall<unknown, unknown>).request : (call as grpc.ServerReadableStream<unknown, unknown>)
        const run = (ctx: CallContext) => fn(input, ctx) as Promise<MessageInitShape<DescMessage>>
        let result: Promise<MessageInitShape<DescMessage>>
        try {
          const ctx = begin(call)
          result = ctx instanceof Promise ? ctx.then(run) : run(ctx)
        } catch (err) {
          result = Promise.reject(err)
        }
        const fail = (err: unknown) => {
          const se = toServiceError(err, o.log, name)
          finish(started, se.code ?? grpc.status.INTERNAL)
          callback(se)
        }
        result.then((out) => {
          let res: unknown
          try {
            res = create(method.output, out)
          } catch (err) {
            return fail(err)
          }
          finish(started, grpc.status.OK)
          callback(null, res)
        }, fail)
      }
    case 'server_streaming':
    case 'bidi_streaming':
      return (call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>) => {
        const started = performance.now()
        void (async () => {
          const ctx = await begin(call)
          // A bidi call's requests are read without destroying the call at their end: Node's
          // async iterator of a stream destroys it when the loop ends, and a destroyed duplex
          // drops the answers still to be written (https://nodejs.org/api/stream.html#readableiteratoroptions).
          const input =
            method.methodKind === 'server_streaming'
              ? (call as grpc.ServerWritableStream<unknown, unknown>).request
              : (call as unknown as { iterator(o: { destroyOnReturn: boolean }): AsyncIterable<unknown> }).iterator({ destroyOnReturn: false })
          for await (const out of fn(input, ctx) as AsyncIterable<MessageInitShape<DescMessage>>) {
            if (ctx.signal.aborted) break
            if (!call.write(create(method.output, out))) await new Promise((r) => call.once('drain', r))
          }
        })().then(
          () => {
            finish(started, grpc.status.OK)
            call.end()
          },
          (err: unknown) => {
            const se = toServiceError(err, o.log, name)
            finish(started, se.code ?? grpc.status.INTERNAL)
            call.emit('error', se)
          },
        )
      }
  }
}

// ---- client side ----

export interface CallOptions {
  /** Milliseconds from now until the call fails with UNAVAILABLE. */
  timeoutMs?: number
  signal?: AbortSignal
}

type ClientMethod<M> = M extends { methodKind: 'unary'; input: infer I; output: infer O }
  ? (req: Init<I>, opts?: CallOptions) => Promise<Shape<O>>
  : M extends { methodKind: 'server_streaming'; input: infer I; output: infer O }
    ? (req: Init<I>, opts?: CallOptions) => AsyncIterable<Shape<O>>
    : M extends { methodKind: 'client_streaming'; input: infer I; output: infer O }
      ? (reqs: AsyncIterable<Init<I>>, opts?: CallOptions) => Promise<Shape<O>>
      : M extends { methodKind: 'bidi_streaming'; input: infer I; output: infer O }
        ? (reqs: AsyncIterable<Init<I>>, opts?: CallOptions) => AsyncIterable<Shape<O>>
        : never

export type Client<S extends AnyService> = { [K in keyof S['method']]: ClientMethod<S['method'][K]> } & { close(): void }

/** Turns a gRPC error from a node into a FabricError with the same code, message and details. */
export function fromServiceError(err: unknown, address: string): FabricError {
  const se = err as Partial<grpc.ServiceError>
  if (typeof se.code !== 'number') return FabricError.from(err)
  const code = ERROR_CODE_OF[se.code as grpc.status] ?? 'INTERNAL'
  const details: Record<string, string> = {}
  for (const [k, v] of Object.entries(se.metadata?.getMap() ?? {})) {
    if (k.startsWith(DETAIL_PREFIX)) details[k.slice(DETAIL_PREFIX.length)] = String(v)
  }
  let message = se.details || se.message || 'call failed'
  if (se.code === grpc.status.UNAVAILABLE && /No connection established|ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ETIMEDOUT/.test(message)) {
    const reason = /(ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ETIMEDOUT)/.exec(message)?.[1] ?? 'no connection'
    message = `cannot reach the fabric node at ${address} (${reason}); is it running? (--server or FABRIC_SERVER sets the address)`
  } else if (se.code === grpc.status.DEADLINE_EXCEEDED) {
    message = `the fabric node at ${address} did not answer in time`
  } else if (se.code === grpc.status.UNIMPLEMENTED) {
    message = `the fabric node at ${address} does not implement this call (is it an older version?): ${message}`
  }
  return new FabricError(code, message, { cause: err, details })
}

/**
 * HTTP/2 flow-control window per stream and per connection, both ways. The HTTP/2 default (64 KiB)
 * lets a sender put only a quarter of a 256 KiB file chunk on the wire before waiting for the
 * receiver's event loop to grant more: file transfers were bound by that round trip, not by CPU.
 */
export const FLOW_CONTROL_WINDOW = 4 * 1024 * 1024

/** A typed client for one service at address ("host:port"). */
export function createClient<S extends AnyService>(service: S, address: string, credentials = grpc.credentials.createInsecure()): Client<S> {
  const Ctor = grpc.makeGenericClientConstructor(grpcDefinition(service), service.typeName)
  const raw = new Ctor(address, credentials, { 'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW, 'grpc.enable_channelz': 0 }) as unknown as Record<string, (...args: unknown[]) => unknown> & grpc.Client
  const client: Record<string, unknown> = { close: () => raw.close() }
  for (const method of service.methods) {
    const call = raw[method.name]!.bind(raw)
    const callOpts = (o?: CallOptions): grpc.CallOptions => (o?.timeoutMs ? { deadline: Date.now() + o.timeoutMs } : {})
    const abortOn = (c: grpc.Call, o?: CallOptions) => o?.signal?.addEventListener('abort', () => c.cancel(), { once: true })
    switch (method.methodKind) {
      case 'unary':
        client[method.localName] = (req: MessageInitShape<DescMessage>, o?: CallOptions) =>
          new Promise((resolve, reject) => {
            const c = call(create(method.input, req), new grpc.Metadata(), callOpts(o), (err: unknown, res: unknown) =>
              err ? reject(fromServiceError(err, address)) : resolve(res),
            ) as grpc.Call
            abortOn(c, o)
          })
        break
      case 'server_streaming':
        client[method.localName] = (req: MessageInitShape<DescMessage>, o?: CallOptions) =>
          readStream(call(create(method.input, req), new grpc.Metadata(), callOpts(o)) as grpc.ClientReadableStream<unknown>, address, o)
        break
      case 'client_streaming':
        client[method.localName] = (reqs: AsyncIterable<MessageInitShape<DescMessage>>, o?: CallOptions) =>
          new Promise((resolve, reject) => {
            const c = call(new grpc.Metadata(), callOpts(o), (err: unknown, res: unknown) =>
              err ? reject(fromServiceError(err, address)) : resolve(res),
            ) as grpc.ClientWritableStream<unknown>
            abortOn(c, o)
            writeAll(c, reqs, method.input).catch((err: unknown) => {
              // The caller's own request stream failed: cancel the call and give back its error.
              c.cancel()
              reject(err)
            })
          })
        break
      case 'bidi_streaming':
        client[method.localName] = (reqs: AsyncIterable<MessageInitShape<DescMessage>>, o?: CallOptions) => {
          const c = call(new grpc.Metadata(), callOpts(o)) as grpc.ClientDuplexStream<unknown, unknown>
          writeAll(c, reqs, method.input).catch(() => c.cancel())
          return readStream(c, address, o)
        }
        break
    }
  }
  return client as Client<S>
}

async function writeAll(c: grpc.ClientWritableStream<unknown>, reqs: AsyncIterable<MessageInitShape<DescMessage>>, desc: DescMessage): Promise<void> {
  for await (const req of reqs) {
    if (!c.write(create(desc, req))) await new Promise((r) => c.once('drain', r))
  }
  c.end()
}

async function* readStream(c: grpc.ClientReadableStream<unknown>, address: string, o?: CallOptions): AsyncIterable<never> {
  o?.signal?.addEventListener('abort', () => c.cancel(), { once: true })
  try {
    for await (const msg of c) yield msg as never
  } catch (err) {
    throw fromServiceError(err, address)
  } finally {
    c.cancel()
  }
}
