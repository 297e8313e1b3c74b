/**
 * Pure: the rules of the global namespace. Paths are absolute and "/"-separated; each segment
 * matches [a-z0-9][a-z0-9._-]{0,62} (so "." and ".." cannot occur); no empty segment; depth at
 * most 16. "/" is the root volume's path and no dataset's.
 */
import { FabricError } from '../errors/index.ts'

export const SEGMENT = /^[a-z0-9][a-z0-9._-]{0,62}$/
export const MAX_DEPTH = 16

/** Names of files inside a files dataset: "/"-separated, each segment a plain file name. */
export const FILE_SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9._ +=,@~-]{0,254}$/
export const MAX_FILE_NAME_BYTES = 1024

/** Table keys: 1 to 1024 bytes of UTF-8, no NUL. */
export const MAX_KEY_BYTES = 1024

/** Returns the segments of a valid path or throws INVALID_ARGUMENT naming what is wrong. */
export function parsePath(path: string, what = 'path'): string[] {
  const bad = (reason: string) => FabricError.invalidArgument(`${what} ${JSON.stringify(path)}: ${reason}`, { details: { path } })
  if (typeof path !== 'string' || path === '') throw bad('must not be empty')
  if (!path.startsWith('/')) throw bad('must be absolute (start with "/")')
  if (path === '/') return []
  const segments = path.slice(1).split('/')
  if (segments.length > MAX_DEPTH) throw bad(`is ${segments.length} segments deep; the limit is ${MAX_DEPTH}`)
  for (const s of segments) {
    if (s === '') throw bad('has an empty segment (a doubled or trailing "/")')
    if (s === '.' || s === '..') throw bad(`has a "${s}" segment`)
    if (!SEGMENT.test(s)) throw bad(`segment ${JSON.stringify(s)} must match [a-z0-9][a-z0-9._-]{0,62}`)
  }
  return segments
}

/** A dataset path: a valid path other than "/". */
export function parseDatasetPath(path: string): string[] {
  const segments = parsePath(path, 'dataset path')
  if (segments.length === 0) throw FabricError.invalidArgument('dataset path "/": the root is a volume, not a dataset', { details: { path } })
  return segments
}

/** True when path is ancestor or equal to other ("/a" contains "/a" and "/a/b", not "/ab"). */
export function contains(ancestor: string, path: string): boolean {
  if (ancestor === '/') return true
  return path === ancestor || path.startsWith(`${ancestor}/`)
}

/** The nearest enclosing path among candidates (the longest that contains path). */
export function nearest<T extends { path: string }>(path: string, candidates: Iterable<T>): T | undefined {
  let best: T | undefined
  for (const c of candidates) {
    if (contains(c.path, path) && (!best || c.path.length > best.path.length)) best = c
  }
  return best
}

export function validateKey(key: string): void {
  if (typeof key !== 'string' || key.length === 0) throw FabricError.invalidArgument('key must not be empty')
  if (key.includes('\u0000')) throw FabricError.invalidArgument(`key ${JSON.stringify(key)} must not contain NUL`, { details: { key } })
  const bytes = Buffer.byteLength(key)
  if (bytes > MAX_KEY_BYTES) {
    throw FabricError.invalidArgument(`key ${JSON.stringify(key.slice(0, 40))}...: ${bytes} bytes; the limit is ${MAX_KEY_BYTES}`, { details: { key: key.slice(0, 64), limit: String(MAX_KEY_BYTES) } })
  }
}

/** Validates a file's name inside its dataset ("cam1/0001.jpg"). */
export function validateFileName(name: string, fullPath: string): void {
  const bad = (reason: string) => FabricError.invalidArgument(`file path ${JSON.stringify(fullPath)}: ${reason}`, { details: { path: fullPath } })
  if (name === '') throw bad('names a dataset, not a file in it')
  if (Buffer.byteLength(name) > MAX_FILE_NAME_BYTES) throw bad(`the name is longer than ${MAX_FILE_NAME_BYTES} bytes`)
  for (const s of name.split('/')) {
    if (s === '') throw bad('has an empty segment')
    if (s === '.' || s === '..') throw bad(`has a "${s}" segment`)
    if (!FILE_SEGMENT.test(s)) throw bad(`segment ${JSON.stringify(s)} has characters outside [A-Za-z0-9._ +=,@~-] or starts with one of ". -"`)
  }
}
