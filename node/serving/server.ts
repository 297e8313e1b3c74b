/**
 * Serving deployed models on this node. For every deployment that names this node's site, the
 * node loads the versions it needs once their bytes have reached the site, and answers Predict
 * with them; a request for a model not served here goes to the nearest site that serves it.
 *
 * Swapping without a failed request: a deployment change builds a new route (the traffic split
 * over loaded sessions) beside the one answering. Only once every version of the new split is
 * loaded does the route switch, in one assignment; a request picks its route and starts its run in
 * the same turn of the event loop, so it always runs on a route that is whole. Versions the new
 * route does not use are released after: their batchers answer what they queued, their sessions
 * finish their runs in flight, then free onnxruntime's memory.
 */
import { FabricError, type ErrorCode } from '../errors/index.ts'
import type { Catalog, DeploymentEntry, ModelEntry } from '../catalog/index.ts'
import type { DataPlane } from '../datasets/index.ts'
import type { Logger } from '../log/index.ts'
import type { Metrics } from '../metrics/index.ts'
import { Batcher, loadSession, tensorFromBytes, tensorFromStrings, tensorToBytes, type ElementType, type ModelSession, type Runner, type SessionOptions, type Tensor } from '../models/index.ts'
import { NoResponders, type Bus } from '../nats/index.ts'
import { pack, unpack } from '../replication/index.ts'
import type { NodeView, ServedModel, ServedVersion } from '../sites/index.ts'
import { nearestSites, pickVersion, type Split } from './routing.ts'
import { VersionStats } from './stats.ts'

export interface PredictCall {
  model: string
  /** A deployed version to use; undefined: the traffic split decides. */
  version?: string | undefined
  routingKey?: string | undefined
  inputs: Record<string, Tensor>
  outputs?: string[] | undefined
}

export interface PredictResult {
  version: string
  outputs: Record<string, Tensor>
  site: string
  node: string
}

export interface ServerOptions {
  catalog: Catalog
  data: DataPlane
  bus: () => Bus
  /** Nodes heard from, with the models they serve (their heartbeats). */
  nodes: () => NodeView[]
  site: string
  nodeId: string
  metrics: Metrics
  session: SessionOptions
  log: Logger
  /** How often versions waiting for their bytes (or that failed to load) are tried again. */
  retryMs?: number
}

type State = ServedVersion['state']

/** A version on this node. */
interface Loaded {
  entry: ModelEntry
  state: State
  error?: string
  session?: ModelSession
  stats: VersionStats
  /** When a waiting or failed version is tried again. */
  nextTryMs: number
}

/** What answers requests for a model here: a whole traffic split over loaded sessions. */
interface Route {
  deployment: DeploymentEntry
  traffic: Split[]
  /** The runner of each traffic version (its batcher, or its session). */
  runners: Map<string, Runner>
  batchers: Batcher[]
  shadow?: { version: string; runner: Runner }
}

interface Served {
  versions: Map<string, Loaded>
  route: Route | undefined
  /** Reconciles of this model run one after the other. */
  work: Promise<void>
}

/** The subject a site's nodes answer forwarded predictions on (one node of a queue group). */
const predictSubject = (site: string) => `fabric.predict.${site}`
/** How long a forwarded prediction may take. */
const FORWARD_TIMEOUT_MS = 15_000
/** A version that failed to load is tried again after this long (its bytes may have been incomplete). */
const FAILED_RETRY_MS = 30_000

/** A tensor as forwarded between sites (MessagePack). */
interface WireTensor {
  n: string
  t: ElementType
  d: number[]
  b?: Uint8Array
  s?: string[]
}

interface ForwardRequest {
  m: string
  v?: string
  k?: string
  i: WireTensor[]
  o?: string[]
}

interface ForwardReply {
  v?: string
  o?: WireTensor[]
  s?: string
  n?: string
  e?: { code: ErrorCode; message: string; details: Record<string, string> }
}

