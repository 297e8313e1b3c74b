/** gRPC handlers of the namespace and data services: translate messages, call the data plane. */
import { timestampDate, timestampFromMs } from '@bufbuild/protobuf/wkt'
import { DatasetKind, NamespaceService } from '../../proto/gen/fabric/v1/namespace_pb.ts'
import { TableService, type RowSchema } from '../../proto/gen/fabric/v1/table_pb.ts'
import { FileService, type FileInfoSchema } from '../../proto/gen/fabric/v1/file_pb.ts'
import { StreamService } from '../../proto/gen/fabric/v1/stream_pb.ts'
import type { MessageInitShape } from '@bufbuild/protobuf'
import type { Catalog, DatasetEntry, DatasetKind as Kind, VolumeEntry } from '../catalog/index.ts'
import type { DataPlane, FileMeta, Row } from '../datasets/index.ts'
import { CHUNK_BYTES } from '../datasets/index.ts'
import { FabricError } from '../errors/index.ts'
import { splitFirst, type ServiceImpl } from './adapter.ts'
import type { Sites } from '../sites/index.ts'
import { replicationMsg } from './site-service.ts'

const KIND_OF: Record<DatasetKind, Kind | undefined> = {
  [DatasetKind.UNSPECIFIED]: undefined,
  [DatasetKind.TABLE]: 'table',
  [DatasetKind.FILES]: 'files',
  [DatasetKind.STREAM]: 'stream',
}
const KIND_MSG: Record<Kind, DatasetKind> = { table: DatasetKind.TABLE, files: DatasetKind.FILES, stream: DatasetKind.STREAM }

/** uint64 from the wire -> number; positions stay far below 2^53. */
const num = (v: bigint | undefined): number | undefined => (v === undefined ? undefined : Number(v))

const big = (n: number | undefined): bigint | undefined => (n === undefined ? undefined : BigInt(n))

/** The log position a read is at: a snapshot's (by name), or at_seq (0: latest). */
async function readAt(data: DataPlane, path: string, req: { atSeq?: bigint; atSnapshot?: string }): Promise<number | undefined> {
  if (!req.atSnapshot) return num(req.atSeq)
  if (req.atSeq) throw FabricError.invalidArgument('a read is at a position or at a snapshot, not both')
  return (await data.snapshotFor(path, req.atSnapshot)).seq
}

function volumeMsg(v: VolumeEntry) {
  return {
    path: v.path,
    id: v.id,
    home: v.home,
    replicas: v.replicas,
    createdAt: timestampFromMs(v.createdMs),
    snapshotCron: v.schedule?.cron ?? '',
    snapshotKeep: v.schedule?.keep ?? 0,
  }
}

function datasetMsg(d: DatasetEntry, catalog: Catalog) {
  return {
    path: d.path,
    id: d.id,
    kind: KIND_MSG[d.kind],
    volume: catalog.volume(d.volumeId)?.path ?? '',
    description: d.description,
    createdAt: timestampFromMs(d.createdMs),
  }
}

