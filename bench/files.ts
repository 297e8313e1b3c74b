/**
 * Benchmarks 3 and 4: file transfer through the node against the NATS Object Store on the same
 * server, and the node's memory while it moves one large file.
 */
import { createHash } from 'node:crypto'
import type { MessageInitShape } from '@bufbuild/protobuf'
import { Objm, setSha256Backend, type ObjectStore, type Sha256Backend } from '@nats-io/obj'
import type { PutFileRequestSchema } from '../proto/gen/fabric/v1/file_pb.ts'
import { content, contentSha256, contentStream, MiB, PIECE_BYTES } from './content.ts'
import { mbps, sampleRss, timed, type Rss, type RssSamples } from './measure.ts'
import { fmt, type Comparison, type Figure } from './report.ts'
import { createDataset, type Stack } from './stack.ts'

/**
 * An upload as the CLI sends one: the size in the header, the SHA-256 computed while sending in
 * the trailer (the Object Store client hashes while sending too).
 */
export async function* putMessages(path: string, seed: string, size: number): AsyncGenerator<MessageInitShape<typeof PutFileRequestSchema>> {
  yield { msg: { case: 'header', value: { path, size: BigInt(size) } } }
  const hash = createHash('sha256')
  for await (const piece of content(seed, size)) {
    hash.update(piece)
    yield { msg: { case: 'data', value: piece } }
  }
  yield { msg: { case: 'trailer', value: { sha256: hash.digest('hex') } } }
}

/** FileService.Put of generated content; checks the node stored what was sent. */
async function fabricPut(stack: Stack, path: string, seed: string, size: number, sha256: string): Promise<void> {
  const r = await stack.files.put(putMessages(path, seed, size))
  if (Number(r.file?.size) !== size || r.file?.sha256 !== sha256) throw new Error(`put ${path}: stored ${r.file?.size} bytes sha256 ${r.file?.sha256}, sent ${size} bytes ${sha256}`)
}

/** FileService.Get, content hashed and dropped as it arrives (the client verifies end to end). */
async function fabricGet(stack: Stack, path: string, size: number, sha256: string): Promise<void> {
  const h = createHash('sha256')
  let got = 0
  for await (const m of stack.files.get({ path })) {
    if (m.msg.case !== 'data') continue
    h.update(m.msg.value)
    got += m.msg.value.length
  }
  const digest = h.digest('hex')
  if (got !== size || digest !== sha256) throw new Error(`get ${path}: ${got} bytes sha256 ${digest}, expected ${size} bytes ${sha256}`)
}

/** Object Store put in chunks of fabric's chunk size, so both sides publish the same messages. */
async function rawPut(os: ObjectStore, name: string, seed: string, size: number): Promise<void> {
  const info = await os.put({ name, options: { max_chunk_size: PIECE_BYTES } }, contentStream(seed, size))
  if (info.size !== size) throw new Error(`object ${name}: stored ${info.size} bytes, sent ${size}`)
}

/** Object Store get, content dropped; the client library checks the SHA-256 digest itself. */
async function rawGet(os: ObjectStore, name: string, size: number): Promise<void> {
  const r = await os.get(name)
  if (!r) throw new Error(`object ${name} not found`)
  const reader = r.data.getReader()
  let got = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    got += value.length
  }
  const err = await r.error
  if (err) throw err
  if (got !== size) throw new Error(`object ${name}: read ${got} bytes, expected ${size}`)
}

/**
 * 3. File put and get of sizeBytes, fabric vs the Object Store with each SHA-256 backend of
 * @nats-io/obj ("native" = node:crypto, as fabric uses; "js" = the library's pure-JS default).
 * Targets are judged against "native", the stronger baseline.
 */
