/**
 * The node's LevelDB store. Only this folder touches `level`; the rest of the node gets typed
 * operations from here. This issue opens and closes it; the versioned key layout of datasets
 * comes with the namespace.
 */
import { Level } from 'level'
import { FabricError } from '../errors/index.ts'
import { Lifecycle, type Service } from '../lifecycle/index.ts'
import type { Logger } from '../log/index.ts'
import { diskUsage } from './disk.ts'

export { diskUsage } from './disk.ts'

export interface StoreOptions {
  /** Directory of the LevelDB database (created if missing). */
  dir: string
  log: Logger
}

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

  /** Bytes the database uses on disk. */
  bytesUsed(): Promise<number> {
    return diskUsage(this.o.dir)
  }

  private async doStart(): Promise<void> {
    const db = new Level<string, Uint8Array>(this.o.dir, { keyEncoding: 'utf8', valueEncoding: 'view' })
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