export function namespaceServiceImpl(catalog: Catalog, data: DataPlane, sites: Sites): ServiceImpl<typeof NamespaceService> {
  return {
    createVolume: async (req) => ({ volume: volumeMsg(await catalog.createVolume(req.path, req.home || undefined, req.replicas)) }),
    listVolumes: async () => ({ volumes: catalog.listVolumes().map(volumeMsg) }),
    getVolume: async (req) => {
      const v = catalog.volumeAt(req.path)
      const s = await data.volumeStat(v)
      return {
        volume: volumeMsg(v),
        stats: { appliedSeq: BigInt(s.applied), lastSeq: BigInt(s.lastSeq), logBytes: BigInt(s.logBytes), datasets: s.datasets, bytes: BigInt(s.bytes) },
        replication: sites.replication(v).map((r) => replicationMsg(r, v.path)),
        held: catalog.holds(v),
      }
    },
    setVolumeReplicas: async (req) => ({ volume: volumeMsg(await catalog.setReplicas(req.path, req.replicas)) }),
    verifyVolume: async (req) => ({
      sites: (await data.verify(req.path)).map((x) => ({
        site: x.site,
        home: x.home,
        reachable: x.reachable,
        held: x.held,
        appliedSeq: big(x.applied),
        logFirstSeq: big(x.logFirst),
        logLastSeq: big(x.logLast),
        logMessages: big(x.logMessages),
        comparedAt: big(x.comparedAt),
        agrees: x.agrees,
        divergedAt: big(x.divergedAt),
        problems: x.problems,
      })),
    }),
    setSnapshotSchedule: async (req) => ({ volume: volumeMsg(await catalog.setSchedule(req.path, req.cron ? { cron: req.cron, keep: req.keep } : null)) }),
    collectGarbage: async (req) => {
      const r = await data.collectGarbage(req.path)
      return { versionsRemoved: BigInt(r.versions), bytesRemoved: BigInt(r.bytes), chunksRemoved: BigInt(r.chunksRemoved), packBytesReclaimed: BigInt(r.packBytesReclaimed) }
    },
    reseedVolume: async (req) => {
      await data.reseed(req.path)
      return {}
    },
    deleteVolume: async (req) => ({ datasetsDeleted: (await catalog.deleteVolume(req.path, req.force)).datasets }),
    createDataset: async (req) => {
      const kind = KIND_OF[req.kind]
      if (!kind) throw FabricError.invalidArgument('kind must be table, files or stream')
      if (req.description.length > 1024) throw FabricError.invalidArgument('description: longer than 1024 characters')
      return { dataset: datasetMsg(await catalog.createDataset(req.path, kind, req.description), catalog) }
    },
    listDatasets: async (req) => ({ datasets: catalog.listDatasets(req.prefix || '/').map((d) => datasetMsg(d, catalog)) }),
    getDataset: async (req) => {
      const d = catalog.datasetAt(req.path)
      const s = await data.datasetStat(d)
      return { dataset: datasetMsg(d, catalog), stats: { count: BigInt(s.count), bytes: BigInt(s.bytes), lastWriteSeq: BigInt(s.last) } }
    },
    deleteDataset: async (req) => {
      await catalog.deleteDataset(req.path)
      return {}
    },
  }
}

function rowMsg(r: Row): MessageInitShape<typeof RowSchema> {
  return { key: r.key, json: r.json, version: BigInt(r.version), updatedAt: timestampFromMs(r.timeMs) }
}

export function tableServiceImpl(data: DataPlane): ServiceImpl<typeof TableService> {
  return {
    put: async (req) => ({ version: BigInt(await data.put(req.path, req.key, req.json, num(req.expectedVersion))) }),
    get: async (req) => ({ row: rowMsg(await data.get(req.path, req.key, req.atSnapshot ? await readAt(data, req.path, req) : num(req.atSeq))) }),
    delete: async (req) => {
      const r = await data.delete(req.path, req.key, num(req.expectedVersion))
      return { version: BigInt(r.seq), existed: r.existed }
    },
    batch: async (req) => ({
      version: BigInt(await data.batch(req.path, req.ops.map((op) => ({ key: op.key, json: op.json, expected: num(op.expectedVersion) })))),
    }),
    scan: async function* (req) {
      const atSeq = await readAt(data, req.path, req)
      for await (const r of data.scan(req.path, { prefix: req.prefix, from: req.from, to: req.to, limit: req.limit, ...(atSeq ? { atSeq } : {}) })) yield rowMsg(r)
    },
    import: async (reqs) => {
      const { first, rest } = await splitFirst(reqs)
      if (!first?.path) throw FabricError.invalidArgument('import: the first message must name the dataset path')
      async function* docs() {
        for (const d of first!.docs) yield { key: d.key, json: d.json }
        for await (const req of rest) for (const d of req.docs) yield { key: d.key, json: d.json }
      }
      const r = await data.import(first.path, docs())
      return { imported: BigInt(r.imported), batches: r.batches, lastVersion: BigInt(r.lastSeq) }
    },
  }
}

