/**
 * The model registry: publishing a version (validate it where it cannot hurt the node, keep its
 * bytes in the namespace, record it in the catalog), removing one, and setting where and how a
 * model is served. Everything it records is in the catalog, so it reaches every site.
 */
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, open, readFile, rm } from 'node:fs/promises'
import path from 'node:path'
import type { Catalog, DeploymentEntry, ModelEntry } from '../catalog/index.ts'
import { NAME_PATTERN } from '../config/index.ts'
import type { DataPlane } from '../datasets/index.ts'
import { FabricError, isFabricError } from '../errors/index.ts'
import type { Logger } from '../log/index.ts'
import { batchable, validateModel } from '../models/index.ts'
import { checkVersion, nextVersion, parseModelName } from './routing.ts'

export interface PublishHeader {
  name: string
  version: string
  description: string
  metrics: Record<string, number>
  trainedOn: string
  size?: number | undefined
  sha256?: string | undefined
  dataset: string
}

export interface DeploySpec {
  model: string
  traffic: Array<{ version: string; weight: number }>
  shadow: string
  /** Neither sites nor allSites: the current deployment's. */
  sites: string[]
  allSites: boolean
  /** Undefined: the current deployment's (none for a first one); 0 turns batching off. */
  maxBatch?: number | undefined
  maxDelayMs?: number | undefined
}

export interface RegistryOptions {
  catalog: Catalog
  data: DataPlane
  /** Where uploads are spooled while they are validated. */
  spoolDir: string
  maxBytes: number
  validationMemoryBytes: number
  validationTimeoutMs: number
  log: Logger
}

const MAX_DESCRIPTION_BYTES = 4096
const MAX_METRICS = 64
const MAX_BATCH = 4096
const MAX_DELAY_MS = 1000
const MAX_WEIGHT = 1_000_000

export class ModelRegistry {
  constructor(private readonly o: RegistryOptions) {}

  /**
   * Publishes a version from a stream of its bytes. Nothing is stored unless the model is valid
   * and complete: the bytes are spooled (size and hash checked against what the sender said),
   * loaded in onnxruntime in a limited child process, then written to the namespace and recorded.
   */
  async publish(header: PublishHeader, content: AsyncIterable<Uint8Array>, expect: () => { sha256?: string | undefined }): Promise<ModelEntry> {
    const [tenant, short] = parseModelName(header.name)
    const name = `${tenant}/${short}`
    if (header.version) checkVersion(header.version)
    if (Buffer.byteLength(header.description) > MAX_DESCRIPTION_BYTES) throw FabricError.invalidArgument(`description: more than ${MAX_DESCRIPTION_BYTES} bytes`, { details: { limit: String(MAX_DESCRIPTION_BYTES) } })
    const metrics = checkMetrics(header.metrics)
    const trainedOn = header.trainedOn ? await this.lineage(header.trainedOn) : undefined
    if (header.version && this.o.catalog.model(name, header.version)) {
      throw FabricError.alreadyExists(`model ${name} version ${header.version} exists already (versions are immutable)`, { details: { model: name, version: header.version } })
    }
    const datasetPath = header.dataset || `/${tenant}/models`
    if (header.dataset) this.o.catalog.datasetAt(header.dataset, 'files')

    await mkdir(this.o.spoolDir, { recursive: true })
    const spool = path.join(this.o.spoolDir, `model-${randomBytes(6).toString('hex')}.onnx`)
    try {
      const { size, sha256 } = await this.spool(spool, content)
      const sent = { ...(header.sha256 ? { sha256: header.sha256 } : {}), ...expect() }
      if (header.size !== undefined && header.size !== size) throw FabricError.invalidArgument(`model upload: received ${size} bytes, expected ${header.size}; nothing was stored`, { details: { size: String(size), expected: String(header.size) } })
      if (sent.sha256 && sent.sha256 !== sha256) throw FabricError.invalidArgument(`model upload: content has sha256 ${sha256}, expected ${sent.sha256}; nothing was stored`, { details: { sha256 } })
      if (header.size === undefined && !sent.sha256) throw FabricError.invalidArgument('model upload: the stream ended without a trailer, and the header gave no size or sha256; nothing was stored')
      const validated = await validateModel(await readFile(spool), { memoryBytes: this.o.validationMemoryBytes, timeoutMs: this.o.validationTimeoutMs, maxBytes: this.o.maxBytes })

      if (!header.dataset && !this.o.catalog.listDatasets('').some((d) => d.path === datasetPath)) {
        await this.o.catalog.createDataset(datasetPath, 'files', `model files of tenant ${tenant} (fabric model publish)`).catch((err: unknown) => {
          if (!isFabricError(err, 'ALREADY_EXISTS')) throw err
        })
      }
      // The file name carries the version and the content hash: two publishers racing for one
      // version never write the same path with different bytes.
      const version = header.version || nextVersion(this.o.catalog.modelVersions(name).map((m) => m.version))
      const filePath = `${datasetPath}/${short}/${version}-${sha256.slice(0, 16)}.onnx`
      const existed = await this.o.data.statFile(filePath).then(
        (f) => f.sha256 === sha256,
        () => false,
      )
      if (!existed) await this.o.data.putFile(filePath, createReadStream(spool, { highWaterMark: 256 * 1024 }), { size, sha256 })
      const producer = [validated.info.producerName, validated.info.producerVersion].filter(Boolean).join(' ')
      const opset = validated.info.opsets.find((o) => o.domain === '' || o.domain === 'ai.onnx')?.version ?? 0
      try {
        return await this.o.catalog.addModel(() => {
          if (!header.version && this.o.catalog.model(name, version)) {
            throw FabricError.alreadyExists(`model ${name} version ${version} was published by someone else just now; publish again`, { details: { model: name, version } })
          }
          return {
            name,
            version,
            description: header.description,
            metrics,
            ...(trainedOn ? { trainedOn } : {}),
            sha256,
            size,
            path: filePath,
            signature: validated.signature,
            producer,
            opset: Number(opset),
            createdMs: Date.now(),
          }
        })
      } catch (err) {
        // Not recorded: the bytes written for it go again (unless they were there before).
        if (!existed) await this.o.data.deleteFile(filePath).catch((e: unknown) => this.o.log.warn({ err: e, path: filePath }, 'could not remove the bytes of a model that was not recorded'))
        throw err
      }
    } finally {
      await rm(spool, { force: true })
    }
  }

