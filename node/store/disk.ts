import { lstat, readdir } from 'node:fs/promises'
import path from 'node:path'

/** Bytes allocated on disk under dir (files only, links not followed); 0 when it does not exist. */
export async function diskUsage(dir: string): Promise<number> {
  let total = 0
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => [])
  for (const entry of entries) {
    const full = path.join(dir, entry.name)
    if (entry.isDirectory()) total += await diskUsage(full)
    else if (entry.isFile()) total += await lstat(full).then((s) => s.blocks * 512, () => 0)
  }
  return total
}
