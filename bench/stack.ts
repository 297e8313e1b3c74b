/**
 * What a benchmark runs against: one standalone nats-server, one fabric node using it as its
 * external NATS, and a raw NATS connection to the very same server for the baselines. Fabric and
 * raw figures therefore share the server, its disk and this run.
 */
import { connect, type NatsConnection } from '@nats-io/transport-node'
import { jetstream, jetstreamManager, StorageType, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream'
import { createClient, type Client } from '../node/api/index.ts'
import { FileService } from '../proto/gen/fabric/v1/file_pb.ts'
import { DatasetKind, NamespaceService } from '../proto/gen/fabric/v1/namespace_pb.ts'
import { TableService } from '../proto/gen/fabric/v1/table_pb.ts'
import { startNatsServer, startNode, type NatsServerProcess, type NodeProcess, type Teardown } from '../test/harness/index.ts'

/** The JetStream domain of the bench server, and the node's site (they must match). */
const SITE = 'bench'

/** Collects teardown functions (the harness's Teardown) and runs them last-in first-out. */
export class Scope implements Teardown {
  private readonly fns: Array<() => unknown> = []

  teardown(fn: () => unknown): void {
    this.fns.push(fn)
  }

  async close(): Promise<void> {
    while (this.fns.length > 0) {
      try {
        await this.fns.pop()!()
      } catch (err) {
        console.error('teardown failed:', err)
      }
    }
  }
}

const open = new Set<Scope>()

// Interrupted (Ctrl-C): stop the servers and nodes we started rather than orphan them.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    console.error(`\n${signal}: stopping what the benchmark started`)
    void Promise.all([...open].map((s) => s.close())).finally(() => process.exit(130))
  })
}

/** Runs fn with a fresh scope and always tears down what it started. */
export async function withScope<T>(fn: (scope: Scope) => Promise<T>): Promise<T> {
  const scope = new Scope()
  open.add(scope)
  try {
    return await fn(scope)
  } finally {
    await scope.close()
    open.delete(scope)
  }
}

export interface Stack {
  natsServer: NatsServerProcess
  node: NodeProcess
  /** Raw client side, for the baselines. */
  nc: NatsConnection
  js: JetStreamClient
  jsm: JetStreamManager
  /** Fabric client side. */
  ns: Client<typeof NamespaceService>
  tables: Client<typeof TableService>
  files: Client<typeof FileService>
}

export async function startStack(scope: Scope): Promise<Stack> {
  const natsServer = await startNatsServer(scope, { domain: SITE })
  // Log level info (the node's default) rather than the harness's debug: production settings.
  const node = await startNode(scope, { config: { node: { site: SITE }, nats: { url: natsServer.url }, log: { level: 'info' } }, timeoutMs: 60_000 })
  const nc = await connect({ servers: natsServer.url, name: 'fabric-bench-raw' })
  scope.teardown(() => nc.close())
  const js = jetstream(nc, { domain: SITE, timeout: 30_000 })
  const jsm = await jetstreamManager(nc, { domain: SITE, timeout: 30_000 })
  const ns = createClient(NamespaceService, node.api)
  const tables = createClient(TableService, node.api)
  const files = createClient(FileService, node.api)
  scope.teardown(() => [ns, tables, files].forEach((c) => c.close()))
  await ns.createVolume({ path: '/bench' })
  return { natsServer, node, nc, js, jsm, ns, tables, files }
}

export async function createDataset(stack: Stack, path: string, kind: 'table' | 'files'): Promise<string> {
  await stack.ns.createDataset({ path, kind: kind === 'table' ? DatasetKind.TABLE : DatasetKind.FILES })
  return path
}

/** A raw JetStream stream on the bench server, file storage like fabric's volume logs. */
export async function createRawStream(stack: Stack, name: string, subject: string): Promise<string> {
  await stack.jsm.streams.add({ name, subjects: [subject], storage: StorageType.File, num_replicas: 1 })
  return subject
}
