/** `fabric site ls` and `fabric node ls`: sites, their nodes, connectivity and replication. */
import { Command } from 'commander'
import { SiteService, type NodeInfo, type ReplicationStatus } from '../proto/gen/fabric/v1/site_pb.ts'
import { serverOption, withClient } from './client.ts'
import { formatBytes, outputOption, toJson, type OutputFormat } from './output.ts'
import { columns, iso, writeLine } from './util.ts'

type Common = { server: string; output: OutputFormat }

export const replicationJson = (r: ReplicationStatus) => ({
  volume: r.volume,
  site: r.site,
  home: r.home,
  appliedSeq: r.appliedSeq ?? null,
  homeLastSeq: r.homeLastSeq ?? null,
  lagRecords: r.lagRecords ?? null,
  lagBytes: r.lagBytes ?? null,
  lagSeconds: r.lagSeconds ?? null,
  lastContact: r.lastContact ? iso(r.lastContact) : null,
})

const nodeJson = (n: NodeInfo) => ({
  nodeId: n.nodeId,
  site: n.site,
  role: n.role,
  api: n.api,
  version: n.version,
  connected: n.connected,
  lastSeen: iso(n.lastSeen),
  startedAt: iso(n.startedAt),
  self: n.self,
})

/** "12 rec, 3.1 KiB, 0.4 s" or "unknown" when a side has not been heard. */
export function lagText(r: ReturnType<typeof replicationJson>): string {
  if (r.lagRecords === null) return r.appliedSeq === null ? 'not heard' : 'home not heard'
  if (r.lagRecords === 0n) return 'in sync'
  return `${r.lagRecords} rec, ${formatBytes(r.lagBytes ?? 0n)}, ${(r.lagSeconds ?? 0).toFixed(1)} s`
}

export function siteCommand(): Command {
  const cmd = new Command('site').description('sites: edge boxes, datacenters and cloud regions linked to this one')
  cmd
    .command('ls')
    .description('list sites: connectivity, nodes, and per-volume replication lag')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (o: Common) => {
      const r = await withClient(SiteService, o.server, (c) => c.listSites({}))
      const sites = r.sites.map((s) => ({
        name: s.name,
        self: s.self,
        connected: s.connected,
        lastSeen: s.lastSeen ? iso(s.lastSeen) : null,
        nodes: s.nodes.map(nodeJson),
        volumes: s.volumes.map(replicationJson),
      }))
      if (o.output === 'json') return writeLine(toJson(sites))
      const rows: string[][] = []
      for (const s of sites) {
        const state = s.self ? 'this site' : s.connected ? 'connected' : 'disconnected'
        const base = [s.name, state, s.lastSeen ?? 'never', String(s.nodes.length)]
        if (s.volumes.length === 0) rows.push([...base, '-', '-', '-'])
        s.volumes.forEach((v, i) => rows.push([...(i === 0 ? base : ['', '', '', '']), v.volume, v.home ? 'home' : String(v.appliedSeq ?? '?'), v.home ? '-' : lagText(v)]))
      }
      writeLine(columns(['SITE', 'STATE', 'LAST SEEN', 'NODES', 'VOLUME', 'APPLIED', 'LAG'], rows))
    })
  return cmd
}

export function nodesListCommand(): Command {
  return new Command('ls')
    .description('list the nodes heard from, at every linked site')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (o: Common) => {
      const r = await withClient(SiteService, o.server, (c) => c.listNodes({}))
      const nodes = r.nodes.map(nodeJson)
      if (o.output === 'json') return writeLine(toJson(nodes))
      writeLine(
        columns(
          ['NODE', 'SITE', 'ROLE', 'STATE', 'LAST SEEN', 'API', 'VERSION'],
          nodes.map((n) => [n.nodeId + (n.self ? ' *' : ''), n.site, n.role, n.connected ? 'connected' : 'disconnected', n.lastSeen, n.api, n.version]),
        ),
      )
    })
}