function fileInfo(f: FileMeta): MessageInitShape<typeof FileInfoSchema> {
  return { path: f.path, dataset: f.dataset, size: BigInt(f.size), sha256: f.sha256, version: BigInt(f.version), updatedAt: timestampFromMs(f.timeMs), chunks: f.chunks.length }
}

export function fileServiceImpl(data: DataPlane): ServiceImpl<typeof FileService> {
  return {
    put: async (reqs) => {
      const { first, rest } = await splitFirst(reqs)
      if (first?.msg.case !== 'header') throw FabricError.invalidArgument('file upload: the first message must be the header')
      const header = first.msg.value
      const expect = { size: num(header.size), sha256: header.sha256 || undefined }
      let trailerSeen = false
      async function* content() {
        for await (const req of rest) {
          if (trailerSeen) throw FabricError.invalidArgument('file upload: nothing may follow the trailer')
          if (req.msg.case === 'trailer') {
            expect.sha256 = req.msg.value.sha256
            trailerSeen = true
          } else if (req.msg.case === 'data') {
            if (req.msg.value.length > CHUNK_BYTES) throw FabricError.invalidArgument(`file upload: a message carries ${req.msg.value.length} bytes; the limit is ${CHUNK_BYTES}`)
            yield req.msg.value
          } else {
            throw FabricError.invalidArgument('file upload: only data and a trailer may follow the header')
          }
        }
        // grpc-js ends a server's request stream normally when the client cancels (the cancel
        // event comes later), so an upload must prove it is complete: a trailer, or the size or
        // hash in the header, which the content is then checked against.
        if (!trailerSeen && expect.size === undefined && !expect.sha256) {
          throw FabricError.invalidArgument(`file upload of ${header.path}: the stream ended without a trailer, and the header gave no size or sha256; nothing was stored`, {
            details: { path: header.path },
          })
        }
      }
      // expect is read after the content is consumed, so a trailer's sha256 counts.
      const r = await data.putFile(header.path, content(), expect)
      return { file: fileInfo(r.file), chunksDeduplicated: r.deduplicated }
    },
    get: async function* (req) {
      const meta = await data.statFile(req.path, await readAt(data, req.path, req))
      yield { msg: { case: 'info', value: fileInfo(meta) } }
      for await (const chunk of data.readFile(meta)) yield { msg: { case: 'data', value: chunk } }
    },
    list: async (req) => ({ files: (await data.listFiles(req.path, await readAt(data, req.path, req))).map(fileInfo) }),
    stat: async (req) => ({ file: fileInfo(await data.statFile(req.path, await readAt(data, req.path, req))) }),
    delete: async (req) => ({ version: BigInt(await data.deleteFile(req.path)) }),
  }
}

export function streamServiceImpl(data: DataPlane): ServiceImpl<typeof StreamService> {
  return {
    publish: async (req) => ({ seqs: (await data.publish(req.path, req.events)).map(BigInt) }),
    subscribe: async function* (req, ctx) {
      const upTo = req.atSnapshot ? (await data.snapshotFor(req.path, req.atSnapshot)).seq : undefined
      if (upTo !== undefined && req.follow) throw FabricError.invalidArgument('a subscription up to a snapshot cannot follow')
      for await (const ev of data.subscribe(req.path, {
        ...(upTo !== undefined ? { toSeq: upTo } : {}),
        fromSeq: num(req.fromSeq),
        sinceMs: req.since ? timestampDate(req.since).getTime() : undefined,
        count: num(req.count),
        follow: req.follow,
        signal: ctx.signal,
      })) {
        yield { seq: BigInt(ev.seq), json: ev.json, time: timestampFromMs(ev.timeMs) }
      }
    },
  }
}
