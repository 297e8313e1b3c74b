/** `fabric volume ...` and `fabric ds ...`: the namespace. */
import { createInterface } from 'node:readline/promises'
import { Command, Option } from 'commander'
import { DatasetKind, NamespaceService, type Dataset, type Volume } from '../proto/gen/fabric/v1/namespace_pb.ts'
import { FabricError } from '../node/errors/index.ts'
import { serverOption, withClient } from './client.ts'
import { formatBytes, keyValues, outputOption, toJson, type OutputFormat } from './output.ts'
import { columns, iso, writeLine } from './util.ts'
import { lagText, replicationJson } from './site.ts'

type Common = { server: string; output: OutputFormat }

export const volumeJson = (v: Volume | undefined) => ({
  path: v?.path ?? '',
  id: v?.id ?? '',
  home: v?.home ?? '',
  replicas: v?.replicas ?? [],
  createdAt: iso(v?.createdAt),
  schedule: v?.snapshotCron ? { cron: v.snapshotCron, keep: v.snapshotKeep } : null,
})

const KIND_NAMES: Record<string, DatasetKind> = { table: DatasetKind.TABLE, files: DatasetKind.FILES, stream: DatasetKind.STREAM }
const kindName = (k: DatasetKind) => Object.entries(KIND_NAMES).find(([, v]) => v === k)?.[0] ?? 'unknown'
const datasetJson = (d: Dataset | undefined) => ({
  path: d?.path ?? '',
  id: d?.id ?? '',
  kind: kindName(d?.kind ?? DatasetKind.UNSPECIFIED),
  volume: d?.volume ?? '',
  description: d?.description ?? '',
  createdAt: iso(d?.createdAt),
})

const list = (v: string) => v.split(',').map((s) => s.trim()).filter(Boolean)

