/** gRPC handlers of SiteService: this node's view of sites, nodes and replication. */
import type { MessageInitShape } from '@bufbuild/protobuf'
import { timestampFromMs } from '@bufbuild/protobuf/wkt'
import { SiteService, type NodeInfoSchema, type ReplicationStatusSchema } from '../../proto/gen/fabric/v1/site_pb.ts'
import type { NodeView, ReplicaStatus, Sites } from '../sites/index.ts'
import type { Catalog } from '../catalog/index.ts'
import type { ServiceImpl } from './adapter.ts'

const opt = (n: number | undefined) => (n === undefined ? undefined : BigInt(Math.round(n)))

export function replicationMsg(r: ReplicaStatus, volumePath: string): MessageInitShape<typeof ReplicationStatusSchema> {
  return {
    volume: volumePath,
    site: r.site,
    home: r.home,
    appliedSeq: opt(r.applied),
    homeLastSeq: opt(r.homeLast),
    lagRecords: opt(r.lagRecords),
    lagBytes: opt(r.lagBytes),
    lagSeconds: r.lagSeconds,
    ...(r.lastContactMs !== undefined ? { lastContact: timestampFromMs(r.lastContactMs) } : {}),
  }
}

function nodeMsg(n: NodeView): MessageInitShape<typeof NodeInfoSchema> {
  return {
    nodeId: n.node,
    site: n.site,
    role: n.role,
    api: n.api,
    version: n.version,
    connected: n.connected,
    lastSeen: timestampFromMs(n.lastSeenMs),
    startedAt: timestampFromMs(n.startedMs),
    self: n.self,
  }
}

export function siteServiceImpl(sites: Sites, catalog: Catalog): ServiceImpl<typeof SiteService> {
  const pathOf = (id: string) => catalog.volume(id)?.path ?? id
  return {
    listSites: async () => ({
      sites: sites.listSites().map((s) => ({
        name: s.name,
        self: s.self,
        connected: s.connected,
        ...(s.lastSeenMs !== undefined ? { lastSeen: timestampFromMs(s.lastSeenMs) } : {}),
        nodes: s.nodes.map(nodeMsg),
        volumes: s.volumes.map((r) => replicationMsg(r, pathOf(r.volumeId))),
      })),
    }),
    listNodes: async () => ({ nodes: sites.listNodes().map(nodeMsg) }),
  }
}
