/** `fabric snap ...`: snapshots of a volume, consistent points in its log, and what to do with them. */
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { Command, Option } from 'commander'
import { DatasetKind, NamespaceService } from '../proto/gen/fabric/v1/namespace_pb.ts'
import { ChangeKind, SnapshotService, type ArchiveInfo, type DatasetChanges, type Snapshot } from '../proto/gen/fabric/v1/snapshot_pb.ts'
import { FabricError } from '../node/errors/index.ts'
import { serverOption, withClient } from './client.ts'
import { formatBytes, keyValues, outputOption, toJson, type OutputFormat } from './output.ts'
import { progress } from './progress.ts'
import { columns, downloadTo, iso, parseCount, writeLine } from './util.ts'
import { volumeJson } from './volume.ts'

type Common = { server: string; output: OutputFormat }

const snapJson = (s: Snapshot | undefined) => ({
  volume: s?.volume ?? '',
  name: s?.name ?? '',
  seq: s?.seq ?? 0n,
  createdAt: iso(s?.createdAt),
  ...(s?.contentHash ? { contentHash: s.contentHash } : {}),
  ...(s?.portableHash ? { portableHash: s.portableHash } : {}),
})

const KIND_NAME: Record<DatasetKind, string> = { [DatasetKind.UNSPECIFIED]: 'unknown', [DatasetKind.TABLE]: 'table', [DatasetKind.FILES]: 'files', [DatasetKind.STREAM]: 'stream' }
const CHANGE_NAME: Record<ChangeKind, string> = { [ChangeKind.UNSPECIFIED]: 'unknown', [ChangeKind.ADDED]: 'added', [ChangeKind.CHANGED]: 'changed', [ChangeKind.REMOVED]: 'removed' }
const CHANGE_MARK: Record<ChangeKind, string> = { [ChangeKind.UNSPECIFIED]: '?', [ChangeKind.ADDED]: '+', [ChangeKind.CHANGED]: '~', [ChangeKind.REMOVED]: '-' }

/** One compact JSON line (JSON lines output); 64-bit numbers as numbers when they fit. */
const jsonLine = (value: unknown) => JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? (v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString()) : v))

const changesJson = (c: DatasetChanges) => ({
  dataset: c.dataset,
  kind: KIND_NAME[c.kind],
  created: c.created,
  keysPut: c.keysPut,
  keysDeleted: c.keysDeleted,
  filesPut: c.filesPut,
  filesDeleted: c.filesDeleted,
  eventsAppended: c.eventsAppended,
  eventsKept: c.eventsKept,
})

const archiveJson = (a: ArchiveInfo | undefined) => ({
  volume: a?.volume ?? '',
  snapshot: a?.snapshot ?? '',
  seq: a?.seq ?? 0n,
  createdAt: iso(a?.createdAt),
  contentHash: a?.contentHash ?? '',
  portableHash: a?.portableHash ?? '',
  datasets: a?.datasets ?? 0,
  entries: a?.entries ?? 0,
  payloadBytes: a?.payloadBytes ?? 0n,
})

/** What an operation did to a dataset, in words ("3 keys put, 1 deleted"). */
function changesText(c: DatasetChanges, verb: 'restore' | 'clone' | 'import'): string {
  const parts: string[] = []
  if (c.kind === DatasetKind.TABLE) parts.push(`${c.keysPut} key(s) put`, `${c.keysDeleted} deleted`)
  if (c.kind === DatasetKind.FILES) parts.push(`${c.filesPut} file(s) written`, `${c.filesDeleted} deleted`)
  if (c.kind === DatasetKind.STREAM) {
    if (verb === 'restore') parts.push(c.eventsKept ? `${c.eventsKept} event(s) since the snapshot kept (streams are append-only)` : 'no events since the snapshot')
    else parts.push(`${c.eventsAppended} event(s) appended`, ...(c.eventsKept ? [`${c.eventsKept} held already`] : []))
  }
  return `${c.dataset} (${KIND_NAME[c.kind]}${c.created ? ', created' : ''}): ${parts.join(', ')}`
}

/** Pieces of an upload: the gRPC message size the file service uses too. */
const PIECE = 256 * 1024