export function volumeCommand(): Command {
  const cmd = new Command('volume').description('volumes: subtrees of the namespace, the unit of placement, replication and snapshots')
  cmd
    .command('create <path>')
    .description('create a volume at PATH (its home site orders its writes)')
    .option('--home <site>', "home site (default: this node's site)")
    .option('--replicas <sites>', 'comma-separated replica sites', list, [] as string[])
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (path: string, o: Common & { home?: string; replicas: string[] }) => {
      const r = await withClient(NamespaceService, o.server, (c) => c.createVolume({ path, home: o.home ?? '', replicas: o.replicas }))
      const v = volumeJson(r.volume)
      writeLine(o.output === 'json' ? toJson(v) : `created volume ${v.path} (id ${v.id}, home ${v.home}${v.replicas.length ? `, replicas ${v.replicas.join(',')}` : ''})`)
    })
  cmd
    .command('ls')
    .description('list volumes')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (o: Common) => {
      const r = await withClient(NamespaceService, o.server, (c) => c.listVolumes({}))
      const vols = r.volumes.map(volumeJson)
      writeLine(o.output === 'json' ? toJson(vols) : columns(['PATH', 'HOME', 'REPLICAS', 'ID'], vols.map((v) => [v.path, v.home, v.replicas.join(',') || '-', v.id])))
    })
  cmd
    .command('stat <path>')
    .description('show a volume: home, replicas, log position, bytes, datasets')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (path: string, o: Common) => {
      const r = await withClient(NamespaceService, o.server, (c) => c.getVolume({ path }))
      const s = r.stats
      const j = {
        ...volumeJson(r.volume),
        held: r.held,
        appliedSeq: s?.appliedSeq ?? 0n,
        lastSeq: s?.lastSeq ?? 0n,
        logBytes: s?.logBytes ?? 0n,
        datasets: s?.datasets ?? 0,
        bytes: s?.bytes ?? 0n,
        replication: r.replication.map(replicationJson),
      }
      writeLine(
        o.output === 'json'
          ? toJson(j)
          : keyValues([
              ['volume', j.path],
              ['id', j.id],
              ['home', j.home],
              ['replicas', j.replicas.join(', ') || '-'],
              ['log position', j.held ? `${j.appliedSeq} applied of ${j.lastSeq}` : 'not held at this site'],
              ...j.replication.map((x) => [`site ${x.site}`, x.home ? `home, log at ${x.homeLastSeq ?? '?'}` : `${x.appliedSeq ?? '?'} applied, ${lagText(x)}${x.lastContact ? `, last contact ${x.lastContact}` : ''}`] as const),
              ['log bytes', formatBytes(j.logBytes)],
              ['datasets', String(j.datasets)],
              ['data bytes', formatBytes(j.bytes)],
              ['created', j.createdAt],
            ]),
      )
    })
  cmd
    .command('verify <path>')
    .description("compare every site's copy of the volume's log with the home's (rolling hash); exits 8 on divergence")
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (path: string, o: Common) => {
      const r = await withClient(NamespaceService, o.server, (c) => c.verifyVolume({ path }))
      const sites = r.sites.map((x) => ({
        site: x.site,
        home: x.home,
        reachable: x.reachable,
        held: x.held,
        appliedSeq: x.appliedSeq ?? null,
        logFirstSeq: x.logFirstSeq ?? null,
        logLastSeq: x.logLastSeq ?? null,
        logMessages: x.logMessages ?? null,
        comparedAt: x.comparedAt ?? null,
        agrees: x.agrees ?? null,
        divergedAt: x.divergedAt ?? null,
        problems: x.problems,
      }))
      writeLine(
        o.output === 'json'
          ? toJson(sites)
          : columns(
              ['SITE', 'LOG', 'APPLIED', 'COMPARED AT', 'RESULT'],
              sites.map((x) => [
                x.site + (x.home ? ' (home)' : ''),
                x.logLastSeq === null ? '-' : `${x.logFirstSeq}..${x.logLastSeq} (${x.logMessages})`,
                String(x.appliedSeq ?? '-'),
                String(x.comparedAt ?? '-'),
                x.problems.length ? x.problems.join('; ') : x.home ? 'reference' : 'same log',
              ]),
            ),
      )
      const bad = sites.filter((x) => x.agrees === false || x.problems.some((p) => /gaps|after the home/.test(p)))
      if (bad.length > 0) throw FabricError.failedPrecondition(`volume ${path} has diverged at ${bad.map((x) => `site ${x.site}`).join(', ')}`)
    })
  cmd
    .command('reseed <path>')
    .description("drop this node's copy of the volume and take it again from its home (for a diverged replica)")
    .option('-y, --yes', 'do not ask for confirmation (needed when not on a terminal)')
    .addOption(serverOption())
    .action(async (path: string, o: { server: string; yes?: boolean }) => {
      if (!o.yes) await confirm(`Drop this node's copy of ${path} and take it again from its home?`, 'reseed')
      await withClient(NamespaceService, o.server, (c) => c.reseedVolume({ path }))
      writeLine(`volume ${path}: dropped here; catching up from its home (see fabric volume stat ${path})`)
    })
  cmd
    .command('gc <path>')
    .description("collect garbage now: old versions no snapshot needs, chunks no kept file version refers to (at the volume's home), and chunk pack space")
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (path: string, o: Common) => {
      const r = await withClient(NamespaceService, o.server, (c) => c.collectGarbage({ path }))
      writeLine(
        o.output === 'json'
          ? toJson({ versionsRemoved: r.versionsRemoved, bytesRemoved: r.bytesRemoved, chunksRemoved: r.chunksRemoved, packBytesReclaimed: r.packBytesReclaimed })
          : `removed ${r.versionsRemoved} old versions (${formatBytes(r.bytesRemoved)}) and ${r.chunksRemoved} chunks no file needs; ${formatBytes(r.packBytesReclaimed)} of chunk packs given back`,
      )
    })
  cmd
    .command('set-replicas <path> <sites>')
    .description('set the sites that hold a copy of the volume besides its home (comma-separated; "" for none); new ones catch up from the start')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (path: string, sites: string, o: Common) => {
      const r = await withClient(NamespaceService, o.server, (c) => c.setVolumeReplicas({ path, replicas: list(sites) }))
      const v = volumeJson(r.volume)
      writeLine(o.output === 'json' ? toJson(v) : `volume ${v.path}: home ${v.home}, replicas ${v.replicas.join(',') || 'none'}`)
    })
  cmd
    .command('rm <path>')
    .description('remove an empty volume (with --force, also the datasets in it)')
    .option('--force', 'also remove the datasets in the volume (asks for confirmation)')
    .option('-y, --yes', 'do not ask for confirmation (needed for --force when not on a terminal)')
    .addOption(serverOption())
    .action(async (path: string, o: { server: string; force?: boolean; yes?: boolean }) => {
      if (o.force && !o.yes) await confirm(`Remove volume ${path} and every dataset in it? This cannot be undone.`)
      const r = await withClient(NamespaceService, o.server, (c) => c.deleteVolume({ path, force: o.force ?? false }))
      writeLine(`removed volume ${path}${r.datasetsDeleted ? ` and ${r.datasetsDeleted} dataset(s)` : ''}`)
    })
  return cmd
}