export async function benchFiles(stack: Stack, sizeBytes: number): Promise<Comparison[]> {
  const seed = `file-${sizeBytes}`
  const sha256 = await contentSha256(seed, sizeBytes)
  const path = `${await createDataset(stack, '/bench/f', 'files')}/data.bin`
  const bucket = await new Objm(stack.js).create('bench')

  // Warm-up (off the clock): one small file through each path.
  const warm = 4 * MiB
  const warmSha = await contentSha256('warm', warm)
  await fabricPut(stack, '/bench/f/warm.bin', 'warm', warm, warmSha)
  await fabricGet(stack, '/bench/f/warm.bin', warm, warmSha)
  await rawPut(bucket, 'warm', 'warm', warm)
  await rawGet(bucket, 'warm', warm)

  const fPut = await timed(() => fabricPut(stack, path, seed, sizeBytes, sha256))
  const fGet = await timed(() => fabricGet(stack, path, sizeBytes, sha256))
  const raw = new Map<Sha256Backend, { put: number; get: number }>()
  for (const backend of ['native', 'js'] as const) {
    setSha256Backend(backend)
    const put = await timed(() => rawPut(bucket, backend, seed, sizeBytes))
    const get = await timed(() => rawGet(bucket, backend, sizeBytes))
    raw.set(backend, { put: put.seconds, get: get.seconds })
  }
  setSha256Backend('native')

  const mb = sizeBytes / MiB
  const out: Comparison[] = []
  for (const backend of ['native', 'js'] as const) {
    const r = raw.get(backend)!
    for (const [op, fabricSeconds, rawSeconds] of [['put', fPut.seconds, r.put], ['get', fGet.seconds, r.get]] as const) {
      out.push({
        bench: `3. File ${op}, ${mb} MiB`,
        metric: 'MB/s',
        fabric: mbps(sizeBytes, fabricSeconds),
        raw: mbps(sizeBytes, rawSeconds),
        baseline: `Object Store ${op}, sha256 backend "${backend}"`,
        better: 'higher',
        ...(backend === 'native' ? { target: 0.7 } : {}),
      })
    }
  }
  return out
}

/**
 * 4. Node memory while one large file goes in and out: RSS of the node process sampled every
 * 250 ms through the put, then the get (content generated on the fly, received and discarded,
 * SHA-256 checked both ways), and once more after a short idle.
 */
export async function benchBigFile(stack: Stack, sizeBytes: number): Promise<{ figures: Figure[]; notes: string[] }> {
  const mb = sizeBytes / MiB
  const seed = `big-${sizeBytes}`
  const sha256 = await contentSha256(seed, sizeBytes)
  const path = `${await createDataset(stack, '/bench/big', 'files')}/big.bin`
  const pid = stack.node.pid

  const putRss = await sampleRss(pid)
  const put = await timed(() => fabricPut(stack, path, seed, sizeBytes, sha256))
  const duringPut: RssSamples = await putRss.stop()
  const getRss = await sampleRss(pid)
  const get = await timed(() => fabricGet(stack, path, sizeBytes, sha256))
  const duringGet: RssSamples = await getRss.stop()
  await new Promise((r) => setTimeout(r, 3_000))
  const idle = await sampleRss(pid)
  const settled = await idle.stop()

  const bench = `4. Node RSS, ${mb} MiB file`
  const rss = (metric: string, r: Rss): Figure => ({ bench, metric, value: r.total, unit: 'MiB', detail: `anon ${fmt(r.anon)}, file ${fmt(r.file)}` })
  return {
    figures: [
      rss('RSS at start', duringPut.start),
      rss('RSS max during put', duringPut.max),
      rss('RSS max during get', duringGet.max),
      rss('RSS at end of get', duringGet.end),
      rss('RSS 3 s after', settled.end),
      { bench, metric: 'put throughput', value: mbps(sizeBytes, put.seconds), unit: 'MB/s' },
      { bench, metric: 'get throughput', value: mbps(sizeBytes, get.seconds), unit: 'MB/s' },
    ],
    notes: [`4: ${duringPut.count + duringGet.count} RSS samples; SHA-256 of the ${mb} MiB sent and received matched (${sha256.slice(0, 16)}...).`],
  }
}
