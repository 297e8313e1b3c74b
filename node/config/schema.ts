/**
 * The config file's schema: every key, its type and its default. TOML keys are snake_case; the
 * normalised Config handed to the node is camelCase with units in the names (shutdownTimeoutMs).
 * fabric.example.toml documents the same keys and test/config.test.ts loads it.
 */
import { z } from 'zod'
import { parseHostPort } from './hostport.ts'
import { parseDurationMs } from './units.ts'

/** Site names are JetStream domains and node ids are NATS server names: both end up in subjects. */
export const NAME_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/
const nameRule = 'lowercase letters, digits and "-", starting with a letter or digit, at most 63 characters'

const name = (what: string) =>
  z.string({ error: `expected a ${what} (string)` }).regex(NAME_PATTERN, { error: (iss) => `expected a ${what}: ${nameRule}; got ${JSON.stringify(iss.input)}` })

const hostPort = z
  .string({ error: 'expected "host:port" (string)' })
  .transform((text, ctx) => {
    const hp = parseHostPort(text)
    if (!hp) {
      ctx.addIssue({ code: 'custom', message: `expected "host:port", got ${JSON.stringify(text)}` })
      return z.NEVER
    }
    return hp
  })

const duration = z
  .string({ error: 'expected a duration such as "10s" (string)' })
  .transform((text, ctx) => {
    const ms = parseDurationMs(text)
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: `expected a duration such as "500ms", "10s" or "1m", got ${JSON.stringify(text)}` })
      return z.NEVER
    }
    return ms
  })

const port = z
  .number({ error: 'expected a port number (integer)' })
  .int({ error: 'expected a port number (integer)' })
  .min(0, { error: 'expected a port number from 0 to 65535' })
  .max(65535, { error: 'expected a port number from 0 to 65535' })

const natsUrl = z
  .string({ error: 'expected a NATS URL such as "nats://127.0.0.1:4222" (string)' })
  .regex(/^(nats|tls|ws|wss):\/\/[^\s]+$/, { error: 'expected a NATS URL such as "nats://127.0.0.1:4222"' })

export const ConfigSchema = z.strictObject({
  node: z
    .strictObject({
      id: name('node id').optional(),
      site: name('site name').default('local'),
      data_dir: z.string({ error: 'expected a directory path (string)' }).min(1, { error: 'must not be empty' }).default('.fabric'),
      shutdown_timeout: duration.default(10_000),
    })
    .prefault({}),
  api: z.strictObject({ listen: hostPort.default({ host: '127.0.0.1', port: 7400 }) }).prefault({}),
  http: z.strictObject({ listen: hostPort.default({ host: '127.0.0.1', port: 7480 }) }).prefault({}),
  nats: z
    .strictObject({
      port: port.default(4250),
      url: natsUrl.optional(),
      binary: z.string({ error: 'expected a program name or path (string)' }).min(1).default('nats-server'),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal'], { error: 'expected one of trace, debug, info, warn, error, fatal' }).default('info'),
      format: z.enum(['auto', 'json', 'pretty'], { error: 'expected one of auto, json, pretty' }).default('auto'),
    })
    .prefault({}),
})

export type RawConfig = z.output<typeof ConfigSchema>
