/**
 * Replication: fabric's logs and how they are written and applied. A volume's writes are
 * appended durably by LogWriter and applied in order by a Follower on every node that holds the
 * volume; the catalog is a log applied the same way.
 */
export { Follower, type Apply, type ApplyResult, type FollowerOptions, type Outcome } from './follower.ts'
export { LogWriter, RETAIN_AFTER_ACK_MS, type WriterOptions } from './writer.ts'
export * from './records.ts'
export * from './hash.ts'
