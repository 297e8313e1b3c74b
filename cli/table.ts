/** `fabric table ...`: JSON documents by key. */
import { createReadStream, createWriteStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import { once } from 'node:events'
import { Command, Option } from 'commander'
import { TableService, type Row } from '../proto/gen/fabric/v1/table_pb.ts'
import { FabricError } from '../node/errors/index.ts'
import { serverOption, withClient } from './client.ts'
import { keyValues, outputOption, toJson, type OutputFormat } from './output.ts'
import { progress } from './progress.ts'
import { atOption, checkJsonArg, columns, iso, parseCount, prettyJson, writeLine } from './util.ts'

type Common = { server: string; output: OutputFormat }

const seqOption = () => new Option('--seq <position>', 'read as of this log position (time travel)').argParser(parseCount)
const rowJson = (r: Row) => ({ key: r.key, version: r.version, updatedAt: iso(r.updatedAt), value: JSON.parse(r.json) as unknown })

export function tableCommand(): Command {
  const cmd = new Command('table').description('tables: JSON documents by key, with versions by log position')
  cmd
    .command('put <path> <key> <json>')
    .description('write a document (with --expect-version: only if the key is at that version; 0: only if absent)')
    .addOption(new Option('--expect-version <version>', 'compare-and-set').argParser(parseCount))
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (path: string, key: string, json: string, o: Common & { expectVersion?: number }) => {
      checkJsonArg(json, 'the document')
      const r = await withClient(TableService, o.server, (c) =>
        c.put({ path, key, json, ...(o.expectVersion !== undefined ? { expectedVersion: BigInt(o.expectVersion) } : {}) }),
      )
      writeLine(o.output === 'json' ? toJson({ key, version: r.version }) : `put ${key} (version ${r.version})`)
    })
  cmd
    .command('get <path> <key>')
    .description('read a document')
    .addOption(seqOption())
    .addOption(atOption())
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (path: string, key: string, o: Common & { seq?: number; at?: string }) => {
      const r = await withClient(TableService, o.server, (c) => c.get({ path, key, atSeq: BigInt(o.seq ?? 0), atSnapshot: o.at ?? '' }))
      const row = r.row!
      writeLine(o.output === 'json' ? toJson(rowJson(row)) : `${keyValues([['key', row.key], ['version', String(row.version)], ['updated', iso(row.updatedAt)]])}\n${prettyJson(row.json)}`)
    })
  cmd
    .command('del <path> <key>')
    .description('delete a document')
    .addOption(new Option('--expect-version <version>', 'only if the key is at that version').argParser(parseCount))
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (path: string, key: string, o: Common & { expectVersion?: number }) => {
      const r = await withClient(TableService, o.server, (c) =>
        c.delete({ path, key, ...(o.expectVersion !== undefined ? { expectedVersion: BigInt(o.expectVersion) } : {}) }),
      )
      writeLine(o.output === 'json' ? toJson({ key, version: r.version, existed: r.existed }) : r.existed ? `deleted ${key} (version ${r.version})` : `${key} did not exist`)
    })
  cmd
    .command('scan <path>')
    .description('list documents in key order (JSON lines with -o json)')
    .option('--prefix <prefix>', 'keys starting with this')
    .option('--from <key>', 'first key (inclusive)')
    .option('--to <key>', 'last key (exclusive)')
    .addOption(new Option('--limit <n>', 'at most this many').argParser(parseCount))
    .addOption(seqOption())
    .addOption(atOption())
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (path: string, o: Common & { prefix?: string; from?: string; to?: string; limit?: number; seq?: number; at?: string }) => {
      if (o.prefix && (o.from || o.to)) throw FabricError.invalidArgument('use --prefix or --from/--to, not both')
      await withClient(TableService, o.server, async (c) => {
        const rows: string[][] = []
        for await (const r of c.scan({ path, prefix: o.prefix ?? '', from: o.from ?? '', to: o.to ?? '', limit: o.limit ?? 0, atSeq: BigInt(o.seq ?? 0), atSnapshot: o.at ?? '' })) {
          if (o.output === 'json') writeLine(JSON.stringify(rowJson(r), (_k, v: unknown) => (typeof v === 'bigint' ? Number(v) : v)))
          else rows.push([r.key, String(r.version), r.json.length > 80 ? `${r.json.slice(0, 77)}...` : r.json])
        }
        if (o.output !== 'json') writeLine(columns(['KEY', 'VERSION', 'VALUE'], rows))
      })
    })
  cmd
    .command('import <path> <file>')
    .description('write every document of a JSON-lines file, in atomic batches (the file is checked first: a bad line imports nothing)')
    .requiredOption('--key <field>', 'document field that holds each key')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (path: string, file: string, o: Common & { key: string }) => {
      const total = await checkJsonLines(file, o.key)
      const bar = progress(`import ${path}`, total, 'docs')
      let sent = 0
      async function* requests() {
        let docs: Array<{ key: string; json: string }> = []
        let first = true
        for await (const { key, json } of readJsonLines(file, o.key)) {
          docs.push({ key, json })
          if (docs.length === 500) {
            yield first ? { path, docs } : { docs }
            first = false
            sent += docs.length
            bar.update(sent)
            docs = []
          }
        }
        if (docs.length > 0 || first) yield first ? { path, docs } : { docs }
        sent += docs.length
        bar.update(sent)
      }
      try {
        const r = await withClient(TableService, o.server, (c) => c.import(requests()))
        bar.stop()
        writeLine(o.output === 'json' ? toJson({ imported: r.imported, batches: r.batches, lastVersion: r.lastVersion }) : `imported ${r.imported} documents in ${r.batches} atomic batches`)
      } finally {
        bar.stop()
      }
    })
  cmd
    .command('export <path> [file]')
    .description('write every document as JSON lines (to FILE, or stdout); import with --key reads them back')
    .addOption(seqOption())
    .addOption(atOption())
    .addOption(serverOption())
    .action(async (path: string, file: string | undefined, o: { server: string; seq?: number; at?: string }) => {
      const out = file && file !== '-' ? createWriteStream(file) : process.stdout
      let n = 0
      await withClient(TableService, o.server, async (c) => {
        for await (const r of c.scan({ path, atSeq: BigInt(o.seq ?? 0), atSnapshot: o.at ?? '' })) {
          if (!out.write(`${r.json}\n`)) await once(out, 'drain')
          n++
        }
      })
      if (out !== process.stdout) {
        out.end()
        await once(out, 'finish')
        process.stderr.write(`exported ${n} documents to ${file}\n`)
      }
    })
  return cmd
}