export function snapCommand(): Command {
  const cmd = new Command('snap').description('snapshots: consistent points of a volume, the same at every site that holds it')
  cmd
    .command('create <volume>')
    .description("name the volume's current log position (taken at the volume's home)")
    .requiredOption('--name <name>', 'snapshot name (lowercase letters, digits, ".", "_", "-")')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (volume: string, o: Common & { name: string }) => {
      const r = await withClient(SnapshotService, o.server, (c) => c.createSnapshot({ volume, name: o.name }))
      const s = snapJson(r.snapshot)
      writeLine(o.output === 'json' ? toJson(s) : `created snapshot ${s.name} of ${s.volume} at position ${s.seq}`)
    })
  cmd
    .command('ls <volume>')
    .description('list the snapshots of a volume, oldest first')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (volume: string, o: Common) => {
      const r = await withClient(SnapshotService, o.server, (c) => c.listSnapshots({ volume }))
      const snaps = r.snapshots.map(snapJson)
      writeLine(o.output === 'json' ? toJson(snaps) : columns(['NAME', 'POSITION', 'CREATED'], snaps.map((s) => [s.name, String(s.seq), s.createdAt])))
    })
  cmd
    .command('show <volume> <name>')
    .description("show a snapshot and the hash of the volume's content at it (reads the whole volume)")
    .option('--no-hash', 'skip the content hash')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (volume: string, name: string, o: Common & { hash: boolean }) => {
      const r = await withClient(SnapshotService, o.server, (c) => c.getSnapshot({ volume, name, contentHash: o.hash }))
      const s = snapJson(r.snapshot)
      writeLine(
        o.output === 'json'
          ? toJson(s)
          : keyValues([
              ['volume', s.volume],
              ['snapshot', s.name],
              ['position', String(s.seq)],
              ['created', s.createdAt],
              ...(s.contentHash ? [['content sha256', s.contentHash] as const] : []),
              ...(s.portableHash ? [['portable sha256', s.portableHash] as const] : []),
            ]),
      )
    })
  cmd
    .command('diff <volume> <from> [to]')
    .description('what changed from snapshot FROM to snapshot TO (default: the current state): keys and files added, changed, removed; events appended')
    .option('--dataset <path>', 'only this dataset of the volume')
    .option('--summary', 'only the counts per dataset')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (volume: string, from: string, to: string | undefined, o: Common & { dataset?: string; summary?: boolean }) => {
      await withClient(SnapshotService, o.server, async (c) => {
        for await (const m of c.diffSnapshots({ volume, fromSnapshot: from, toSnapshot: to ?? '', dataset: o.dataset ?? '', summaryOnly: o.summary ?? false })) {
          if (m.msg.case === 'range') {
            const r = m.msg.value
            if (o.output === 'json') writeLine(jsonLine({ type: 'range', volume: r.volume, from: r.fromSnapshot, fromSeq: r.fromSeq, to: r.toSnapshot || null, toSeq: r.toSeq }))
            else writeLine(`diff of ${r.volume} from snapshot ${r.fromSnapshot} (position ${r.fromSeq}) to ${r.toSnapshot ? `snapshot ${r.toSnapshot}` : 'the current state'} (position ${r.toSeq})`)
          } else if (m.msg.case === 'change') {
            const ch = m.msg.value
            if (o.output === 'json') {
              writeLine(
                jsonLine({
                  type: 'change',
                  dataset: ch.dataset,
                  change: CHANGE_NAME[ch.kind],
                  name: ch.name,
                  fromVersion: ch.fromVersion,
                  toVersion: ch.toVersion,
                  ...(ch.fromSha256 ? { fromSize: ch.fromSize, fromSha256: ch.fromSha256 } : {}),
                  ...(ch.toSha256 ? { toSize: ch.toSize, toSha256: ch.toSha256 } : {}),
                }),
              )
            } else {
              const sizes = ch.fromSha256 || ch.toSha256 ? `  (${ch.fromSha256 ? formatBytes(ch.fromSize) : '-'} -> ${ch.toSha256 ? formatBytes(ch.toSize) : '-'})` : ''
              writeLine(`${CHANGE_MARK[ch.kind]} ${ch.dataset}  ${ch.name}${sizes}`)
            }
          } else if (m.msg.case === 'dataset') {
            const d = m.msg.value
            if (o.output === 'json') {
              writeLine(jsonLine({ type: 'dataset', dataset: d.dataset, kind: KIND_NAME[d.kind], added: d.added, changed: d.changed, removed: d.removed, eventsAdded: d.eventsAdded }))
            } else if (d.kind === DatasetKind.STREAM) {
              writeLine(`= ${d.dataset} (stream): ${d.eventsAdded} event(s) appended`)
            } else {
              writeLine(`= ${d.dataset} (${KIND_NAME[d.kind]}): ${d.added} added, ${d.changed} changed, ${d.removed} removed`)
            }
          }
        }
      })
    })
  cmd
    .command('restore <volume> <name>')
    .description("make the volume's tables and files (or one dataset's) what they were at the snapshot, with new log entries; streams are append-only and stay")
    .option('--dataset <path>', 'only this dataset of the volume')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (volume: string, name: string, o: Common & { dataset?: string }) => {
      const r = await withClient(SnapshotService, o.server, (c) => c.restoreSnapshot({ volume, name, dataset: o.dataset ?? '' }))
      if (o.output === 'json') {
        writeLine(toJson({ snapshot: snapJson(r.snapshot), datasets: r.datasets.map(changesJson), lastVersion: r.lastVersion }))
        return
      }
      writeLine(`restored ${volume} to snapshot ${name} (position ${r.snapshot?.seq ?? 0n})${r.lastVersion ? `; last write at position ${r.lastVersion}` : '; nothing differed'}`)
      for (const d of r.datasets) writeLine(`  ${changesText(d, 'restore')}`)
    })
  cmd
    .command('clone <volume> <name> <new-volume>')
    .description('create NEW-VOLUME holding the snapshot: every dataset at the same relative path, with its content')
    .option('--home <site>', "home site of the new volume (default: this node's site)")
    .option('--replicas <sites>', 'comma-separated replica sites of the new volume', (v: string) => v.split(',').map((x) => x.trim()).filter(Boolean), [] as string[])
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (volume: string, name: string, newVolume: string, o: Common & { home?: string; replicas: string[] }) => {
      const r = await withClient(SnapshotService, o.server, (c) => c.cloneSnapshot({ volume, name, newVolume, home: o.home ?? '', replicas: o.replicas }))
      const matches = r.clonePortableHash === r.portableHash
      if (o.output === 'json') {
        writeLine(toJson({ volume: r.volume?.path ?? newVolume, home: r.volume?.home ?? '', datasets: r.datasets.map(changesJson), portableHash: r.portableHash, clonePortableHash: r.clonePortableHash }))
        return
      }
      writeLine(`cloned ${volume} at snapshot ${name} into ${r.volume?.path ?? newVolume} (home ${r.volume?.home ?? ''}), which has a snapshot ${name} of its own`)
      for (const d of r.datasets) writeLine(`  ${changesText(d, 'clone')}`)
      writeLine(
        r.clonePortableHash
          ? `portable sha256 ${r.clonePortableHash}${matches ? ' (the same as the snapshot)' : `, NOT the snapshot's ${r.portableHash}`}`
          : `portable sha256 of the snapshot ${r.portableHash} (the clone is not held at this node's site to compare)`,
      )
      if (r.clonePortableHash && !matches) process.stderr.write(`fabric: warning: the clone's content differs from the snapshot's (was it written to meanwhile?)\n`)
    })
  cmd
    .command('export <volume> <name> <file>')
    .description('write the snapshot to FILE ("-": stdout) as a self-contained archive (tar) with hashes; the same snapshot gives the same bytes')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (volume: string, name: string, file: string, o: Common) => {
      const hash = createHash('sha256')
      let info: ReturnType<typeof archiveJson> | undefined
      let bar = progress('', 0, 'bytes')
      let bytes = 0
      try {
        await downloadTo(file, async (write) => {
          await withClient(SnapshotService, o.server, async (c) => {
            for await (const m of c.exportSnapshot({ volume, name })) {
              if (m.msg.case === 'info') {
                info = archiveJson(m.msg.value)
                if (file !== '-') bar = progress(`export ${volume}@${name}`, Number(info.payloadBytes), 'bytes')
              } else if (m.msg.case === 'data') {
                hash.update(m.msg.value)
                bytes += m.msg.value.length
                bar.update(Math.min(bytes, Number(info?.payloadBytes ?? 0)))
                await write(m.msg.value)
              }
            }
          })
          if (!info) throw FabricError.internal(`the node sent no archive for ${volume}@${name}`)
        })
      } finally {
        bar.stop()
      }
      // With "-" the archive went to stdout: nothing else may follow it there.
      if (file === '-' || !info) return
      const sha = hash.digest('hex')
      writeLine(
        o.output === 'json'
          ? toJson({ file, bytes, sha256: sha, ...info })
          : `exported ${info.volume} at snapshot ${info.snapshot} (position ${info.seq}) to ${file}: ${info.datasets} dataset(s), ${info.entries} entries, ${formatBytes(bytes)}, archive sha256 ${sha}\nportable sha256 ${info.portableHash}`,
      )
    })
  cmd
    .command('import <file> <volume>')
    .description('import an archive made by "snap export" into VOLUME: every hash is checked before anything is written; missing datasets are created')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (file: string, volume: string, o: Common) => {
      const fromStdin = file === '-'
      const size = fromStdin
        ? undefined
        : await stat(file).then(
            (st) => {
              if (!st.isFile()) throw FabricError.invalidArgument(`${file}: not a regular file`, { details: { file } })
              return st.size
            },
            () => {
              throw FabricError.invalidArgument(`${file}: no such file`, { details: { file } })
            },
          )
      const bar = progress(`import ${file}`, size ?? 0, 'bytes')
      let sent = 0
      async function* requests() {
        yield { msg: { case: 'header' as const, value: { volume, size: BigInt(size ?? 0) } } }
        for await (const piece of (fromStdin ? process.stdin : createReadStream(file, { highWaterMark: PIECE })) as AsyncIterable<Buffer>) {
          for (let i = 0; i < piece.length; i += PIECE) {
            const part = piece.subarray(i, i + PIECE)
            sent += part.length
            bar.update(sent)
            yield { msg: { case: 'data' as const, value: part } }
          }
        }
      }
      let r
      try {
        r = await withClient(SnapshotService, o.server, (c) => c.importSnapshot(requests()))
      } finally {
        bar.stop()
      }
      if (o.output === 'json') {
        writeLine(toJson({ archive: archiveJson(r.archive), datasets: r.datasets.map(changesJson), portableHash: r.portableHash, matches: r.matches }))
      } else {
        const a = archiveJson(r.archive)
        writeLine(`imported ${a.volume} at snapshot ${a.snapshot} (position ${a.seq}) into ${volume}`)
        for (const d of r.datasets) writeLine(`  ${changesText(d, 'import')}`)
        writeLine(`portable sha256 ${r.portableHash}${r.matches ? " (the same as the archive's)" : `, NOT the archive's ${a.portableHash}`}`)
      }
      if (!r.matches) process.stderr.write(`fabric: warning: the imported datasets differ from the archive (were they written to meanwhile?)\n`)
    })
  cmd
    .command('rm <volume> <name>')
    .description('remove a snapshot (its data is kept while other snapshots or the latest state need it)')
    .addOption(serverOption())
    .action(async (volume: string, name: string, o: { server: string }) => {
      await withClient(SnapshotService, o.server, (c) => c.deleteSnapshot({ volume, name }))
      writeLine(`removed snapshot ${name} of ${volume}`)
    })
  cmd
    .command('schedule <volume>')
    .description('take snapshots on a cron schedule (UTC) at the volume\'s home, keeping the newest N; --off removes it')
    .option('--cron <expr>', 'cron expression, 5 or 6 fields (e.g. "0 * * * *": hourly)')
    .addOption(new Option('--keep <n>', 'scheduled snapshots to keep').argParser(parseCount))
    .option('--off', 'remove the schedule')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (volume: string, o: Common & { cron?: string; keep?: number; off?: boolean }) => {
      if (o.off && (o.cron || o.keep !== undefined)) throw FabricError.invalidArgument('--off takes no --cron or --keep')
      if (!o.off && (!o.cron || o.keep === undefined)) throw FabricError.invalidArgument('a schedule needs --cron and --keep (or --off to remove it)')
      const r = await withClient(NamespaceService, o.server, (c) => c.setSnapshotSchedule({ path: volume, cron: o.off ? '' : o.cron!, keep: o.keep ?? 0 }))
      const v = volumeJson(r.volume)
      writeLine(o.output === 'json' ? toJson(v) : v.schedule ? `volume ${v.path}: a snapshot on "${v.schedule.cron}" (UTC), the newest ${v.schedule.keep} kept` : `volume ${v.path}: no scheduled snapshots`)
    })
  return cmd
}
