/**
 * Deterministic benchmark data: table records and file content. Content is produced on the fly
 * (never held whole in memory) and is the same for every run of a given seed, so fabric and the
 * raw baselines move exactly the same bytes.
 */
import { createCipheriv, createHash } from 'node:crypto'

/** File content travels in messages of this size: fabric's chunk size and its per-message limit. */
export const PIECE_BYTES = 256 * 1024

export interface Doc {
  key: string
  json: string
}

/**
 * The i-th record: a ~150-byte sensor-like JSON document. Values vary with i so that nothing
 * compresses or deduplicates unrealistically.
 */
export function record(i: number): Doc {
  const doc = {
    id: i,
    sensor: `sensor-${(i * 7919) % 10_000}`,
    site: `plant-${i % 17}`,
    ts: 1_700_000_000_000 + i * 250,
    temp: Number((((i * 37) % 900) / 10 + 10).toFixed(1)),
    ok: i % 11 !== 0,
    tags: ['line-a', `shift-${i % 3}`],
    note: 'steady-state reading',
  }
  return { key: `k${String(i).padStart(9, '0')}`, json: JSON.stringify(doc) }
}

/** Records [0, n), built ahead of a measurement so that generating them is never timed. */
export function records(n: number): Doc[] {
  return Array.from({ length: n }, (_, i) => record(i))
}

/**
 * Pseudo-random bytes from AES-128-CTR over zeros: deterministic per seed, incompressible, never
 * repeating within a file (so fabric's chunk deduplication cannot shortcut anything), and fast
 * enough (GB/s) not to be the bottleneck. Yields fresh buffers of PIECE_BYTES (the last shorter).
 */
export async function* content(seed: string, totalBytes: number): AsyncGenerator<Uint8Array> {
  const key = createHash('sha256').update(seed).digest().subarray(0, 16)
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16))
  const zeros = Buffer.alloc(PIECE_BYTES)
  for (let sent = 0; sent < totalBytes; sent += PIECE_BYTES) {
    const n = Math.min(PIECE_BYTES, totalBytes - sent)
    // cipher.update returns a new buffer each time: consumers may keep it (gRPC queues writes).
    yield cipher.update(n === PIECE_BYTES ? zeros : zeros.subarray(0, n))
  }
}

/** SHA-256 (hex) of content(seed, totalBytes), computed before a transfer to check it after. */
export async function contentSha256(seed: string, totalBytes: number): Promise<string> {
  const h = createHash('sha256')
  for await (const piece of content(seed, totalBytes)) h.update(piece)
  return h.digest('hex')
}

/** A web ReadableStream over content(), for the Object Store client (which reads one). */
export function contentStream(seed: string, totalBytes: number): ReadableStream<Uint8Array> {
  const it = content(seed, totalBytes)
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = await it.next()
      if (next.done) controller.close()
      else controller.enqueue(next.value)
    },
  })
}

export const MiB = 1024 * 1024
