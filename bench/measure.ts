/** Timing, percentiles and process memory sampling for the benchmarks. */
import { readFile } from 'node:fs/promises'
import { setTimeout as delay } from 'node:timers/promises'

/** Linux's USER_HZ, the unit of /proc/<pid>/stat's CPU times (`getconf CLK_TCK`). */
export const TICKS_PER_SECOND = 100

/** CPU time (user + system, clock ticks) a process has used, from /proc/<pid>/stat (Linux). */
export async function cpuTicks(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')
  // Fields after the command name (which may hold spaces), from field 3 on: utime is 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return Number(fields[11] ?? 0) + Number(fields[12] ?? 0)
}

/**
 * Resolves once the processes together used at most `ticks` of CPU over a window of `windowMs`
 * (quiet: e.g. LevelDB done compacting after a big import), or after timeoutMs; with the seconds
 * it waited (a long wait means the figures that follow ran on a busy machine).
 */
export async function settle(pids: number[], o: { windowMs: number; ticks: number; timeoutMs: number }): Promise<number> {
  const total = async () => (await Promise.all(pids.map(cpuTicks))).reduce((a, b) => a + b, 0)
  const started = performance.now()
  let before = await total()
  while (performance.now() - started < o.timeoutMs) {
    await delay(o.windowMs)
    const now = await total()
    if (now - before <= o.ticks) break
    before = now
  }
  return (performance.now() - started) / 1000
}

/** Runs fn and returns its result with the wall time it took, in seconds. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; seconds: number }> {
  const started = performance.now()
  const value = await fn()
  return { value, seconds: (performance.now() - started) / 1000 }
}

/** The q-quantile (0..1) of samples by nearest rank; samples need not be sorted. */
export function quantile(samples: number[], q: number): number {
  if (samples.length === 0) return NaN
  const sorted = [...samples].sort((a, b) => a - b)
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))
  return sorted[rank]!
}

/**
 * Resident memory of a process in MiB, from /proc/<pid>/status (Linux): VmRSS and its parts,
 * anonymous (heap, buffers: what the process really holds) and file-backed (mapped files such as
 * LevelDB's tables: page cache the kernel can drop). Undefined once the process is gone.
 */
export interface Rss {
  total: number
  anon: number
  file: number
}

export async function rssMiB(pid: number): Promise<Rss | undefined> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '')
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)\\s+kB`, 'm').exec(status)?.[1] ?? NaN) / 1024
  const total = field('VmRSS')
  return Number.isNaN(total) ? undefined : { total, anon: field('RssAnon'), file: field('RssFile') }
}

export interface RssSamples {
  /** The first sample, taken when sampling starts. */
  start: Rss
  /** Maximum of each field over the samples (not necessarily at the same instant). */
  max: Rss
  /** The last sample, taken when stop() is called. */
  end: Rss
  count: number
}

const NONE: Rss = { total: NaN, anon: NaN, file: NaN }

/**
 * Samples a process's RSS every intervalMs until stop(). A timer rather than a loop of awaits, so
 * the sampling keeps its pace while the benchmark keeps the event loop busy (as far as it can).
 */
export async function sampleRss(pid: number, intervalMs = 250): Promise<{ stop(): Promise<RssSamples> }> {
  const start = (await rssMiB(pid)) ?? NONE
  const max = { ...start }
  let count = 1
  const take = async () => {
    const v = await rssMiB(pid)
    if (v === undefined) return undefined
    count++
    for (const k of ['total', 'anon', 'file'] as const) if (!(v[k] <= max[k])) max[k] = v[k]
    return v
  }
  const timer = setInterval(() => void take(), intervalMs)
  return {
    async stop() {
      clearInterval(timer)
      const end = (await take()) ?? NONE
      return { start, max, end, count }
    },
  }
}

/** Bytes per second -> MB/s (10^6 bytes, as disks and networks are quoted). */
export const mbps = (bytes: number, seconds: number): number => bytes / seconds / 1e6
