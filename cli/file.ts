/** `fabric file ...`: files in files datasets, streamed both ways and verified end to end. */
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { Command, Option } from 'commander'
import { FileService, type FileInfo } from '../proto/gen/fabric/v1/file_pb.ts'
import { FabricError } from '../node/errors/index.ts'
import { serverOption, withClient } from './client.ts'
import { formatBytes, keyValues, outputOption, toJson, type OutputFormat } from './output.ts'
import { progress } from './progress.ts'
import { atOption, columns, downloadTo, iso, parseCount, writeLine } from './util.ts'

type Common = { server: string; output: OutputFormat }
const CHUNK = 256 * 1024

const infoJson = (f: FileInfo | undefined) => ({
  path: f?.path ?? '',
  dataset: f?.dataset ?? '',
  size: f?.size ?? 0n,
  sha256: f?.sha256 ?? '',
  version: f?.version ?? 0n,
  updatedAt: iso(f?.updatedAt),
  chunks: f?.chunks ?? 0,
})

const seqOption = () => new Option('--seq <position>', 'as of this log position').argParser(parseCount)

export function fileCommand(): Command {
  const cmd = new Command('file').description('files: content-addressed, deduplicated, visible only once complete')
  cmd
    .command('put <local> <path>')
    .description('upload a local file to PATH (a files dataset path, then the name in it)')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (local: string, path: string, o: Common) => {
      const st = await stat(local).catch(() => {
        throw FabricError.invalidArgument(`${local}: no such file`, { details: { file: local } })
      })
      if (!st.isFile()) throw FabricError.invalidArgument(`${local}: not a regular file`, { details: { file: local } })
      const hash = createHash('sha256')
      const bar = progress(`put ${path}`, st.size >= 16 * CHUNK ? st.size : 0, 'bytes')
      let sent = 0
      async function* requests() {
        yield { msg: { case: 'header' as const, value: { path, size: BigInt(st.size) } } }
        for await (const piece of createReadStream(local, { highWaterMark: CHUNK }) as AsyncIterable<Buffer>) {
          hash.update(piece)
          sent += piece.length
          bar.update(sent)
          yield { msg: { case: 'data' as const, value: piece } }
        }
        yield { msg: { case: 'trailer' as const, value: { sha256: hash.digest('hex') } } }
      }
      try {
        const r = await withClient(FileService, o.server, (c) => c.put(requests()))
        bar.stop()
        const f = infoJson(r.file)
        writeLine(o.output === 'json' ? toJson({ ...f, chunksDeduplicated: r.chunksDeduplicated }) : `put ${f.path} (${formatBytes(f.size)}, sha256 ${f.sha256}, version ${f.version}${r.chunksDeduplicated ? `, ${r.chunksDeduplicated} chunk(s) deduplicated` : ''})`)
      } finally {
        bar.stop()
      }
    })
  cmd
    .command('get <path> <local>')
    .description('download PATH to LOCAL ("-": stdout); the content is checked against its SHA-256')
    .addOption(seqOption())
    .addOption(atOption())
    .addOption(serverOption())
    .action(async (path: string, local: string, o: { server: string; seq?: number; at?: string }) => {
      const hash = createHash('sha256')
      let info: ReturnType<typeof infoJson> | undefined
      let bar = progress('', 0, 'bytes')
      let got = 0
      try {
        await downloadTo(local, async (write) => {
          await withClient(FileService, o.server, async (c) => {
            for await (const m of c.get({ path, atSeq: BigInt(o.seq ?? 0), atSnapshot: o.at ?? '' })) {
              if (m.msg.case === 'info') {
                info = infoJson(m.msg.value)
                if (local !== '-' && info.size >= 16 * CHUNK) bar = progress(`get ${path}`, Number(info.size), 'bytes')
              } else if (m.msg.case === 'data') {
                hash.update(m.msg.value)
                got += m.msg.value.length
                bar.update(got)
                await write(m.msg.value)
              }
            }
          })
          const sha = hash.digest('hex')
          if (!info || sha !== info.sha256 || BigInt(got) !== info.size) {
            throw FabricError.internal(`download of ${path} does not match: got ${got} bytes with sha256 ${sha}, expected ${info?.size} bytes with ${info?.sha256}`)
          }
        })
      } finally {
        bar.stop()
      }
    })
  cmd
    .command('ls <path>')
    .description('list the files of a dataset, or under a directory in it')
    .addOption(seqOption())
    .addOption(atOption())
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (path: string, o: Common & { seq?: number; at?: string }) => {
      const r = await withClient(FileService, o.server, (c) => c.list({ path, atSeq: BigInt(o.seq ?? 0), atSnapshot: o.at ?? '' }))
      const files = r.files.map(infoJson)
      writeLine(o.output === 'json' ? toJson(files) : columns(['PATH', 'SIZE', 'VERSION', 'SHA256'], files.map((f) => [f.path, formatBytes(f.size), String(f.version), f.sha256.slice(0, 16)])))
    })
  cmd
    .command('stat <path>')
    .description('show a file: size, sha256, version')
    .addOption(seqOption())
    .addOption(atOption())
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (path: string, o: Common & { seq?: number; at?: string }) => {
      const r = await withClient(FileService, o.server, (c) => c.stat({ path, atSeq: BigInt(o.seq ?? 0), atSnapshot: o.at ?? '' }))
      const f = infoJson(r.file)
      writeLine(
        o.output === 'json'
          ? toJson(f)
          : keyValues([
              ['path', f.path],
              ['dataset', f.dataset],
              ['size', `${formatBytes(f.size)} (${f.size} bytes)`],
              ['sha256', f.sha256],
              ['version', String(f.version)],
              ['chunks', String(f.chunks)],
              ['updated', f.updatedAt],
            ]),
      )
    })
  cmd
    .command('rm <path>')
    .description('remove a file')
    .addOption(serverOption())
    .action(async (path: string, o: { server: string }) => {
      const r = await withClient(FileService, o.server, (c) => c.delete({ path }))
      writeLine(`removed ${path} (version ${r.version})`)
    })
  return cmd
}