  /** Writes the upload to the spool file, hashing it, up to maxBytes. */
  private async spool(file: string, content: AsyncIterable<Uint8Array>): Promise<{ size: number; sha256: string }> {
    const hash = createHash('sha256')
    const fh = await open(file, 'wx', 0o600)
    let size = 0
    try {
      for await (const piece of content) {
        size += piece.byteLength
        if (size > this.o.maxBytes) throw FabricError.invalidArgument(`the model is larger than models.max_bytes (${this.o.maxBytes} bytes); nothing was stored`, { details: { limit: String(this.o.maxBytes) } })
        hash.update(piece)
        await fh.write(piece)
      }
    } finally {
      await fh.close()
    }
    if (size === 0) throw FabricError.invalidArgument('the model is empty')
    return { size, sha256: hash.digest('hex') }
  }

  /** "VOLUME@SNAPSHOT", checked to exist here; with the snapshot's position. */
  private async lineage(text: string): Promise<{ volume: string; snapshot: string; seq: number }> {
    const at = text.lastIndexOf('@')
    if (at <= 0 || at === text.length - 1) throw FabricError.invalidArgument(`trained-on ${JSON.stringify(text)}: expected VOLUME@SNAPSHOT, e.g. /acme@train-2026-11`, { details: { trainedOn: text } })
    const volume = text.slice(0, at)
    const snap = await this.o.data.snapshotFor(this.o.catalog.volumeAt(volume).path, text.slice(at + 1))
    return { volume: snap.volume, snapshot: snap.name, seq: snap.seq }
  }

  /** Removes a version (refused while deployed) and then its bytes. */
  async remove(name: string, version: string): Promise<void> {
    parseModelName(name)
    checkVersion(version)
    const m = await this.o.catalog.removeModel(name, version)
    // Each version has a path of its own (version and hash in the name): no other refers to it.
    await this.o.data.deleteFile(m.path).catch((err: unknown) => this.o.log.warn({ err, path: m.path }, 'could not remove the bytes of a removed model version'))
  }

