/** `fabric stream ...`: publish and subscribe to event streams. */
import { createInterface } from 'node:readline'
import { Command, InvalidArgumentError, Option } from 'commander'
import { timestampFromMs } from '@bufbuild/protobuf/wkt'
import { StreamService } from '../proto/gen/fabric/v1/stream_pb.ts'
import { FabricError } from '../node/errors/index.ts'
import { serverOption, withClient } from './client.ts'
import { outputOption, toJson, type OutputFormat } from './output.ts'
import { checkJsonArg, iso, parseCount, writeLine } from './util.ts'

type Common = { server: string; output: OutputFormat }
const BATCH = 200

function parseTime(value: string): number {
  const ms = Date.parse(value)
  if (Number.isNaN(ms)) throw new InvalidArgumentError(`expected a time such as 2026-11-25T10:00:00Z, got ${JSON.stringify(value)}`)
  return ms
}

export function streamCommand(): Command {
  const cmd = new Command('stream').description('streams: append-only sequences of JSON events')
  cmd
    .command('pub <path> [json]')
    .description('publish one event, or JSON lines from stdin (when JSON is omitted or "-")')
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (path: string, json: string | undefined, o: Common) => {
      const seqs: bigint[] = []
      await withClient(StreamService, o.server, async (c) => {
        if (json !== undefined && json !== '-') {
          checkJsonArg(json, 'the event')
          seqs.push(...(await c.publish({ path, events: [json] })).seqs)
          return
        }
        // Lines are checked and sent in batches; a bad line stops before its batch is sent.
        let batch: string[] = []
        let line = 0
        for await (const text of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
          line++
          if (!text.trim()) continue
          try {
            JSON.parse(text)
          } catch (err) {
            throw FabricError.invalidArgument(`stdin line ${line}: invalid JSON: ${(err as Error).message}${seqs.length ? ` (${seqs.length} events before it were published)` : ''}`)
          }
          batch.push(text)
          if (batch.length === BATCH) {
            seqs.push(...(await c.publish({ path, events: batch })).seqs)
            batch = []
          }
        }
        if (batch.length > 0) seqs.push(...(await c.publish({ path, events: batch })).seqs)
      })
      writeLine(o.output === 'json' ? toJson({ published: seqs.length, seqs }) : `published ${seqs.length} event(s)${seqs.length ? ` at ${seqs[0]}${seqs.length > 1 ? `..${seqs[seqs.length - 1]}` : ''}` : ''}`)
    })
  cmd
    .command('sub <path>')
    .description('read events in order (JSON lines with -o json); --follow waits for new ones')
    .addOption(new Option('--from <seq>', 'start at this position').argParser(parseCount).conflicts('since'))
    .addOption(new Option('--since <time>', 'start at the first event at or after this time (ISO 8601)').argParser(parseTime))
    .addOption(new Option('--count <n>', 'stop after n events').argParser(parseCount))
    .option('-f, --follow', 'keep waiting for new events (until Ctrl-C)')
    .addOption(new Option('--at <snapshot>', "only events up to this snapshot of the stream's volume").conflicts('follow'))
    .addOption(serverOption())
    .addOption(outputOption())
    .action(async (path: string, o: Common & { from?: number; since?: number; count?: number; follow?: boolean; at?: string }) => {
      const controller = new AbortController()
      const stop = () => controller.abort()
      process.once('SIGINT', stop)
      try {
        await withClient(StreamService, o.server, async (c) => {
          for await (const ev of c.subscribe(
            { path, fromSeq: BigInt(o.from ?? 0), ...(o.since !== undefined ? { since: timestampFromMs(o.since) } : {}), count: BigInt(o.count ?? 0), follow: o.follow ?? false, atSnapshot: o.at ?? '' },
            { signal: controller.signal },
          )) {
            writeLine(o.output === 'json' ? JSON.stringify({ seq: Number(ev.seq), time: iso(ev.time), event: JSON.parse(ev.json) as unknown }) : `${ev.seq}\t${iso(ev.time)}\t${ev.json}`)
          }
        }).catch((err: unknown) => {
          if (!controller.signal.aborted) throw err
        })
      } finally {
        process.off('SIGINT', stop)
      }
    })
  return cmd
}