export class ModelServer {
  private readonly served = new Map<string, Served>()
  private timer: NodeJS.Timeout | undefined
  private stopServing: (() => void) | undefined
  private stopped = false
  private readonly onChange = (model: string) => this.reconcile(model)
  private readonly observeRequest: (model: string, version: string, code: string, ms: number) => void
  private readonly observeShadow: (model: string, version: string, outcome: 'agreed' | 'differed' | 'failed') => void

  constructor(private readonly o: ServerOptions) {
    const requests = o.metrics.counter('fabric_model_requests_total', 'Predictions answered by this node, by model, version and outcome (OK or the error code).', ['model', 'version', 'code'])
    const duration = o.metrics.histogram('fabric_model_request_duration_seconds', 'Time this node took to answer a prediction (batching wait and run), by model and version.', ['model', 'version'], [
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
    ])
    const shadow = o.metrics.counter('fabric_model_shadow_total', 'Shadow runs by model, shadow version and outcome (agreed with the answer, differed, failed).', ['model', 'version', 'outcome'])
    // Children looked up once per label set: prom-client hashes the labels on every lookup.
    const counters = new Map<string, { inc(): void }>()
    const timers = new Map<string, { observe(v: number): void }>()
    this.observeRequest = (model, version, code, ms) => {
      const key = `${model}\0${version}\0${code}`
      let c = counters.get(key)
      if (!c) counters.set(key, (c = requests.labels(model, version, code)))
      c.inc()
      const tk = `${model}\0${version}`
      let h = timers.get(tk)
      if (!h) timers.set(tk, (h = duration.labels(model, version)))
      h.observe(ms / 1000)
    }
    const shadows = new Map<string, { inc(): void }>()
    this.observeShadow = (model, version, outcome) => {
      const key = `${model}\0${version}\0${outcome}`
      let c = shadows.get(key)
      if (!c) shadows.set(key, (c = shadow.labels(model, version, outcome)))
      c.inc()
    }
    o.metrics.gauge('fabric_model_versions', 'Model versions on this node by state (waiting for bytes, loading, ready, failed).', {
      labelNames: ['model', 'version', 'state'] as const,
      collect: (g) => {
        g.reset()
        for (const [model, s] of this.served) for (const [version, l] of s.versions) g.set({ model, version, state: l.state }, 1)
      },
    })
  }

  start(): void {
    this.o.catalog.on('deployment-changed', this.onChange)
    this.stopServing = this.o.bus().serve(predictSubject(this.o.site), 'fabric-predict', (data) => this.serveForwarded(data))
    for (const d of this.o.catalog.listDeployments()) this.reconcile(d.model)
    this.timer = setInterval(() => this.retry(), this.o.retryMs ?? 2_000)
    this.timer.unref()
  }

  async stop(): Promise<void> {
    this.stopped = true
    if (this.timer) clearInterval(this.timer)
    this.o.catalog.off('deployment-changed', this.onChange)
    this.stopServing?.()
    const all = [...this.served.values()]
    this.served.clear()
    await Promise.all(
      all.map(async (s) => {
        await s.work.catch(() => undefined)
        await Promise.all(s.route?.batchers.map((b) => b.close()) ?? [])
        await Promise.all([...s.versions.values()].map((l) => l.session?.release()))
      }),
    )
  }

  /** The models this node serves or is loading, with their figures (for heartbeats). */
  report(): ServedModel[] {
    const out: ServedModel[] = []
    for (const [name, s] of this.served) {
      const shadow = s.route?.shadow?.version ?? this.o.catalog.deployment(name)?.shadow
      out.push({
        name,
        versions: [...s.versions.values()].map((l) => ({
          version: l.entry.version,
          state: l.state,
          ...(l.error ? { error: l.error } : {}),
          shadow: l.entry.version === shadow,
          requests: l.stats.requests,
          errors: l.stats.errors,
          differed: l.stats.differed,
          p50Ms: l.stats.quantileMs(0.5),
          p99Ms: l.stats.quantileMs(0.99),
        })),
      })
    }
    return out
  }

