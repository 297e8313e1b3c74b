/**
 * The config file's schema: every key, its type and its default. TOML keys are snake_case; the
 * normalised Config handed to the node is camelCase with units in the names (shutdownTimeoutMs).
 * fabric.example.toml documents the same keys and test/config.test.ts loads it.
 */
import { z } from 'zod'
import { parseHostPort } from './hostport.ts'
import { parseBytes, parseDurationMs } from './units.ts'

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

/** A string with a unit, parsed to a number by `parse`; the error shows examples. */
const withUnit = (what: string, examples: string[], parse: (text: string) => number | undefined) =>
  z.string({ error: `expected a ${what} such as "${examples[0]}" (string)` }).transform((text, ctx) => {
    const value = parse(text)
    if (value === undefined) {
      ctx.addIssue({ code: 'custom', message: `expected a ${what} such as ${examples.map((e) => `"${e}"`).join(', ').replace(/, ([^,]*)$/, ' or $1')}, got ${JSON.stringify(text)}` })
      return z.NEVER
    }
    return value
  })

const duration = withUnit('duration', ['500ms', '10s', '1m'], parseDurationMs)
const size = withUnit('size', ['512MiB', '2GiB', '100MB'], parseBytes)

const threads = z
  .number({ error: 'expected a number of threads (integer, 0: onnxruntime picks)' })
  .int({ error: 'expected a number of threads (integer, 0: onnxruntime picks)' })
  .min(0, { error: 'expected a number of threads from 0 (onnxruntime picks) to 256' })
  .max(256, { error: 'expected a number of threads from 0 (onnxruntime picks) to 256' })

const port = z
  .number({ error: 'expected a port number (integer)' })
  .int({ error: 'expected a port number (integer)' })
  .min(0, { error: 'expected a port number from 0 to 65535' })
  .max(65535, { error: 'expected a port number from 0 to 65535' })

/** Drops the userinfo of a URL, so a config error never shows a password. */
export function withoutCredentials(url: string): string {
  return url.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^@/]*@/, '$1')
}

