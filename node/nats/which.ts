import { accessSync, constants } from 'node:fs'
import path from 'node:path'

/** The absolute path of an executable: `program` itself when it has a slash, else found on PATH. */
export function findExecutable(program: string, envPath = process.env.PATH ?? ''): string | undefined {
  const candidates = program.includes('/') ? [path.resolve(program)] : envPath.split(path.delimiter).filter(Boolean).map((dir) => path.join(dir, program))
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK)
      return candidate
    } catch {
      // not here; try the next one
    }
  }
  return undefined
}
