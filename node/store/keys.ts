/**
 * Pure: the store's key layout. Every key of the node's LevelDB is built here, so the layout is
 * written down in one place:
 *
 *   meta/wseq                         last writer sequence this node allocated
 *   outbox/<wseq>                     a write accepted here, kept until JetStream's copy is safe
 *   cat/applied                       catalog log position applied
 *   cat/home                          the site whose catalog log this site mirrors (edges)
 *   cat/vol/<volumeId>                a volume record
 *   cat/ds/<datasetId>                a dataset record
 *   cat/model/<tenant/name>@<version> a model version record
 *   cat/dep/<tenant/name>             a model's deployment
 *   vol/<volumeId>/applied            volume log position applied
 *   vol/<volumeId>/w/<writerId>       last writer sequence applied from that writer
 *   vol/<volumeId>/c/<sha256>         the chunk is the volume's: a commit applied refers to it
 *                                     (set by commits, removed by chunk GC; the same at every node)
 *   vol/<volumeId>/cs/<sha256>        this site's copy of the chunk stream holds it: [position, time]
 *   vol/<volumeId>/cg/<sha256>        condemned by chunk GC phase 1 (its stream position)
 *   vol/<volumeId>/cseen              chunk stream position tracked up to (DataPlane.trackChunks)
 *   vol/<volumeId>/s/<name>           a snapshot: its log position and time
 *   vol/<volumeId>/hash               rolling hash of the log as applied (replication/hash.ts)
 *   vol/<volumeId>/hc/<seq>           the rolling hash at a checkpoint position
 *   chunk/<sha256>                    where the chunk's bytes are in the pack files (chunks.ts);
 *                                     shared by every volume on the node
 *   ds/<datasetId>/stat               count, bytes, last write position
 *   ds/<datasetId>/h/<name>           head of a table key or file: its newest version (see Head)
 *   ds/<datasetId>/t/<key>\0<inv>     a table document version (inv: see inv())
 *   ds/<datasetId>/f/<name>\0<inv>    a file version (its chunk list) or a tombstone
 *   ds/<datasetId>/e/<seq>            a stream event
 *   ds/<datasetId>/et/<time>/<seq>    time index of stream events
 *
 * Positions are 16 hex digits so that string order is numeric order. Versions are stored under
 * the inverted position, so the first entry at or after `<key>\0<inv(S)>` is the newest version at
 * or before S: a point read at any position is one seek.
 */

const MAX = 0xffffffffffffffffn

/** Fixed-width hex of a log position (or a time in ms). */
export const hex = (n: number): string => n.toString(16).padStart(16, '0')

/** Inverted fixed-width hex: newer positions sort first. */
export const inv = (seq: number): string => (MAX - BigInt(seq)).toString(16).padStart(16, '0')

export const fromInv = (text: string): number => Number(MAX - BigInt(`0x${text}`))

/** Separates a user key or file name from its version suffix; user keys never contain it. */
export const SEP = '\u0000'
/** The smallest string above every `<key>\0...`: seek here to skip a key's older versions. */
export const AFTER_SEP = '\u0001'

export const writerSeq = 'meta/wseq'
export const outbox = (wseq: number) => `outbox/${hex(wseq)}`
export const outboxPrefix = 'outbox/'

export const catalogApplied = 'cat/applied'
export const catalogHome = 'cat/home'
export const catalogVolume = (id: string) => `cat/vol/${id}`
export const catalogVolumePrefix = 'cat/vol/'
export const catalogDataset = (id: string) => `cat/ds/${id}`
export const catalogDatasetPrefix = 'cat/ds/'
export const catalogModel = (name: string, version: string) => `cat/model/${name}@${version}`
export const catalogModelPrefix = 'cat/model/'
export const catalogDeployment = (model: string) => `cat/dep/${model}`
export const catalogDeploymentPrefix = 'cat/dep/'

export const volumeApplied = (volumeId: string) => `vol/${volumeId}/applied`
/** Position in the site's copy of the volume's chunk stream up to which this node has marked the chunks it holds. */
export const volumeChunkTracked = (volumeId: string) => `vol/${volumeId}/cseen`
export const volumeWriter = (volumeId: string, writer: string) => `vol/${volumeId}/w/${writer}`
export const volumeChunk = (volumeId: string, sha256: string) => `vol/${volumeId}/c/${sha256}`
export const volumeChunkPrefix = (volumeId: string) => `vol/${volumeId}/c/`
export const volumeChunkSeen = (volumeId: string, sha256: string) => `vol/${volumeId}/cs/${sha256}`
export const volumeChunkSeenPrefix = (volumeId: string) => `vol/${volumeId}/cs/`
export const volumeChunkCondemned = (volumeId: string, sha256: string) => `vol/${volumeId}/cg/${sha256}`
export const volumeChunkCondemnedPrefix = (volumeId: string) => `vol/${volumeId}/cg/`
export const snapshot = (volumeId: string, name: string) => `vol/${volumeId}/s/${name}`
export const volumeHash = (volumeId: string) => `vol/${volumeId}/hash`
export const volumeHashCheckpoint = (volumeId: string, seq: number) => `vol/${volumeId}/hc/${hex(seq)}`
export const volumeHashCheckpointPrefix = (volumeId: string) => `vol/${volumeId}/hc/`
/** Every key of a volume's own state on this node (not its datasets'). */
export const volumePrefix = (volumeId: string) => `vol/${volumeId}/`
export const snapshotPrefix = (volumeId: string) => `vol/${volumeId}/s/`

export const chunk = (sha256: string) => `chunk/${sha256}`
export const chunkPrefix = 'chunk/'

export const datasetStat = (datasetId: string) => `ds/${datasetId}/stat`
/** Every key of a dataset on this node. */
export const datasetPrefix = (datasetId: string) => `ds/${datasetId}/`

/**
 * The head of a table key or a file name: newest version, its size and whether it is live. Kept
 * beside the versions so that applying a batch reads every key it touches in one getMany, and a
 * latest-version read is two point reads instead of an iterator.
 */
export const head = (datasetId: string, name: string) => `ds/${datasetId}/h/${name}`

/** `<base><name>\0<inv(seq)>`: the key of a version of a table document or a file. */
export const versionKey = (base: string, name: string, seq: number) => `${base}${name}${SEP}${inv(seq)}`

export const tablePrefix = (datasetId: string) => `ds/${datasetId}/t/`
export const tableVersion = (datasetId: string, key: string, seq: number) => versionKey(tablePrefix(datasetId), key, seq)

export const filePrefix = (datasetId: string) => `ds/${datasetId}/f/`
export const fileVersion = (datasetId: string, name: string, seq: number) => versionKey(filePrefix(datasetId), name, seq)

export const eventPrefix = (datasetId: string) => `ds/${datasetId}/e/`
export const event = (datasetId: string, seq: number) => `${eventPrefix(datasetId)}${hex(seq)}`
export const eventTimePrefix = (datasetId: string) => `ds/${datasetId}/et/`
export const eventTime = (datasetId: string, timeMs: number, seq: number) => `${eventTimePrefix(datasetId)}${hex(timeMs)}/${hex(seq)}`

/** Splits `<prefix><name>\0<inv>` into name and position. */
export function splitVersion(prefix: string, key: string): { name: string; seq: number } {
  const at = key.lastIndexOf(SEP)
  return { name: key.slice(prefix.length, at), seq: fromInv(key.slice(at + 1)) }
}

/** The smallest key greater than every key starting with prefix. */
export const prefixEnd = (prefix: string): string => `${prefix}\u{10ffff}`
