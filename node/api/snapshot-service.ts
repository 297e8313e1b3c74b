/** gRPC handlers of SnapshotService: translate messages, call the data plane and node/snapshots. */
import type { MessageInitShape } from '@bufbuild/protobuf'
import { timestampFromMs } from '@bufbuild/protobuf/wkt'
import { DatasetKind } from '../../proto/gen/fabric/v1/namespace_pb.ts'
import {
  ChangeKind,
  SnapshotService,
  type ArchiveInfoSchema,
  type ChangeSchema,
  type DatasetChangesSchema,
  type ImportSnapshotRequest,
  type SnapshotSchema,
} from '../../proto/gen/fabric/v1/snapshot_pb.ts'
import type { Catalog, DatasetKind as Kind } from '../catalog/index.ts'
import type { DataPlane, Snapshot } from '../datasets/index.ts'
import { FabricError } from '../errors/index.ts'
import type { Logger } from '../log/index.ts'
import { Snapshots, type ArchiveInfo, type Change, type DatasetChanges } from '../snapshots/index.ts'
import type { ServiceImpl } from './adapter.ts'

export interface SnapshotServiceOptions {
  /** Where archives being imported are kept while they are checked (on the node's data disk). */
  spoolDir: string
  log: Logger
}

const KIND_MSG: Record<Kind, DatasetKind> = { table: DatasetKind.TABLE, files: DatasetKind.FILES, stream: DatasetKind.STREAM }
const CHANGE_MSG: Record<Change['kind'], ChangeKind> = { added: ChangeKind.ADDED, changed: ChangeKind.CHANGED, removed: ChangeKind.REMOVED }

function snapshotMsg(s: Snapshot, hashes?: { contentHash: string; portableHash: string }): MessageInitShape<typeof SnapshotSchema> {
  return { volume: s.volume, name: s.name, seq: BigInt(s.seq), createdAt: timestampFromMs(s.timeMs), contentHash: hashes?.contentHash ?? '', portableHash: hashes?.portableHash ?? '' }
}

function changesMsg(c: DatasetChanges): MessageInitShape<typeof DatasetChangesSchema> {
  return {
    dataset: c.dataset,
    kind: KIND_MSG[c.kind],
    created: c.created,
    keysPut: BigInt(c.keysPut),
    keysDeleted: BigInt(c.keysDeleted),
    filesPut: BigInt(c.filesPut),
    filesDeleted: BigInt(c.filesDeleted),
    eventsAppended: BigInt(c.eventsAppended),
    eventsKept: BigInt(c.eventsKept),
  }
}

function changeMsg(c: Change): MessageInitShape<typeof ChangeSchema> {
  return {
    dataset: c.dataset,
    kind: CHANGE_MSG[c.kind],
    name: c.name,
    fromVersion: BigInt(c.fromVersion),
    toVersion: BigInt(c.toVersion),
    fromSize: BigInt(c.fromSize ?? 0),
    toSize: BigInt(c.toSize ?? 0),
    fromSha256: c.fromSha256 ?? '',
    toSha256: c.toSha256 ?? '',
  }
}

function archiveMsg(a: ArchiveInfo): MessageInitShape<typeof ArchiveInfoSchema> {
  return {
    volume: a.volume,
    snapshot: a.snapshot,
    seq: BigInt(a.seq),
    createdAt: timestampFromMs(a.createdMs),
    contentHash: a.contentHash,
    portableHash: a.portableHash,
    datasets: a.datasets,
    entries: a.entries,
    payloadBytes: BigInt(a.payloadBytes),
  }
}

/** The archive bytes of an import stream after its header; anything else is refused. */
async function* archiveBytes(rest: AsyncIterator<ImportSnapshotRequest>): AsyncGenerator<Uint8Array> {
  for (let r = await rest.next(); !r.done; r = await rest.next()) {
    if (r.value.msg.case !== 'data') throw FabricError.invalidArgument('snapshot import: only data may follow the header')
    yield r.value.msg.value
  }
}