/** Reads a JSON-lines file: one document per non-empty line, keyed by a field. */
async function* readJsonLines(file: string, field: string): AsyncGenerator<{ key: string; json: string; line: number }> {
  const rl = createInterface({ input: createReadStream(file), crlfDelay: Infinity })
  let line = 0
  for await (const text of rl) {
    line++
    if (!text.trim()) continue
    let doc: unknown
    try {
      doc = JSON.parse(text)
    } catch (err) {
      throw FabricError.invalidArgument(`${file}:${line}: invalid JSON: ${(err as Error).message}`, { details: { file, line: String(line) } })
    }
    const key = doc && typeof doc === 'object' && !Array.isArray(doc) ? (doc as Record<string, unknown>)[field] : undefined
    if (typeof key !== 'string' && typeof key !== 'number') {
      throw FabricError.invalidArgument(`${file}:${line}: the document has no string or number field ${JSON.stringify(field)}`, { details: { file, line: String(line), field } })
    }
    yield { key: String(key), json: text, line }
  }
}

/** Checks the whole file before anything is sent; returns the number of documents. */
async function checkJsonLines(file: string, field: string): Promise<number> {
  await stat(file).catch(() => {
    throw FabricError.invalidArgument(`${file}: no such file`, { details: { file } })
  })
  let n = 0
  for await (const _ of readJsonLines(file, field)) n++
  return n
}