  /**
   * Every node (heard from, or this one) that serves the model or is at a site it is deployed to,
   * with what it says about each version (its heartbeat). NOT_FOUND for a model that does not exist.
   */
  status(model: string): { deployment: DeploymentEntry | undefined; nodes: Array<{ node: NodeView; versions: ServedVersion[] }> } {
    if (this.o.catalog.modelVersions(model).length === 0) throw FabricError.notFound(`model ${model} does not exist`, { details: { model } })
    const d = this.o.catalog.deployment(model)
    const nodes = []
    for (const n of this.o.nodes()) {
      const m = n.models?.find((x) => x.name === model)
      if (m || (d && (d.allSites || d.sites.includes(n.site)))) nodes.push({ node: n, versions: m?.versions ?? [] })
    }
    return { deployment: d, nodes }
  }

  // ---- loading ----

  private retry(): void {
    const now = Date.now()
    for (const [model, s] of this.served) {
      const wanted = this.wanted(model)
      const due = [...s.versions.values()].some((l) => (l.state === 'waiting' || l.state === 'failed') && l.nextTryMs <= now)
      if (due || s.route?.deployment !== wanted) this.reconcile(model)
    }
  }

  /** The model's deployment if it names this site. */
  private wanted(model: string): DeploymentEntry | undefined {
    const d = this.o.catalog.deployment(model)
    return d && (d.allSites || d.sites.includes(this.o.site)) ? d : undefined
  }

  private reconcile(model: string): void {
    if (this.stopped) return
    let s = this.served.get(model)
    if (!s) {
      if (!this.wanted(model)) return
      this.served.set(model, (s = { versions: new Map(), route: undefined, work: Promise.resolve() }))
    }
    const served = s
    served.work = served.work.then(() => this.doReconcile(model, served)).catch((err: unknown) => this.o.log.error({ err, model }, 'model deployment could not be applied'))
  }

  private async doReconcile(model: string, s: Served): Promise<void> {
    if (this.stopped || this.served.get(model) !== s) return
    const d = this.wanted(model)
    if (!d) {
      // No longer served here: requests go elsewhere from now on.
      this.served.delete(model)
      const route = s.route
      s.route = undefined
      await Promise.all(route?.batchers.map((b) => b.close()) ?? [])
      await Promise.all([...s.versions.values()].map((l) => l.session?.release()))
      this.o.log.info({ model }, 'model no longer served here')
      return
    }
    const needed = [...d.traffic.map((t) => t.version), ...(d.shadow ? [d.shadow] : [])]
    for (const version of needed) {
      let l = s.versions.get(version)
      if (!l) {
        const entry = this.o.catalog.model(model, version)
        if (!entry) continue
        s.versions.set(version, (l = { entry, state: 'waiting', stats: new VersionStats(), nextTryMs: 0 }))
      }
      if ((l.state === 'waiting' || l.state === 'failed') && l.nextTryMs <= Date.now()) await this.load(model, l)
      if (this.stopped || this.served.get(model) !== s) return
    }
    // A deployment that changed again while loading is applied by the next round.
    if (this.wanted(model) !== d) return void this.reconcile(model)
    const ready = (v: string) => s.versions.get(v)?.state === 'ready'
    const whole = d.traffic.every((t) => ready(t.version))
    const shadowNow = d.shadow && ready(d.shadow) ? d.shadow : undefined
    if (whole && (s.route?.deployment !== d || s.route.shadow?.version !== shadowNow)) {
      const old = s.route
      s.route = this.buildRoute(d, s, shadowNow)
      this.o.log.info({ model, traffic: d.traffic, ...(shadowNow ? { shadow: shadowNow } : {}) }, old ? 'model route switched' : 'model serving')
      await Promise.all(old?.batchers.map((b) => b.close()) ?? [])
    }
    // Versions neither the route nor the deployment needs: released (after their runs in flight).
    const inUse = new Set([...needed, ...(s.route ? [...s.route.runners.keys(), ...(s.route.shadow ? [s.route.shadow.version] : [])] : [])])
    for (const [version, l] of [...s.versions]) {
      if (inUse.has(version)) continue
      s.versions.delete(version)
      await l.session?.release()
      this.o.log.info({ model, version }, 'model version unloaded')
    }
  }

