/**
 * Structured logs: one JSON object per line on stdout (what journald and log shippers want), or
 * pino-pretty's readable lines when stdout is a terminal. Secrets never reach a log line: known
 * secret fields are censored here, and URLs lose their credentials through redactUrl().
 */
import { pino, type Logger as PinoLogger } from 'pino'
import pretty from 'pino-pretty'

export type Logger = PinoLogger

export interface LogOptions {
  level: string
  /** auto: pretty on a TTY, JSON otherwise. */
  format: 'auto' | 'json' | 'pretty'
  /** Defaults to stdout. */
  destination?: NodeJS.WritableStream
}

/** Field names whose values are never written, at any depth we log. */
const SECRET_FIELDS = ['password', 'pass', 'token', 'secret', 'authorization', 'credentials', 'seed', 'nkey', 'leafnodePassword', 'leafnode_password']
const REDACT_PATHS = SECRET_FIELDS.flatMap((f) => [f, `*.${f}`, `*.*.${f}`])

export function createLogger(options: LogOptions): Logger {
  const destination = options.destination ?? process.stdout
  const usePretty = options.format === 'pretty' || (options.format === 'auto' && (destination as NodeJS.WriteStream).isTTY === true)
  const base = {
    level: options.level,
    base: { pid: process.pid },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  }
  if (usePretty) return pino(base, pretty({ destination: destination as NodeJS.WritableStream, sync: true, ignore: 'pid,hostname' }))
  return pino(base, destination)
}

/** A logger that writes nothing, for library use and tests that do not read logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' })
}

/** "nats://user:pw@host:4222" -> "nats://host:4222"; anything unparsable is returned as is. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url)
    if (!u.username && !u.password) return url
    u.username = ''
    u.password = ''
    return u.toString().replace(/\/$/, '')
  } catch {
    return url
  }
}
