/**
 * Config: defaults -> TOML file -> environment -> validate -> normalise -> freeze.
 * Errors name the key path and the bad value (`api.listen: expected "host:port", got "x"`), and
 * the file position for TOML syntax errors, so a wrong config fails before anything starts.
 */
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { parse as parseToml, TomlError } from 'smol-toml'
import type { z } from 'zod'
import { FabricError } from '../errors/index.ts'
import { ConfigSchema } from './schema.ts'
import type { HostPort } from './hostport.ts'

export { formatHostPort, isLoopback, parseHostPort, type HostPort } from './hostport.ts'
export { NAME_PATTERN } from './schema.ts'
export { parseBytes, parseDurationMs } from './units.ts'

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'

export interface Config {
  readonly node: {
    /** Set in config, or undefined: then generated once and kept in the data dir. */
    readonly id: string | undefined
    readonly site: string
    /** Absolute. */
    readonly dataDir: string
    readonly shutdownTimeoutMs: number
  }
  readonly api: { readonly listen: HostPort }
  readonly http: { readonly listen: HostPort }
  readonly nats: {
    /** Client port of the embedded nats-server (0: any free port). */
    readonly port: number
    /** An external NATS to use instead of the embedded server. */
    readonly url: string | undefined
    /** The nats-server program the node supervises. */
    readonly binary: string
    /** This site is a hub: the embedded server accepts leafnode connections here (port 0: any). */
    readonly leafnodeListen: HostPort | undefined
    /** The host:port edges dial, sent to them instead of the listen address (proxy, NAT, DNS). */
    readonly leafnodeAdvertise: HostPort | undefined
    /** The credentials a leafnode must present to this hub; both or neither. */
    readonly leafnodeUser: string | undefined
    /** A secret: never logged (the logger censors this field). */
    readonly leafnodePassword: string | undefined
    /** This site is a leafnode of these hub servers (nats-leaf://[user:pass@]host:port). */
    readonly hubUrls: readonly string[]
    /** Servers of one site cluster under this name (the site name unless set). */
    readonly clusterName: string
    /** Route listener of a clustered site (port 0: any). */
    readonly clusterListen: HostPort | undefined
    /** The site's servers (nats-route://host:port), this one included. */
    readonly routes: readonly string[]
    /** JetStream replicas of the streams fabric creates at this site. */
    readonly replicas: number
    /** nats-server HTTP monitoring (/varz, /leafz, /routez, /jsz); off unless set. */
    readonly monitorListen: HostPort | undefined
  }
  readonly models: {
    /** The largest model accepted by publish. */
    readonly maxBytes: number
    /** Resident memory the process that validates a model may use. */
    readonly validationMemoryBytes: number
    readonly validationTimeoutMs: number
    /** onnxruntime threads per session (0: its default). */
    readonly intraOpThreads: number
    readonly interOpThreads: number
  }
  readonly gc: {
    /** How often the node collects garbage by itself. */
    readonly intervalMs: number
    /** Chunks no commit claimed (uploads in progress or failed) are kept this long. */
    readonly unclaimedChunkGraceMs: number
  }
  readonly log: { readonly level: LogLevel; readonly format: 'auto' | 'json' | 'pretty' }
  /** The file the config came from, if any. */
  readonly source: string | undefined
}

export interface LoadConfigOptions {
  /** A TOML file; without it the node runs on defaults (and the environment). */
  file?: string | undefined
  /** Environment for FABRIC_<SECTION>_<KEY> overrides; defaults to process.env. */
  env?: NodeJS.ProcessEnv
  /** Base for relative paths that do not come from a file; defaults to process.cwd(). */
  cwd?: string
}

/** The prefix of environment overrides: FABRIC_API_LISTEN sets api.listen, and so on. */
export const ENV_PREFIX = 'FABRIC_'