  private buildRoute(d: DeploymentEntry, s: Served, shadow: string | undefined): Route {
    const runners = new Map<string, Runner>()
    const batchers: Batcher[] = []
    for (const t of d.traffic) {
      const session = s.versions.get(t.version)!.session!
      if (d.batching) {
        const b = new Batcher(session, d.batching)
        batchers.push(b)
        runners.set(t.version, b)
      } else {
        runners.set(t.version, session)
      }
    }
    return {
      deployment: d,
      traffic: d.traffic,
      runners,
      batchers,
      ...(shadow ? { shadow: { version: shadow, runner: s.versions.get(shadow)!.session! } } : {}),
    }
  }

  /** Loads a version once its bytes are at this site (checked against the published hash). */
  private async load(model: string, l: Loaded): Promise<void> {
    const { entry } = l
    // Bytes (or some of their chunks) not replicated here yet, or the volume not open yet: wait.
    const waiting = (err: unknown) => {
      l.state = 'waiting'
      l.error = `waiting for its bytes (${entry.path}) to reach site ${this.o.site}: ${FabricError.from(err).message}`
      l.nextTryMs = Date.now()
    }
    const meta = await this.o.data.statFile(entry.path).catch((err: unknown) => void waiting(err))
    if (!meta) return
    if (meta.sha256 !== entry.sha256) {
      l.state = 'failed'
      l.error = `the bytes at ${entry.path} have sha256 ${meta.sha256}, not the published ${entry.sha256}`
      l.nextTryMs = Date.now() + FAILED_RETRY_MS
      return
    }
    l.state = 'loading'
    const bytes = new Uint8Array(meta.size)
    try {
      let at = 0
      for await (const chunk of this.o.data.readFile(meta)) {
        bytes.set(chunk, at)
        at += chunk.length
      }
    } catch (err) {
      return waiting(err)
    }
    try {
      l.session = await loadSession(bytes, this.o.session)
      l.state = 'ready'
      delete l.error
      this.o.log.info({ model, version: entry.version, bytes: entry.size }, 'model version loaded')
    } catch (err) {
      l.state = 'failed'
      l.error = FabricError.from(err).message
      l.nextTryMs = Date.now() + FAILED_RETRY_MS
      this.o.log.warn({ model, version: entry.version, err }, 'model version failed to load')
    }
  }

  // ---- predictions ----

  /** Answers here if the model is served here, else at the nearest site that serves it. */
  async predict(call: PredictCall): Promise<PredictResult> {
    return (await this.predictHere(call)) ?? this.forward(call)
  }

  /** Runs the call on this node's route; undefined when this node does not serve that version. */
  private predictHere(call: PredictCall): Promise<PredictResult> | undefined {
    const route = this.served.get(call.model)?.route
    if (!route) return undefined
    const version = call.version || pickVersion(route.traffic, call.routingKey)
    const runner = route.runners.get(version) ?? (route.shadow?.version === version ? route.shadow.runner : undefined)
    if (!runner) return undefined
    // Picking the route and starting the run happen in this same turn: the route is whole.
    return this.run(call, route, version, runner)
  }

