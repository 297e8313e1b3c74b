/** The documented size limits of data (docs/data.md). Records must fit JetStream's 1 MiB payload. */
export const MAX_DOC_BYTES = 512 * 1024
export const MAX_EVENT_BYTES = 512 * 1024
export const MAX_BATCH_OPS = 1000
export const MAX_BATCH_BYTES = 900 * 1024
/** File content is split into chunks of exactly this size (the last one shorter). */
export const CHUNK_BYTES = 256 * 1024
/** Chunks in flight to the log per upload: bounds an upload's memory to about 4 MiB. */
export const UPLOAD_WINDOW = 16
