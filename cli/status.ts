/** `fabric status`: what the node says about itself. */
import { Command } from 'commander'
import { timestampDate } from '@bufbuild/protobuf/wkt'
import { NodeService, type GetStatusResponse } from '../proto/gen/fabric/v1/node_pb.ts'
import { withClient, serverOption } from './client.ts'
import { formatBytes, formatDuration, keyValues, outputOption, toJson, type OutputFormat } from './output.ts'

export function statusCommand(): Command {
  return new Command('status')
    .description("show the node's id, site, version, uptime, NATS/JetStream state and storage")
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (opts: { server: string; output: OutputFormat }) => {
      const status = await withClient(NodeService, opts.server, (c) => c.getStatus({}, { timeoutMs: 10_000 }))
      process.stdout.write(`${opts.output === 'json' ? toJson(statusJson(status)) : statusTable(status)}\n`)
    })
}

function statusJson(s: GetStatusResponse) {
  return {
    nodeId: s.nodeId,
    site: s.site,
    version: s.version,
    ready: s.ready,
    startedAt: s.startedAt ? timestampDate(s.startedAt).toISOString() : null,
    uptimeMs: s.uptimeMs,
    nats: {
      connected: s.nats?.connected ?? false,
      mode: s.nats?.mode ?? '',
      url: s.nats?.url ?? '',
      serverVersion: s.nats?.serverVersion ?? '',
      jetstream: s.nats?.jetstream ?? false,
      domain: s.nats?.domain ?? '',
      restarts: s.nats?.restarts ?? 0,
      jetstreamBytes: s.nats?.jetstreamBytes ?? 0n,
      role: s.nats?.role ?? '',
      leafnodeUrl: s.nats?.leafnodeUrl ?? '',
    },
    storage: { dataDir: s.storage?.dataDir ?? '', bytesUsed: s.storage?.bytesUsed ?? 0n, storeBytes: s.storage?.storeBytes ?? 0n },
  }
}

function statusTable(s: GetStatusResponse): string {
  const j = statusJson(s)
  const yes = (b: boolean) => (b ? 'yes' : 'no')
  return keyValues([
    ['node', j.nodeId],
    ['site', j.site],
    ['version', j.version],
    ['ready', yes(j.ready)],
    ['uptime', `${formatDuration(j.uptimeMs)} (since ${j.startedAt ?? '?'})`],
    ['nats', `${j.nats.connected ? 'connected' : 'disconnected'} (${j.nats.mode}) ${j.nats.url}`],
    ['nats server', j.nats.serverVersion ? `v${j.nats.serverVersion}` : '-'],
    ['jetstream', j.nats.jetstream ? `on, domain ${j.nats.domain || '-'}, ${formatBytes(j.nats.jetstreamBytes)} stored` : 'unavailable'],
    ['nats restarts', String(j.nats.restarts)],
    ['site role', `${j.nats.role || 'standalone'}${j.nats.leafnodeUrl ? `, edges dial ${j.nats.leafnodeUrl}` : ''}`],
    ['data dir', j.storage.dataDir],
    ['disk used', `${formatBytes(j.storage.bytesUsed)} (store ${formatBytes(j.storage.storeBytes)})`],
  ])
}