/** A URL of the given scheme that names a host and a port; user and password only where allowed. */
const serverUrl = (scheme: 'nats-leaf' | 'nats-route', shape: string, credentials: boolean) =>
  z.string({ error: `expected a URL such as "${shape}" (string)` }).superRefine((text, ctx) => {
    let u: URL | undefined
    try {
      u = new URL(text)
    } catch {
      u = undefined
    }
    const valid =
      u !== undefined &&
      u.protocol === `${scheme}:` &&
      u.port !== '' &&
      parseHostPort(`${u.hostname}:${u.port}`) !== undefined &&
      (u.pathname === '' || u.pathname === '/') &&
      !u.search &&
      !u.hash
    if (!valid) ctx.addIssue({ code: 'custom', message: `expected "${shape}", got ${JSON.stringify(withoutCredentials(text))}` })
    else if (!credentials && (u!.username || u!.password)) ctx.addIssue({ code: 'custom', message: `expected "${shape}" without a user or password, got ${JSON.stringify(withoutCredentials(text))} with one` })
  })

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
      leafnode_listen: hostPort.optional(),
      leafnode_advertise: hostPort.optional(),
      leafnode_user: z.string({ error: 'expected a user name (string)' }).min(1, { error: 'must not be empty' }).optional(),
      // Never echo the value: it is a secret.
      leafnode_password: z.string({ error: 'expected a password (string)' }).min(1, { error: 'must not be empty' }).optional(),
      hub_urls: z.array(serverUrl('nats-leaf', 'nats-leaf://[user:pass@]host:port', true), { error: 'expected a list of URLs such as ["nats-leaf://user:pass@hub.example.net:7422"]' }).default([]),
      cluster_name: name('cluster name').optional(),
      cluster_listen: hostPort.optional(),
      routes: z.array(serverUrl('nats-route', 'nats-route://host:port', false), { error: 'expected a list of URLs such as ["nats-route://10.0.0.1:6222"]' }).default([]),
      replicas: z
        .number({ error: 'expected a number of replicas from 1 to 5 (integer)' })
        .int({ error: 'expected a number of replicas from 1 to 5 (integer)' })
        .min(1, { error: 'expected a number of replicas from 1 to 5' })
        .max(5, { error: 'expected a number of replicas from 1 to 5' })
        .default(1),
      monitor_listen: hostPort.optional(),
    })
    .superRefine(checkTopology, { when: (payload) => payload.issues.length === 0 })
    .prefault({}),
  models: z
    .strictObject({
      max_bytes: size.default(512 * 1024 ** 2),
      validation_memory: size
        .refine((b) => b >= 192 * 1024 ** 2, { error: 'must be at least 192MiB (Node and onnxruntime alone take about 85 MiB)' })
        .default(2 * 1024 ** 3),
      validation_timeout: duration.default(60_000),
      intra_op_threads: threads.default(0),
      inter_op_threads: threads.default(0),
    })
    .prefault({}),
  gc: z
    .strictObject({
      interval: duration.default(10 * 60_000),
      unclaimed_chunk_grace: duration.default(24 * 3_600_000),
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

/** Keys that configure the embedded nats-server: meaningless (and refused) with an external NATS. */
export const EMBEDDED_ONLY_KEYS = [
  'leafnode_listen',
  'leafnode_advertise',
  'leafnode_user',
  'leafnode_password',
  'hub_urls',
  'cluster_name',
  'cluster_listen',
  'routes',
  'monitor_listen',
] as const

interface NatsSection {
  url?: string | undefined
  leafnode_listen?: unknown
  leafnode_advertise?: unknown
  leafnode_user?: string | undefined
  leafnode_password?: string | undefined
  hub_urls: string[]
  cluster_name?: string | undefined
  cluster_listen?: unknown
  routes: string[]
  replicas: number
}

/** Rules between [nats] keys; each issue names the key that has to change. */
function checkTopology(n: NatsSection, ctx: z.RefinementCtx): void {
  const issue = (key: string, message: string) => ctx.addIssue({ code: 'custom', path: [key], message })
  const isSet = (key: (typeof EMBEDDED_ONLY_KEYS)[number]) => {
    const v = (n as unknown as Record<string, unknown>)[key]
    return Array.isArray(v) ? v.length > 0 : v !== undefined
  }
  if (n.url !== undefined) {
    for (const key of EMBEDDED_ONLY_KEYS) {
      if (isSet(key)) issue(key, 'only applies to the embedded nats-server; configure your NATS deployment instead (nats.url is set)')
    }
    return
  }
  if ((n.leafnode_user === undefined) !== (n.leafnode_password === undefined)) {
    const missing = n.leafnode_user === undefined ? 'leafnode_user' : 'leafnode_password'
    const other = missing === 'leafnode_user' ? 'leafnode_password' : 'leafnode_user'
    issue(missing, `must be set together with nats.${other}`)
  }
  if (n.leafnode_listen === undefined) {
    for (const key of ['leafnode_advertise', 'leafnode_user', 'leafnode_password'] as const) {
      if (isSet(key)) issue(key, 'only applies to a hub: set nats.leafnode_listen too')
    }
  }
  if (n.cluster_listen === undefined) {
    for (const key of ['cluster_name', 'routes'] as const) {
      if (isSet(key)) issue(key, 'only applies to a clustered site: set nats.cluster_listen too')
    }
    if (n.replicas > 1) issue('replicas', `${n.replicas} replicas need a clustered site: set nats.cluster_listen and nats.routes (one nats-server keeps one replica)`)
  } else if (n.routes.length === 0) {
    // nats-server 2.9 refuses to start a JetStream cluster without configured routes.
    issue('routes', 'a clustered site needs its routes: list every server of the site, this one included (nats-route://host:port)')
  }
}