/** Asks on the terminal; refuses when there is none (scripts must say --yes). */
async function confirm(question: string, what = '--force'): Promise<void> {
  if (!process.stdin.isTTY) throw FabricError.invalidArgument(`${what} needs --yes when not run on a terminal`)
  const rl = createInterface({ input: process.stdin, output: process.stderr })
  try {
    const answer = await rl.question(`${question} [y/N] `)
    if (!/^y(es)?$/i.test(answer.trim())) throw FabricError.failedPrecondition('not confirmed: nothing was removed')
  } finally {
    rl.close()
  }
}

export function datasetCommand(): Command {
  const cmd = new Command('ds').description('datasets: tables, file trees and event streams in the namespace')
  cmd
    .command('create <path>')
    .description('create a dataset at PATH')
    .addOption(new Option('--kind <kind>', 'what the dataset holds').choices(Object.keys(KIND_NAMES)).makeOptionMandatory())
    .option('--description <text>', 'what the dataset is for', '')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (path: string, o: Common & { kind: string; description: string }) => {
      const r = await withClient(NamespaceService, o.server, (c) => c.createDataset({ path, kind: KIND_NAMES[o.kind]!, description: o.description }))
      const d = datasetJson(r.dataset)
      writeLine(o.output === 'json' ? toJson(d) : `created ${d.kind} dataset ${d.path} in volume ${d.volume}`)
    })
  cmd
    .command('ls [prefix]')
    .description('list datasets (at or under PREFIX)')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (prefix: string | undefined, o: Common) => {
      const r = await withClient(NamespaceService, o.server, (c) => c.listDatasets({ prefix: prefix ?? '/' }))
      const ds = r.datasets.map(datasetJson)
      writeLine(o.output === 'json' ? toJson(ds) : columns(['PATH', 'KIND', 'VOLUME', 'DESCRIPTION'], ds.map((d) => [d.path, d.kind, d.volume, d.description])))
    })
  cmd
    .command('stat <path>')
    .description('show a dataset: kind, volume, count, bytes, last write position')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (path: string, o: Common) => {
      const r = await withClient(NamespaceService, o.server, (c) => c.getDataset({ path }))
      const j = { ...datasetJson(r.dataset), count: r.stats?.count ?? 0n, bytes: r.stats?.bytes ?? 0n, lastWriteSeq: r.stats?.lastWriteSeq ?? 0n }
      const noun = { table: 'records', files: 'files', stream: 'events' }[j.kind] ?? 'items'
      writeLine(
        o.output === 'json'
          ? toJson(j)
          : keyValues([
              ['dataset', j.path],
              ['kind', j.kind],
              ['volume', j.volume],
              [noun, String(j.count)],
              ['bytes', formatBytes(j.bytes)],
              ['last write', j.lastWriteSeq ? `position ${j.lastWriteSeq}` : 'none'],
              ['description', j.description || '-'],
              ['created', j.createdAt],
            ]),
      )
    })
  cmd
    .command('rm <path>')
    .description('remove a dataset')
    .addOption(serverOption())
    .action(async (path: string, o: { server: string }) => {
      await withClient(NamespaceService, o.server, (c) => c.deleteDataset({ path }))
      writeLine(`removed dataset ${path}`)
    })
  return cmd
}
