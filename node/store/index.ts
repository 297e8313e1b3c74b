/**
 * The node's LevelDB store. Only this folder touches `level`; the rest of the node gets these
 * operations: point reads, ordered iteration (with seek), and atomic batches, fsynced on request.
 * Keys are strings (see keys.ts for the layout), values bytes.
 */
import { Level } from 'level'
import { FabricError } from '../errors/index.ts'
import { Lifecycle, type Service } from '../lifecycle/index.ts'
import type { Logger } from '../log/index.ts'
import { diskUsage } from './disk.ts'
import { prefixEnd } from './keys.ts'

export { diskUsage } from './disk.ts'
export * as keys from './keys.ts'

export type BatchOp = { type: 'put'; key: string; value: Uint8Array } | { type: 'del'; key: string }

export interface IterateOptions {
  gte?: string
  gt?: string
  lt?: string
  lte?: string
  reverse?: boolean
  limit?: number
}

/** An open iterator; `seek` jumps forward to the first key >= target. Always close it. */
export interface StoreIterator {
  next(): Promise<[string, Uint8Array] | undefined>
  seek(target: string): void
  close(): Promise<void>
}

export interface StoreOptions {
  /** Directory of the LevelDB database (created if missing). */
  dir: string
  log: Logger
}

/** LevelDB's block cache (uncompressed blocks), per node. */
export const BLOCK_CACHE_BYTES = 64 * 1024 * 1024

export class Store implements Service {
  readonly name = 'store'
  private readonly lifecycle = new Lifecycle(() => this.doStart(), () => this.doStop())
  private db: Level<string, Uint8Array> | undefined

  constructor(private readonly o: StoreOptions) {}

  start(): Promise<void> {
    return this.lifecycle.start()
  }

  stop(): Promise<void> {
    return this.lifecycle.stop()
  }

  get dir(): string {
    return this.o.dir
  }

  private get open(): Level<string, Uint8Array> {
    if (!this.db) throw FabricError.unavailable('the store is not open')
    return this.db
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    return (await this.open.get(key)) ?? undefined
  }

  /**
   * Point read without a trip through the thread pool. For small values on hot paths (latest
   * version reads): a read served from LevelDB's cache takes microseconds, while the async form
   * costs a thread-pool round trip; a cache miss blocks the event loop for one disk read.
   */
  getSync(key: string): Uint8Array | undefined {
    return (this.open as unknown as { getSync(key: string): Uint8Array | undefined }).getSync(key) ?? undefined
  }

  /** Point reads of many keys in one thread-pool job, in the order given. */
  async getMany(keyList: string[]): Promise<Array<Uint8Array | undefined>> {
    if (keyList.length === 0) return []
    return (await this.open.getMany(keyList)).map((v) => v ?? undefined)
  }

  /** Applies every op or none; with sync the batch is on disk (fsynced) when this resolves. */
  async batch(ops: BatchOp[], options: { sync?: boolean } = {}): Promise<void> {
    if (ops.length === 0) return
    const db = this.open as unknown as { batch(ops: BatchOp[], o: { sync: boolean }): Promise<void> }
    await db.batch(ops, { sync: options.sync ?? false })
  }

  /** Deletes every key that starts with prefix (not atomically: in LevelDB's own batches). */
  async clearPrefix(prefix: string): Promise<void> {
    await this.open.clear({ gte: prefix, lt: prefixEnd(prefix) })
  }

  iterator(options: IterateOptions): StoreIterator {
    const it = this.open.iterator(options)
    return {
      next: async () => (await it.next()) as [string, Uint8Array] | undefined,
      seek: (target) => it.seek(target),
      close: () => it.close(),
    }
  }

  /** Iterates [key, value] pairs in key order (or reverse); stops early when the loop breaks. */
  async *entries(options: IterateOptions): AsyncGenerator<[string, Uint8Array]> {
    const it = this.iterator(options)
    try {
      for (;;) {
        const entry = await it.next()
        if (!entry) return
        yield entry
      }
    } finally {
      await it.close()
    }
  }

  /** Bytes the database uses on disk. */
  bytesUsed(): Promise<number> {
    return diskUsage(this.o.dir)
  }

  private async doStart(): Promise<void> {
    // A 64 MiB block cache instead of LevelDB's 8 MiB: point reads of a table that does not fit
    // the cache read and decompress a block from the page cache each (about 20 us per read).
    const db = new Level<string, Uint8Array>(this.o.dir, { keyEncoding: 'utf8', valueEncoding: 'view', cacheSize: BLOCK_CACHE_BYTES })
    try {
      await db.open()
    } catch (cause) {
      const code = (cause as { cause?: { code?: string }; code?: string }).cause?.code ?? (cause as { code?: string }).code
      if (code === 'LEVEL_LOCKED') {
        throw FabricError.failedPrecondition(`store ${this.o.dir} is in use by another process (is another fabric node running on this data dir?)`, {
          cause,
          details: { dir: this.o.dir },
        })
      }
      throw FabricError.internal(`cannot open the store at ${this.o.dir}`, { cause, details: { dir: this.o.dir } })
    }
    this.db = db
    this.o.log.info({ dir: this.o.dir }, 'store open')
  }

  private async doStop(): Promise<void> {
    await this.db?.close()
    this.db = undefined
  }
}
export { ChunkStore, type ChunkStoreOptions } from './chunks.ts'
