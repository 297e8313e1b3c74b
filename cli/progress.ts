/** Progress bars on stderr, only when stderr is a terminal (never in scripts or logs). */
import { createRequire } from 'node:module'
import { formatBytes } from './output.ts'

// Loaded only when a bar is shown (a terminal): scripts do not pay for it.
const require = createRequire(import.meta.url)

export interface Progress {
  update(done: number): void
  stop(): void
}

const NONE: Progress = { update: () => undefined, stop: () => undefined }

/** A bar for `total` units (bytes when unit is "bytes", else a count of `unit`). */
export function progress(label: string, total: number, unit: 'bytes' | string): Progress {
  if (!process.stderr.isTTY || total <= 0) return NONE
  const cliProgress = require('cli-progress') as typeof import('cli-progress')
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${label} [{bar}] {percentage}% {value_h}/{total_h} {eta_formatted}`,
      formatValue: (v, _o, type) => (type === 'value' || type === 'total' ? String(v) : String(v)),
      hideCursor: true,
      clearOnComplete: true,
    },
    cliProgress.Presets.shades_classic,
  )
  const human = (n: number) => (unit === 'bytes' ? formatBytes(n) : `${n} ${unit}`)
  bar.start(total, 0, { value_h: human(0), total_h: human(total) })
  return {
    update: (done) => bar.update(done, { value_h: human(done), total_h: human(total) }),
    stop: () => bar.stop(),
  }
}