export function snapshotServiceImpl(data: DataPlane, catalog: Catalog, o: SnapshotServiceOptions): ServiceImpl<typeof SnapshotService> {
  const snapshots = new Snapshots({ data, catalog, spoolDir: o.spoolDir, log: o.log })
  return {
    createSnapshot: async (req) => ({ snapshot: snapshotMsg(await data.createSnapshot(req.volume, req.name)) }),
    listSnapshots: async (req) => ({ snapshots: (await data.listSnapshots(req.volume)).map((s) => snapshotMsg(s)) }),
    getSnapshot: async (req) => {
      const snap = await data.snapshotFor(req.volume, req.name)
      if (snap.volume !== req.volume) throw FabricError.invalidArgument(`${req.volume} is not a volume; its volume is ${snap.volume}`, { details: { path: req.volume } })
      return { snapshot: snapshotMsg(snap, req.contentHash ? await snapshots.get(snap.volume, snap.name, true) : undefined) }
    },
    deleteSnapshot: async (req) => {
      await data.deleteSnapshot(req.volume, req.name)
      return {}
    },
    diffSnapshots: async function* (req) {
      if (!req.fromSnapshot) throw FabricError.invalidArgument('diff: name the snapshot to compare from')
      for await (const item of snapshots.diff(req.volume, req.fromSnapshot, req.toSnapshot || undefined, { dataset: req.dataset || undefined, summaryOnly: req.summaryOnly })) {
        if (item.type === 'range') {
          yield { msg: { case: 'range', value: { volume: item.volume, fromSnapshot: item.fromSnapshot, fromSeq: BigInt(item.fromSeq), toSnapshot: item.toSnapshot, toSeq: BigInt(item.toSeq) } } }
        } else if (item.type === 'change') {
          yield { msg: { case: 'change', value: changeMsg(item.change) } }
        } else {
          const d = item.diff
          yield {
            msg: {
              case: 'dataset',
              value: { dataset: d.dataset, kind: KIND_MSG[d.kind], added: BigInt(d.added), changed: BigInt(d.changed), removed: BigInt(d.removed), eventsAdded: BigInt(d.eventsAdded) },
            },
          }
        }
      }
    },
    restoreSnapshot: async (req) => {
      const r = await snapshots.restore(req.volume, req.name, req.dataset || undefined)
      return { snapshot: snapshotMsg(r.snapshot), datasets: r.datasets.map(changesMsg), lastVersion: BigInt(r.lastVersion) }
    },
    cloneSnapshot: async (req) => {
      const r = await snapshots.clone(req.volume, req.name, req.newVolume, req.home || undefined, req.replicas)
      const v = r.volume
      return {
        volume: { path: v.path, id: v.id, home: v.home, replicas: v.replicas, createdAt: timestampFromMs(v.createdMs) },
        datasets: r.datasets.map(changesMsg),
        portableHash: r.portableHash,
        clonePortableHash: r.clonePortableHash,
      }
    },
    exportSnapshot: async function* (req) {
      for await (const item of snapshots.exportArchive(req.volume, req.name)) {
        yield item instanceof Uint8Array ? { msg: { case: 'data', value: item } } : { msg: { case: 'info', value: archiveMsg(item) } }
      }
    },
    importSnapshot: async (reqs) => {
      const it = reqs[Symbol.asyncIterator]()
      const first = await it.next()
      if (first.done || first.value.msg.case !== 'header') throw FabricError.invalidArgument('snapshot import: the first message must be the header')
      const header = first.value.msg.value
      const r = await snapshots.importArchive(header.volume, archiveBytes(it), header.size ? Number(header.size) : undefined)
      return { archive: archiveMsg(r.archive), datasets: r.datasets.map(changesMsg), portableHash: r.portableHash, matches: r.matches }
    },
  }
}
