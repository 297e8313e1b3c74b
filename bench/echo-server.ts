/**
 * A bare grpc-js unary service, the floor for fabric's gRPC latency: no protobuf, no handler
 * framework, no store. Run as its own process (like a fabric node) by bench/echo.ts; answers every
 * call with a fixed payload of argv[2] bytes and prints {"port":N} once listening on 127.0.0.1.
 */
import grpc from '@grpc/grpc-js'
import { ECHO_SERVICE } from './echo.ts'

const responseBytes = Number(process.argv[2] ?? '0')
const response = Buffer.alloc(responseBytes, 0x61)

const server = new grpc.Server()
server.addService(ECHO_SERVICE, {
  echo: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, response),
})
server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) throw err
  process.stdout.write(`${JSON.stringify({ port })}\n`)
})
// The parent closes our stdin when it is done (or dies): exit then, never linger.
process.stdin.resume()
process.stdin.on('end', () => process.exit(0))
