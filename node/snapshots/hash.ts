/**
 * Pure: the portable hash of a volume's content. It is built like DataPlane.contentHash (every
 * dataset by its path inside the volume and its kind, then its documents by key, its files by
 * name with size and SHA-256, its events in order; each field length-prefixed), except that an
 * event counts by its ordinal in the stream instead of its log position. Positions differ in a
 * clone or an imported archive; the ordinals, like the rest, do not. So for a volume without
 * events the two hashes are equal.
 */
import { createHash, type Hash } from 'node:crypto'
import type { DatasetKind } from '../catalog/index.ts'

const encoder = new TextEncoder()

export class PortableHash {
  private readonly h: Hash = createHash('sha256')
  private events = 0

  private field(s: string | Uint8Array): void {
    const b = typeof s === 'string' ? encoder.encode(s) : s
    this.h.update(`${b.length}:`).update(b)
  }

  /** Starts a dataset; `relPath` is its path inside the volume, with a leading "/". */
  dataset(relPath: string, kind: DatasetKind): void {
    this.field(relPath)
    this.field(kind)
    this.events = 0
  }

  /** A table's document (its JSON text exactly as stored), in key order. */
  doc(key: string, json: string): void {
    this.field(key)
    this.field(json)
  }

  /** A file, in name order. */
  file(name: string, size: number, sha256: string): void {
    this.field(name)
    this.field(`${size}:${sha256}`)
  }

  /** A stream's next event. */
  event(json: string): void {
    this.field(String(++this.events))
    this.field(json)
  }

  digest(): string {
    return this.h.digest('hex')
  }
}
