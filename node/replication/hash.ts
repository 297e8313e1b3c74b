/**
 * Pure: the rolling hash of a log. Every node that applies a volume's log folds each record into
 * h(n) = SHA-256(h(n-1) || seq || record bytes), kept with the applied position. Two sites with
 * the same hash at a position hold the same log up to it; a replica whose JetStream copy lost,
 * reordered or altered records (a corrupted store file that nats-server 2.9 restored silently
 * with fewer messages, say) ends up with another hash. Hashes at every CHECKPOINT_EVERY-th
 * position are kept so that sites at different positions can compare at a common one.
 */
import { createHash } from 'node:crypto'

export const CHECKPOINT_EVERY = 1024
export const ZERO_HASH = new Uint8Array(32)

export interface RollingHash {
  /** Last position folded in (0: none). */
  seq: number
  hash: Uint8Array
}

export const EMPTY_ROLLING_HASH: RollingHash = Object.freeze({ seq: 0, hash: ZERO_HASH })

/** Folds one record in; positions at or below the hash's are ignored (already folded). */
export function fold(h: RollingHash, seq: number, data: Uint8Array): RollingHash {
  if (seq <= h.seq) return h
  const position = Buffer.alloc(8)
  position.writeBigUInt64BE(BigInt(seq))
  return { seq, hash: createHash('sha256').update(h.hash).update(position).update(data).digest() }
}

export const isCheckpoint = (seq: number): boolean => seq % CHECKPOINT_EVERY === 0

export const hashHex = (hash: Uint8Array): string => Buffer.from(hash).toString('hex')