export function loadConfig(options: LoadConfigOptions = {}): Config {
  const env = options.env ?? process.env
  const cwd = options.cwd ?? process.cwd()
  const file = options.file === undefined ? undefined : path.resolve(cwd, options.file)
  const raw: Record<string, unknown> = file === undefined ? {} : readToml(file)
  const fromEnv = applyEnv(raw, env)

  const parsed = ConfigSchema.safeParse(raw)
  if (!parsed.success) throw configError(parsed.error, file, fromEnv)
  const c = parsed.data

  // Relative paths in a file are relative to that file, so a systemd unit's config means the same
  // whatever the working directory; defaults and environment values are relative to cwd.
  const dataDirFromFile = file !== undefined && !fromEnv.has('node.data_dir') && isSet(raw, 'node', 'data_dir')
  const dataDir = path.resolve(dataDirFromFile ? path.dirname(file) : cwd, c.node.data_dir)

  return deepFreeze({
    node: { id: c.node.id, site: c.node.site, dataDir, shutdownTimeoutMs: c.node.shutdown_timeout },
    api: { listen: c.api.listen },
    http: { listen: c.http.listen },
    nats: {
      port: c.nats.port,
      url: c.nats.url,
      binary: c.nats.binary,
      leafnodeListen: c.nats.leafnode_listen,
      leafnodeAdvertise: c.nats.leafnode_advertise,
      leafnodeUser: c.nats.leafnode_user,
      leafnodePassword: c.nats.leafnode_password,
      hubUrls: c.nats.hub_urls,
      clusterName: c.nats.cluster_name ?? c.node.site,
      clusterListen: c.nats.cluster_listen,
      routes: c.nats.routes,
      replicas: c.nats.replicas,
      monitorListen: c.nats.monitor_listen,
    },
    models: {
      maxBytes: c.models.max_bytes,
      validationMemoryBytes: c.models.validation_memory,
      validationTimeoutMs: c.models.validation_timeout,
      intraOpThreads: c.models.intra_op_threads,
      interOpThreads: c.models.inter_op_threads,
    },
    gc: { intervalMs: c.gc.interval, unclaimedChunkGraceMs: c.gc.unclaimed_chunk_grace },
    log: { level: c.log.level, format: c.log.format },
    source: file,
  })
}

function readToml(file: string): Record<string, unknown> {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (cause) {
    const reason = (cause as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (cause as Error).message
    throw FabricError.invalidArgument(`config file ${file}: ${reason}`, { cause, details: { file } })
  }
  try {
    return parseToml(text) as Record<string, unknown>
  } catch (cause) {
    if (cause instanceof TomlError) {
      const first = cause.message.split('\n')[0] ?? cause.message
      throw FabricError.invalidArgument(`${file}:${cause.line}:${cause.column}: ${first.replace(/^Invalid TOML document: /, '')}`, {
        cause,
        details: { file, line: String(cause.line), column: String(cause.column) },
      })
    }
    throw cause
  }
}

/**
 * Copies FABRIC_<SECTION>_<KEY> variables over the file's values, for every key the schema knows.
 * Numbers are read as numbers and lists as comma-separated values (FABRIC_NATS_ROUTES="a,b").
 * Returns the key paths that came from the environment, so errors can name the variable.
 */
function applyEnv(raw: Record<string, unknown>, env: NodeJS.ProcessEnv): Map<string, string> {
  const fromEnv = new Map<string, string>()
  for (const [section, sectionSchema] of Object.entries(ConfigSchema.shape)) {
    for (const [key, keySchema] of Object.entries(unwrapObject(sectionSchema).shape)) {
      const name = `${ENV_PREFIX}${section}_${key}`.toUpperCase()
      const value = env[name]
      if (value === undefined || value === '') continue
      const target = (raw[section] ??= {}) as Record<string, unknown>
      const kind = baseType(keySchema)
      target[key] =
        kind === 'number' && /^-?\d+$/.test(value)
          ? Number(value)
          : kind === 'array'
            ? value.split(',').map((v) => v.trim()).filter(Boolean)
            : value
      fromEnv.set(`${section}.${key}`, name)
    }
  }
  return fromEnv
}

function unwrapObject(schema: unknown): { shape: Record<string, unknown> } {
  // Sections are strictObject(...).prefault({}): the object schema sits under def.innerType.
  let s = schema as { shape?: Record<string, unknown>; def?: { innerType?: unknown } }
  while (!s.shape && s.def?.innerType) s = s.def.innerType as typeof s
  if (!s.shape) throw new Error('config schema: section is not an object')
  return s as { shape: Record<string, unknown> }
}

/** The type under a key's defaults, optionals and transforms: "number", "array", "string", ... */
function baseType(schema: unknown): string | undefined {
  let s = schema as { def?: { type?: string; innerType?: unknown; in?: unknown } } | undefined
  for (let i = 0; s?.def && i < 10; i++) {
    const { type, innerType, in: input } = s.def
    if (innerType) s = innerType as typeof s
    else if (type === 'pipe' && input) s = input as typeof s
    else return type
  }
  return undefined
}

function isSet(raw: Record<string, unknown>, section: string, key: string): boolean {
  const s = raw[section]
  return typeof s === 'object' && s !== null && key in s
}

function configError(error: z.ZodError, file: string | undefined, fromEnv: Map<string, string>): FabricError {
  const problems: string[] = []
  for (const issue of error.issues) {
    const at = issue.path.map(String).join('.')
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) problems.push(`${at ? `${at}.` : ''}${key}: unknown key`)
      continue
    }
    const envName = fromEnv.get(issue.path.slice(0, 2).map(String).join('.'))
    problems.push(`${at}${envName ? ` (from ${envName})` : ''}: ${issue.message}`)
  }
  const where = file === undefined ? 'config' : `config ${file}`
  return FabricError.invalidArgument(`${where}: ${problems.join('; ')}`, {
    details: { key: error.issues[0]?.path.map(String).join('.') ?? '' },
  })
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v)
    Object.freeze(value)
  }
  return value
}