  private async run(call: PredictCall, route: Route, version: string, runner: Runner): Promise<PredictResult> {
    const l = this.served.get(call.model)?.versions.get(version)
    const started = performance.now()
    let outputs: Record<string, Tensor>
    try {
      outputs = await runner.run(call.inputs, call.outputs)
    } catch (err) {
      const ms = performance.now() - started
      const fe = FabricError.from(err)
      l?.stats.observe(ms, true)
      this.observeRequest(call.model, version, fe.code, ms)
      throw err
    }
    const ms = performance.now() - started
    l?.stats.observe(ms, false)
    this.observeRequest(call.model, version, 'OK', ms)
    const shadow = route.shadow
    if (shadow && shadow.version !== version && !call.version) void this.runShadow(call, shadow, outputs)
    return { version, outputs, site: this.o.site, node: this.o.nodeId }
  }

  /** The shadow's run on the same inputs: recorded (figures, agreement), never returned. */
  private async runShadow(call: PredictCall, shadow: NonNullable<Route['shadow']>, answer: Record<string, Tensor>): Promise<void> {
    const l = this.served.get(call.model)?.versions.get(shadow.version)
    const started = performance.now()
    try {
      const outputs = await shadow.runner.run(call.inputs, call.outputs)
      const differed = Object.keys(answer).some((name) => !sameTensor(answer[name]!, outputs[name]))
      l?.stats.observe(performance.now() - started, false)
      if (differed && l) l.stats.differed++
      this.observeShadow(call.model, shadow.version, differed ? 'differed' : 'agreed')
    } catch {
      l?.stats.observe(performance.now() - started, true)
      this.observeShadow(call.model, shadow.version, 'failed')
    }
  }

  // ---- forwarding ----

  private async forward(call: PredictCall): Promise<PredictResult> {
    const serving = this.o
      .nodes()
      .filter((n) => n.connected && !n.self && n.site !== this.o.site)
      .filter((n) => n.models?.some((m) => m.name === call.model && m.versions.some((v) => v.state === 'ready' && !v.shadow && (!call.version || v.version === call.version))))
      .map((n) => n.site)
    const order = nearestSites(serving, this.o.site, this.o.catalog.home)
    const tried: string[] = []
    for (const site of order) {
      let raw: Uint8Array
      try {
        raw = await this.o.bus().request(predictSubject(site), pack(forwardRequest(call)), FORWARD_TIMEOUT_MS)
      } catch (err) {
        tried.push(`${site} (${err instanceof NoResponders ? 'no node answers' : FabricError.from(err).message})`)
        continue
      }
      const reply = unpack<ForwardReply>(raw)
      if (reply.e) {
        // That site stopped serving it in the meantime: try the next one.
        if (reply.e.code === 'UNAVAILABLE' || (reply.e.code === 'FAILED_PRECONDITION' && reply.e.details['served'] === 'no')) {
          tried.push(`${site} (${reply.e.message})`)
          continue
        }
        throw new FabricError(reply.e.code, reply.e.message, { details: reply.e.details })
      }
      return { version: reply.v!, outputs: fromWire(reply.o ?? []), site: reply.s!, node: reply.n! }
    }
    throw this.notServed(call, tried)
  }

  /** Why a call cannot be answered: the model or version does not exist, is not deployed, or every site serving it is out of reach. */
  private notServed(call: PredictCall, tried: string[]): FabricError {
    const details = { model: call.model, served: 'no', ...(call.version ? { version: call.version } : {}) }
    const versions = this.o.catalog.modelVersions(call.model)
    if (versions.length === 0) return FabricError.notFound(`model ${call.model} does not exist`, { details })
    if (call.version && !versions.some((v) => v.version === call.version)) return FabricError.notFound(`model ${call.model} has no version ${call.version}`, { details })
    const d = this.o.catalog.deployment(call.model)
    if (!d) return FabricError.failedPrecondition(`model ${call.model} is not deployed (fabric model deploy)`, { details })
    const deployed = [...d.traffic.map((t) => t.version), ...(d.shadow ? [d.shadow] : [])]
    if (call.version && !deployed.includes(call.version)) return FabricError.failedPrecondition(`model ${call.model} version ${call.version} is not deployed (deployed: ${d.traffic.map((t) => t.version).join(', ')})`, { details })
    const where = d.allSites ? 'every site' : `site${d.sites.length > 1 ? 's' : ''} ${d.sites.join(', ')}`
    const here = this.served.get(call.model)
    if (here) {
      const states = [...here.versions.values()].map((l) => `${l.entry.version}: ${l.state}${l.error ? ` (${l.error})` : ''}`).join('; ')
      return FabricError.unavailable(`model ${call.model} is deployed at ${where} but not ready on this node yet (${states || 'starting'})${tried.length ? `; tried ${tried.join(', ')}` : ''}`, { details })
    }
    return FabricError.unavailable(
      `model ${call.model} is deployed at ${where}, not at site ${this.o.site}, and ${tried.length ? `no site serving it answered: ${tried.join(', ')}` : 'no site serving it can be reached from here'}`,
      { details },
    )
  }

