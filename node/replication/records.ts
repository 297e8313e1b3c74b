/**
 * Pure: the records of fabric's logs and their encoding (MessagePack). A volume log holds data
 * records; the catalog log holds namespace records. Records written by a node carry its writer id
 * and a per-writer sequence (w, s): appliers drop a record whose (w, s) they have applied, so a
 * record re-published after a crash is applied once, even beyond JetStream's dedup window.
 */
import { decode, Encoder } from '@msgpack/msgpack'
import { FabricError } from '../errors/index.ts'
import type { Signature } from '../models/index.ts'

export interface Written {
  /** Writer id (the node id). */
  w?: string
  /** Writer sequence. */
  s?: number
}

export interface TableOp {
  k: string
  /** Document JSON bytes; absent: delete. */
  d?: Uint8Array
  /** Expected version (0: must not exist). */
  x?: number
}

export type VolumeRecord = Written &
  (
    | { op: 'put'; ds: string; k: string; d: Uint8Array; x?: number }
    | { op: 'del'; ds: string; k: string; x?: number }
    | { op: 'batch'; ds: string; ops: TableOp[] }
    /**
     * A file's commit. nx: chunks the upload did not send because the volume held them already
     * (deduplicated); they must still be the volume's when the commit applies (see 'cgc').
     */
    | { op: 'file'; ds: string; n: string; size: number; sha: string; chunks: string[]; nx?: string[] }
    | { op: 'fdel'; ds: string; n: string }
    | { op: 'event'; ds: string; d: Uint8Array }
    /** A snapshot: the name of this very position of the volume's log. */
    | { op: 'snap'; name: string }
    | { op: 'snaprm'; name: string }
    /** Fills a position and changes nothing (see LogWriter.padTo). */
    | { op: 'nop' }
    /**
     * Chunk garbage collection, in two steps decided at the home (DataPlane.collectChunks).
     * Phase 1 condemns chunks no kept file version refers to ([sha256, chunk stream position])
     * as of log position `at` (a chunk a commit after `at` refers to is left alone); a commit
     * applied after phase 1 that refers to one rescues it. Phase 2 removes those still
     * condemned: from the volume's chunks, from every site's copy of the chunk stream (that
     * message position only, so a copy sent again since survives) and, where no other volume
     * needs them, from the nodes' pack files.
     */
    | { op: 'cgc'; phase: 1 | 2; c: Array<[string, number]>; at?: number }
  )

export interface SnapshotSchedule {
  /** A cron expression (node-cron: 5 or 6 fields), evaluated in UTC. */
  cron: string
  /** Scheduled snapshots kept; older ones are removed after each new one. */
  keep: number
}

export interface VolumeEntry {
  id: string
  path: string
  home: string
  replicas: string[]
  createdMs: number
  schedule?: SnapshotSchedule
}

export type DatasetKind = 'table' | 'files' | 'stream'

export interface DatasetEntry {
  id: string
  path: string
  kind: DatasetKind
  volumeId: string
  description: string
  createdMs: number
}

/** A published model version (immutable): what it is, where its bytes are, what it was made from. */
export interface ModelEntry {
  /** "tenant/name". */
  name: string
  version: string
  description: string
  metrics: Record<string, number>
  /** Lineage: "VOLUME@SNAPSHOT" and the snapshot's log position. */
  trainedOn?: { volume: string; snapshot: string; seq: number }
  sha256: string
  size: number
  /** The file in the namespace that holds its bytes. */
  path: string
  signature: Signature
  producer: string
  opset: number
  createdMs: number
}

/** Where and how a model is served; one per model. */
export interface DeploymentEntry {
  model: string
  /** Versions that answer, with relative weights (at least one). */
  traffic: Array<{ version: string; weight: number }>
  /** Runs beside the answering version; its result is recorded, not returned. */
  shadow?: string
  /** Sites it is served at (empty with allSites). */
  sites: string[]
  allSites: boolean
  batching?: { maxBatch: number; maxDelayMs: number }
  updatedMs: number
}

export type CatalogRecord =
  | { op: 'vol+'; vol: VolumeEntry }
  | { op: 'vol-'; id: string }
  | { op: 'ds+'; ds: DatasetEntry }
  | { op: 'ds-'; id: string }
  | { op: 'vol~'; id: string; replicas: string[] }
  | { op: 'sched'; id: string; schedule: SnapshotSchedule | null }
  | { op: 'model+'; m: ModelEntry }
  | { op: 'model-'; name: string; version: string }
  /** Sets (replaces) a model's deployment. */
  | { op: 'dep'; d: DeploymentEntry }
  | { op: 'dep-'; model: string }

/**
 * One encoder for the process: its buffer grows to the largest record once and is reused, where
 * a fresh encoder per call starts at 2 KiB and copies a 256 KiB chunk record about eight times
 * while doubling (measured: that churn made garbage collection a third of an upload's CPU).
 * encode() returns a copy, so callers own their bytes.
 */
const encoder = new Encoder({ ignoreUndefined: true, initialBufferSize: 64 * 1024 })

export function encodeRecord(record: VolumeRecord | CatalogRecord): Uint8Array {
  return encoder.encode(record)
}

export function decodeVolumeRecord(data: Uint8Array): VolumeRecord {
  const r = decode(data) as VolumeRecord
  if (!r || typeof r !== 'object' || typeof (r as { op?: unknown }).op !== 'string') throw FabricError.internal('corrupt volume log record')
  return r
}

export function decodeCatalogRecord(data: Uint8Array): CatalogRecord {
  const r = decode(data) as CatalogRecord
  if (!r || typeof r !== 'object' || typeof (r as { op?: unknown }).op !== 'string') throw FabricError.internal('corrupt catalog record')
  return r
}

/** Generic (de)serialisation of stored values. */
export const pack = (value: unknown): Uint8Array => encoder.encode(value)
export const unpack = <T>(bytes: Uint8Array): T => decode(bytes) as T

/** Stream and subject names of the logs. */
export const CATALOG_STREAM = 'FABRIC_CATALOG'
export const CATALOG_SUBJECT = 'fabric.catalog'
export const volumeStream = (volumeId: string) => `FABRIC_VOL_${volumeId}`
export const volumeSubject = (volumeId: string) => `fabric.vol.${volumeId}`

/**
 * A volume's chunks: a stream beside its log, one subject per chunk (its SHA-256), the raw bytes
 * as the payload, at most one message per subject. Keeping file content out of the log keeps
 * the log small (fast to mirror, hash and replay) and lets the node that accepted an upload
 * skip reading its own chunks back; JetStream itself drops a chunk stored twice.
 */
export const chunkStream = (volumeId: string) => `FABRIC_CHK_${volumeId}`
export const chunkSubjects = (volumeId: string) => `fabric.chk.${volumeId}.*`
export const chunkSubject = (volumeId: string, sha256: string) => `fabric.chk.${volumeId}.${sha256}`
