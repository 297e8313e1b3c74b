/** Who this node is: its stable id and the fabric version it runs. */
import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, open, readFile, rename } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { FabricError } from '../errors/index.ts'

const ID_FILE = 'node-id'
const ID_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/

/**
 * The node id: the configured one, else the one kept in the data dir, else a new one that is
 * written there (fsynced, then renamed into place) so every later start finds the same id.
 */
export async function resolveNodeId(dataDir: string, configured: string | undefined): Promise<string> {
  if (configured !== undefined) return configured
  const file = path.join(dataDir, ID_FILE)
  const kept = (await readFile(file, 'utf8').catch(() => undefined))?.trim()
  if (kept !== undefined) {
    if (!ID_PATTERN.test(kept)) {
      throw FabricError.failedPrecondition(`${file} holds ${JSON.stringify(kept)}, which is not a node id; fix or remove the file`, { details: { file } })
    }
    return kept
  }
  const id = `n-${randomBytes(6).toString('hex')}`
  await mkdir(dataDir, { recursive: true })
  const tmp = `${file}.tmp`
  const fh = await open(tmp, 'w', 0o644)
  try {
    await fh.writeFile(`${id}\n`)
    await fh.sync()
  } finally {
    await fh.close()
  }
  await rename(tmp, file)
  return id
}

let cachedVersion: string | undefined

/** The version in fabric's package.json (found from this file, in sources and in dist/ alike). */
export function fabricVersion(): string {
  if (cachedVersion) return cachedVersion
  let dir = path.dirname(fileURLToPath(import.meta.url))
  for (;;) {
    const candidate = path.join(dir, 'package.json')
    if (existsSync(candidate)) {
      const pkg = JSON.parse(readFileSync(candidate, 'utf8')) as { name?: string; version?: string }
      if (pkg.name === 'fabric' && pkg.version) return (cachedVersion = pkg.version)
    }
    const parent = path.dirname(dir)
    if (parent === dir) return (cachedVersion = '0.0.0-unknown')
    dir = parent
  }
}
