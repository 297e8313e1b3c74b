/**
 * Pure: which version answers a request, which site a request not served here goes to, and the
 * names of models and versions.
 */
import { SEGMENT } from '../catalog/index.ts'
import { FabricError } from '../errors/index.ts'

export interface Split {
  version: string
  weight: number
}

/** FNV-1a, 32 bits: a fast, well-spread hash of a routing key (not a security boundary). */
function fnv1a(text: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

/**
 * The version of a traffic split that answers. A request with a routing key lands at a fixed
 * point of [0, 1) (its hash), so the same key gets the same version for the same split, whatever
 * the scale of the weights; when the split changes, only keys whose point crosses a boundary move
 * (going from 90/10 to 80/20 moves the keys between 0.8 and 0.9, nothing else). Without a key the
 * point is random: requests split in proportion to the weights.
 */
export function pickVersion(traffic: readonly Split[], routingKey: string | undefined, random: () => number = Math.random): string {
  if (traffic.length === 1) return traffic[0]!.version
  const total = traffic.reduce((n, s) => n + s.weight, 0)
  const point = (routingKey ? fnv1a(routingKey) / 2 ** 32 : random()) * total
  let upTo = 0
  for (const s of traffic) {
    upTo += s.weight
    if (point < upTo) return s.version
  }
  return traffic[traffic.length - 1]!.version
}

/**
 * The sites to try for a request this site does not serve, nearest first: sites are linked
 * through the hub, so from an edge the hub is one hop away and every other edge two; from the hub
 * every edge is one. Among equals, by name (a stable order, so that one site takes the load).
 */
export function nearestSites(serving: readonly string[], here: string, hub: string | undefined): string[] {
  const others = [...new Set(serving)].filter((s) => s !== here).sort()
  if (hub && hub !== here && others.includes(hub)) return [hub, ...others.filter((s) => s !== hub)]
  return others
}

/** "tenant/name", each a path segment. Returns [tenant, name]. */
export function parseModelName(name: string): [string, string] {
  const parts = typeof name === 'string' ? name.split('/') : []
  if (parts.length !== 2 || !parts.every((p) => SEGMENT.test(p))) {
    throw FabricError.invalidArgument(`model name ${JSON.stringify(name)}: expected "tenant/name", each part lowercase letters, digits, ".", "_" and "-", starting with a letter or digit`, {
      details: { model: String(name) },
    })
  }
  return [parts[0]!, parts[1]!]
}

export function checkVersion(version: string): void {
  if (typeof version !== 'string' || !SEGMENT.test(version)) {
    throw FabricError.invalidArgument(`model version ${JSON.stringify(version)}: expected lowercase letters, digits, ".", "_" and "-", starting with a letter or digit (e.g. 3 or 1.2.0)`, {
      details: { version: String(version) },
    })
  }
}

/** The next automatic version: one more than the highest whole-number version, "1" for the first. */
export function nextVersion(existing: readonly string[]): string {
  let max = 0
  for (const v of existing) if (/^\d+$/.test(v)) max = Math.max(max, Number(v))
  return String(max + 1)
}