  /** Sets a model's deployment, checked against the catalog (versions, sites, batching). */
  async deploy(spec: DeploySpec): Promise<DeploymentEntry> {
    parseModelName(spec.model)
    return this.o.catalog.setDeployment(() => {
      const current = this.o.catalog.deployment(spec.model)
      const keepSites = spec.sites.length === 0 && !spec.allSites && current !== undefined
      const sites = keepSites ? current.sites : spec.sites
      const allSites = keepSites ? current.allSites : spec.allSites
      const maxBatch = spec.maxBatch ?? current?.batching?.maxBatch ?? 0
      const maxDelayMs = spec.maxDelayMs ?? current?.batching?.maxDelayMs ?? (maxBatch > 1 ? 5 : 0)
      const versions = this.o.catalog.modelVersions(spec.model)
      if (versions.length === 0) throw FabricError.notFound(`model ${spec.model} does not exist`, { details: { model: spec.model } })
      if (spec.traffic.length === 0) throw FabricError.invalidArgument('a deployment needs at least one version (--version, or --traffic V1=90,V2=10)')
      const seen = new Set<string>()
      for (const t of spec.traffic) {
        checkVersion(t.version)
        if (seen.has(t.version)) throw FabricError.invalidArgument(`version ${t.version} appears twice in the traffic split`, { details: { version: t.version } })
        seen.add(t.version)
        if (!Number.isInteger(t.weight) || t.weight < 1 || t.weight > MAX_WEIGHT) {
          throw FabricError.invalidArgument(`traffic weight of version ${t.version}: expected a whole number from 1 to ${MAX_WEIGHT}, got ${t.weight}`, { details: { version: t.version, weight: String(t.weight) } })
        }
      }
      const known = (v: string) => {
        const m = this.o.catalog.model(spec.model, v)
        if (!m) throw FabricError.notFound(`model ${spec.model} has no version ${v} (it has ${versions.map((x) => x.version).join(', ')})`, { details: { model: spec.model, version: v } })
        return m
      }
      const entries = spec.traffic.map((t) => known(t.version))
      if (spec.shadow) {
        checkVersion(spec.shadow)
        known(spec.shadow)
        if (seen.has(spec.shadow)) throw FabricError.invalidArgument(`version ${spec.shadow} cannot take traffic and be the shadow`, { details: { version: spec.shadow } })
      }
      if (allSites && sites.length > 0) throw FabricError.invalidArgument('give sites or all sites, not both')
      if (!allSites && sites.length === 0) throw FabricError.invalidArgument('a deployment needs its sites (--sites S1,S2) or all sites (--all-sites)')
      // Every version's bytes must be able to reach every site named: its volume must be held there.
      for (const site of sites) {
        if (!NAME_PATTERN.test(site)) throw FabricError.invalidArgument(`site ${JSON.stringify(site)}: expected lowercase letters, digits and "-"`, { details: { site } })
        for (const m of [...entries, ...(spec.shadow ? [known(spec.shadow)] : [])]) {
          const vol = this.o.catalog.volumeFor(m.path)
          if (!this.o.catalog.holds(vol, site)) {
            throw FabricError.failedPrecondition(`model ${spec.model} version ${m.version} is kept in volume ${vol.path}, which site ${site} does not hold: add ${site} to its replicas (fabric volume set-replicas) or deploy elsewhere`, {
              details: { model: spec.model, version: m.version, site, volume: vol.path },
            })
          }
        }
      }
      if (maxBatch < 0 || maxBatch > MAX_BATCH || !Number.isInteger(maxBatch)) throw FabricError.invalidArgument(`max batch: expected a whole number from 0 (no batching) to ${MAX_BATCH}, got ${maxBatch}`)
      if (maxDelayMs < 0 || maxDelayMs > MAX_DELAY_MS || !Number.isInteger(maxDelayMs)) throw FabricError.invalidArgument(`max delay: expected whole milliseconds from 0 to ${MAX_DELAY_MS}, got ${maxDelayMs}`)
      if (maxBatch > 1) {
        const fixed = entries.find((m) => !batchable(m.signature))
        if (fixed) throw FabricError.failedPrecondition(`model ${spec.model} version ${fixed.version} cannot be batched: every input and output needs a dynamic first dim`, { details: { model: spec.model, version: fixed.version } })
      }
      return {
        model: spec.model,
        traffic: spec.traffic.map((t) => ({ version: t.version, weight: t.weight })),
        ...(spec.shadow ? { shadow: spec.shadow } : {}),
        sites: [...new Set(sites)].sort(),
        allSites: allSites,
        ...(maxBatch > 1 ? { batching: { maxBatch: maxBatch, maxDelayMs: maxDelayMs } } : {}),
        updatedMs: Date.now(),
      }
    })
  }

  /** Removes the deployment, or only some of its sites. */
  async undeploy(model: string, sites: string[]): Promise<DeploymentEntry | undefined> {
    parseModelName(model)
    if (sites.length === 0) {
      await this.o.catalog.removeDeployment(model)
      return undefined
    }
    const d = this.o.catalog.deployment(model)
    if (!d) throw FabricError.notFound(`model ${model} is not deployed`, { details: { model } })
    if (d.allSites) throw FabricError.failedPrecondition(`model ${model} is deployed to all sites: deploy it to a list of sites first, or undeploy it whole`, { details: { model } })
    const left = d.sites.filter((s) => !sites.includes(s))
    if (left.length === 0) {
      await this.o.catalog.removeDeployment(model)
      return undefined
    }
    return this.o.catalog.setDeployment(() => {
      const now = this.o.catalog.deployment(model)
      if (!now) throw FabricError.notFound(`model ${model} is not deployed`, { details: { model } })
      return { ...now, sites: now.sites.filter((s) => !sites.includes(s)), updatedMs: Date.now() }
    })
  }
}

function checkMetrics(metrics: Record<string, number>): Record<string, number> {
  const entries = Object.entries(metrics ?? {})
  if (entries.length > MAX_METRICS) throw FabricError.invalidArgument(`at most ${MAX_METRICS} metrics, got ${entries.length}`)
  for (const [k, v] of entries) {
    if (!/^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$/.test(k)) throw FabricError.invalidArgument(`metric name ${JSON.stringify(k)}: expected letters, digits, "_", ".", ":" and "-", starting with a letter or "_"`, { details: { metric: k } })
    if (!Number.isFinite(v)) throw FabricError.invalidArgument(`metric ${k}: expected a finite number, got ${v}`, { details: { metric: k } })
  }
  return Object.fromEntries(entries)
}
