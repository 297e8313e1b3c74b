/** The bare grpc-js echo baseline: service definition, child-process server, and client. */
import grpc from '@grpc/grpc-js'
import { spawn } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Teardown } from '../test/harness/index.ts'

const identity = (b: Buffer): Buffer => b

/** One unary method with raw Buffer (de)serialisers: gRPC framing and HTTP/2 only. */
export const ECHO_SERVICE: grpc.ServiceDefinition = {
  echo: {
    path: '/bench.Echo/Echo',
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
}

const SERVER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'echo-server.ts')

/**
 * Starts the echo server in its own process (through tsx, as this benchmark runs) answering with
 * responseBytes bytes; resolves with its "127.0.0.1:PORT" and pid.
 */
export async function startEchoServer(t: Teardown, responseBytes: number): Promise<{ address: string; pid: number }> {
  const child = spawn(process.execPath, ['--import', 'tsx', SERVER, String(responseBytes)], { stdio: ['pipe', 'pipe', 'inherit'] })
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()))
  t.teardown(async () => {
    child.stdin.end()
    child.kill('SIGTERM')
    await exited
  })
  const port = await new Promise<number>((resolve, reject) => {
    let out = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d
      const line = out.split('\n')[0]
      if (out.includes('\n') && line) resolve((JSON.parse(line) as { port: number }).port)
    })
    child.once('close', (code) => reject(new Error(`echo server exited (code ${code}) before listening`)))
  })
  return { address: `127.0.0.1:${port}`, pid: child.pid! }
}

/** A client whose echo(request) resolves with the response bytes. */
export function echoClient(address: string): { echo(req: Buffer): Promise<Buffer>; close(): void } {
  const Ctor = grpc.makeGenericClientConstructor(ECHO_SERVICE, 'Echo')
  const raw = new Ctor(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    echo(req: Buffer, cb: (err: grpc.ServiceError | null, res?: Buffer) => void): grpc.ClientUnaryCall
  }
  return {
    echo: (req) => new Promise((resolve, reject) => raw.echo(req, (err, res) => (err ? reject(err) : resolve(res!)))),
    close: () => raw.close(),
  }
}