  /** A prediction forwarded by another site: answered here or refused, never forwarded again. */
  private async serveForwarded(data: Uint8Array): Promise<Uint8Array> {
    let reply: ForwardReply
    try {
      const r = unpack<ForwardRequest>(data)
      const call: PredictCall = { model: r.m, version: r.v, routingKey: r.k, inputs: Object.fromEntries(fromWireList(r.i)), outputs: r.o }
      const result = await this.predictHere(call)
      if (!result) throw FabricError.failedPrecondition(`model ${r.m} is not served at site ${this.o.site} (any more)`, { details: { model: r.m, served: 'no' } })
      reply = { v: result.version, o: toWire(result.outputs), s: result.site, n: result.node }
    } catch (err) {
      const fe = FabricError.from(err)
      if (fe.code === 'INTERNAL') this.o.log.error({ err }, 'forwarded prediction failed')
      reply = { e: { code: fe.code, message: fe.message, details: { ...fe.details } } }
    }
    return pack(reply)
  }
}

function forwardRequest(call: PredictCall): ForwardRequest {
  return {
    m: call.model,
    ...(call.version ? { v: call.version } : {}),
    ...(call.routingKey ? { k: call.routingKey } : {}),
    i: toWire(call.inputs),
    ...(call.outputs?.length ? { o: call.outputs } : {}),
  }
}

function toWire(tensors: Record<string, Tensor>): WireTensor[] {
  return Object.entries(tensors).map(([n, t]) => (t.type === 'string' ? { n, t: t.type, d: t.dims, s: t.data as string[] } : { n, t: t.type, d: t.dims, b: tensorToBytes(t) }))
}

function fromWireList(list: WireTensor[]): Array<[string, Tensor]> {
  return list.map((w) => [w.n, w.t === 'string' ? tensorFromStrings(w.d, w.s ?? [], `tensor "${w.n}"`) : tensorFromBytes(w.t, w.d, w.b ?? new Uint8Array(0), `tensor "${w.n}"`)])
}

function fromWire(list: WireTensor[]): Record<string, Tensor> {
  return Object.fromEntries(fromWireList(list))
}

/** Whether a shadow's output equals the answer's: exactly for integers and strings, within 1e-5 (relative) for floats. */
function sameTensor(a: Tensor, b: Tensor | undefined): boolean {
  if (!b || a.type !== b.type || a.dims.length !== b.dims.length || a.dims.some((d, i) => d !== b.dims[i])) return false
  const x = a.data as ArrayLike<unknown>
  const y = b.data as ArrayLike<unknown>
  if (x.length !== y.length) return false
  const float = a.type === 'float32' || a.type === 'float64'
  for (let i = 0; i < x.length; i++) {
    if (float) {
      const p = x[i] as number
      const q = y[i] as number
      if (!(Math.abs(p - q) <= 1e-5 * Math.max(1, Math.abs(p))) && !(Number.isNaN(p) && Number.isNaN(q))) return false
    } else if (x[i] !== y[i]) return false
  }
  return true
}
