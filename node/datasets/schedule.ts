/**
 * Scheduled snapshots. A volume's schedule (cron expression, how many to keep) is in the catalog,
 * so every node knows it; the nodes of the volume's home site run it. A tick's snapshot is named
 * after the tick (auto-YYYYMMDD-HHMMSS, UTC), so when several nodes of the home site fire the
 * same tick, the log takes the first and refuses the rest as existing: one snapshot per tick.
 * After each tick the oldest scheduled snapshots beyond `keep` are removed (snapshots taken by
 * hand are never touched).
 */
import cron, { type ScheduledTask } from 'node-cron'
import type { Catalog, VolumeEntry } from '../catalog/index.ts'
import { FabricError } from '../errors/index.ts'
import type { Logger } from '../log/index.ts'
import type { DataPlane } from './index.ts'

export const SCHEDULED_PREFIX = 'auto-'

/** auto-20261125-143000 for a tick at 2026-11-25T14:30:00Z. */
export function scheduledName(tick: Date): string {
  const iso = tick.toISOString() // 2026-11-25T14:30:00.000Z
  return `${SCHEDULED_PREFIX}${iso.slice(0, 10).replaceAll('-', '')}-${iso.slice(11, 19).replaceAll(':', '')}`
}

export class SnapshotScheduler {
  private readonly tasks = new Map<string, { task: ScheduledTask; key: string }>()
  private readonly onChange = (v: VolumeEntry) => this.reconcile(v)
  private readonly onRemoved = (v: VolumeEntry) => this.drop(v.id)

  constructor(
    private readonly catalog: Catalog,
    private readonly data: DataPlane,
    private readonly site: string,
    private readonly log: Logger,
  ) {}

  start(): void {
    for (const v of this.catalog.listVolumes()) this.reconcile(v)
    this.catalog.on('volume-added', this.onChange)
    this.catalog.on('volume-changed', this.onChange)
    this.catalog.on('volume-removed', this.onRemoved)
  }

  async stop(): Promise<void> {
    this.catalog.off('volume-added', this.onChange)
    this.catalog.off('volume-changed', this.onChange)
    this.catalog.off('volume-removed', this.onRemoved)
    for (const id of [...this.tasks.keys()]) this.drop(id)
  }

  /** Runs the volume's schedule here iff it has one and this site is its home. */
  private reconcile(v: VolumeEntry): void {
    const key = v.schedule && v.home === this.site ? `${v.schedule.cron}|${v.schedule.keep}` : undefined
    if (this.tasks.get(v.id)?.key === key) return
    this.drop(v.id)
    if (!key || !v.schedule) return
    const schedule = v.schedule
    const task = cron.schedule(schedule.cron, (ctx) => this.tick(v.id, ctx.date, schedule.keep), { timezone: 'Etc/UTC', noOverlap: true, name: `snapshots of ${v.path}` })
    this.tasks.set(v.id, { task, key })
    this.log.info({ volume: v.path, cron: schedule.cron, keep: schedule.keep }, 'snapshot schedule running here')
  }

  private drop(volumeId: string): void {
    const t = this.tasks.get(volumeId)
    if (!t) return
    this.tasks.delete(volumeId)
    void t.task.destroy()
  }

  /** One tick: the tick's snapshot (unless another node took it), then retention. */
  async tick(volumeId: string, at: Date, keep: number): Promise<void> {
    const v = this.catalog.volume(volumeId)
    if (!v) return
    const tick = new Date(Math.floor(at.getTime() / 1000) * 1000)
    try {
      const s = await this.data.createSnapshot(v.path, scheduledName(tick))
      this.log.info({ volume: v.path, snapshot: s.name, seq: s.seq }, 'scheduled snapshot taken')
    } catch (err) {
      if (FabricError.from(err).code !== 'ALREADY_EXISTS') {
        this.log.warn({ volume: v.path, err }, 'scheduled snapshot failed')
        return
      }
    }
    try {
      const scheduled = (await this.data.listSnapshots(v.path)).filter((s) => s.name.startsWith(SCHEDULED_PREFIX))
      for (const old of scheduled.slice(0, Math.max(0, scheduled.length - keep))) {
        await this.data.deleteSnapshot(v.path, old.name).catch((err: unknown) => {
          if (FabricError.from(err).code !== 'NOT_FOUND') throw err
        })
      }
    } catch (err) {
      this.log.warn({ volume: v.path, err }, 'removing old scheduled snapshots failed')
    }
  }
}
