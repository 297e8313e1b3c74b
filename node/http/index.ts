/**
 * The node's HTTP endpoint for operators and their tools: /metrics (Prometheus text format),
 * /healthz (the process is alive and serving HTTP) and /readyz (every subsystem is up and NATS is
 * connected: 200, else 503, with the checks as JSON either way).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { formatHostPort, type HostPort } from '../config/index.ts'
import { FabricError } from '../errors/index.ts'
import { Lifecycle, type Service } from '../lifecycle/index.ts'
import type { Logger } from '../log/index.ts'

export interface HttpOptions {
  listen: HostPort
  log: Logger
  metrics: () => Promise<{ contentType: string; body: string }>
  /** Named checks; ready when all are true. */
  readiness: () => Record<string, boolean>
}

export class HttpServer implements Service {
  readonly name = 'http'
  private readonly lifecycle = new Lifecycle(() => this.doStart(), () => this.doStop())
  private server: Server | undefined

  constructor(private readonly o: HttpOptions) {}

  start(): Promise<void> {
    return this.lifecycle.start()
  }

  stop(): Promise<void> {
    return this.lifecycle.stop()
  }

  get address(): string {
    const a = this.server?.address() as AddressInfo | null | undefined
    if (!a) throw new Error('HttpServer is not listening')
    return formatHostPort({ host: a.address, port: a.port })
  }

  private async doStart(): Promise<void> {
    const server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        this.o.log.error({ err, path: req.url }, 'http request failed')
        if (!res.headersSent) send(res, 500, 'text/plain', 'internal error\n')
        else res.destroy()
      })
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.o.listen.port, this.o.listen.host, () => {
        server.off('error', reject)
        resolve()
      })
    }).catch((cause: Error) => {
      const target = formatHostPort(this.o.listen)
      throw FabricError.unavailable(`http.listen: cannot listen on ${target}: ${cause.message}`, { cause, details: { key: 'http.listen', address: target } })
    })
    this.server = server
    this.o.log.info({ address: this.address }, 'http listening')
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'text/plain', 'method not allowed\n')
    const pathname = new URL(req.url ?? '/', 'http://x').pathname
    switch (pathname) {
      case '/metrics': {
        const { contentType, body } = await this.o.metrics()
        return send(res, 200, contentType, body)
      }
      case '/healthz':
        return send(res, 200, 'application/json', '{"status":"ok"}\n')
      case '/readyz': {
        const checks = this.o.readiness()
        const ready = Object.values(checks).every(Boolean)
        return send(res, ready ? 200 : 503, 'application/json', `${JSON.stringify({ status: ready ? 'ready' : 'not ready', checks })}\n`)
      }
      default:
        return send(res, 404, 'text/plain', 'not found: try /metrics, /healthz or /readyz\n')
    }
  }

  private async doStop(): Promise<void> {
    const server = this.server
    if (!server) return
    await new Promise<void>((resolve) => {
      server.close(() => resolve())
      server.closeAllConnections()
    })
  }
}

function send(res: ServerResponse, status: number, contentType: string, body: string): void {
  res.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store' })
  res.end(body)
}
