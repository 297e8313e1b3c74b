/** Timing, percentiles and process memory sampling for the benchmarks. */
import { readFile } from 'node:fs/promises'

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

/** Resident set size of a process in MiB, from /proc (Linux); undefined once it is gone. */
export async function rssMiB(pid: number): Promise<number | undefined> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '')
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)
  return m ? Number(m[1]) / 1024 : undefined
}

export interface RssSamples {
  /** RSS before the first sample interval, MiB. */
  start: number
  max: number
  /** The last sample, taken when stop() is called. */
  end: number
  count: number
}

/**
 * Samples a process's RSS every intervalMs until stop(). A timer rather than a loop of awaits, so
 * the sampling keeps its pace while the benchmark keeps the event loop busy (as far as it can).
 */
export async function sampleRss(pid: number, intervalMs = 250): Promise<{ stop(): Promise<RssSamples>; max(): number }> {
  const start = (await rssMiB(pid)) ?? NaN
  let max = start
  let count = 1
  const take = async () => {
    const v = await rssMiB(pid)
    if (v === undefined) return undefined
    count++
    if (v > max) max = v
    return v
  }
  const timer = setInterval(() => void take(), intervalMs)
  return {
    max: () => max,
    async stop() {
      clearInterval(timer)
      const end = (await take()) ?? NaN
      return { start, max, end, count }
    },
  }
}

/** Bytes per second -> MB/s (10^6, as disks and networks are quoted). Also shown: MiB/s in docs. */
export const mbps = (bytes: number, seconds: number): number => bytes / seconds / 1e6
