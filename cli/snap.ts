/** `fabric snap ...`: snapshots of a volume, consistent points in its log. */
import { Command } from 'commander'
import { SnapshotService, type Snapshot } from '../proto/gen/fabric/v1/snapshot_pb.ts'
import { serverOption, withClient } from './client.ts'
import { keyValues, outputOption, toJson, type OutputFormat } from './output.ts'
import { columns, iso, writeLine } from './util.ts'

type Common = { server: string; output: OutputFormat }

const snapJson = (s: Snapshot | undefined) => ({
  volume: s?.volume ?? '',
  name: s?.name ?? '',
  seq: s?.seq ?? 0n,
  createdAt: iso(s?.createdAt),
  ...(s?.contentHash ? { contentHash: s.contentHash } : {}),
})

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
            ]),
      )
    })
  cmd
    .command('rm <volume> <name>')
    .description('remove a snapshot (its data is kept while other snapshots or the latest state need it)')
    .addOption(serverOption())
    .action(async (volume: string, name: string, o: { server: string }) => {
      await withClient(SnapshotService, o.server, (c) => c.deleteSnapshot({ volume, name }))
      writeLine(`removed snapshot ${name} of ${volume}`)
    })
  return cmd
}
