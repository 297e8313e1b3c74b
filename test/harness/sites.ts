/** Multi-site test helpers: a hub and two edges on loopback, and reading tables back. */
import { freePort, poll, runCli, runCliOk, startNode, tempDir, type NodeProcess, type Teardown } from './index.ts'

export const cli = (node: NodeProcess, ...args: string[]) => runCliOk([...args, '--server', node.api])
export const json = async (node: NodeProcess, ...args: string[]) => JSON.parse((await cli(node, ...args, '-o', 'json')).stdout)

/** The rows of a table as {key: value} at a node, or undefined while the table is unknown there. */
export async function tableAt(node: NodeProcess, path: string): Promise<Record<string, unknown> | undefined> {
  const r = await runCli(['table', 'scan', path, '-o', 'json', '--server', node.api])
  if (r.code !== 0) return undefined
  const rows: Record<string, unknown> = {}
  for (const line of r.stdout.split('\n').filter(Boolean)) {
    const row = JSON.parse(line) as { key: string; value: unknown }
    rows[row.key] = row.value
  }
  return rows
}

/** Waits until the node's view of the table has exactly n keys and returns it. */
export function tableWith(node: NodeProcess, path: string, n: number, what: string, timeoutMs = 45_000) {
  return poll(what, async () => {
    const rows = await tableAt(node, path)
    return rows && Object.keys(rows).length === n ? rows : undefined
  }, timeoutMs, 200)
}

export interface Sites {
  hub: NodeProcess
  edge1: NodeProcess
  edge2: NodeProcess
  hubDir: string
  leafPort: number
}

export async function startSites(t: Teardown): Promise<Sites> {
  // A fixed leafnode port, so the hub can be restarted where the edges look for it.
  const leafPort = await freePort()
  const hubDir = await tempDir(t, 'fabric-hub-')
  const hub = await startNode(t, { dir: hubDir, config: { node: { site: 'hub' }, nats: { leafnode_listen: `127.0.0.1:${leafPort}` } } })
  const edge = (site: string) => startNode(t, { config: { node: { site }, nats: { hub_urls: [`nats-leaf://127.0.0.1:${leafPort}`] } } })
  const [edge1, edge2] = await Promise.all([edge('edge1'), edge('edge2')])
  // Edges learn the catalog's home from the hub and then resolve names themselves.
  for (const e of [edge1, edge2]) {
    await poll(`${e.nodeId} to know the catalog home`, async () => {
      const vols = (await json(e, 'volume', 'ls').catch(() => [])) as Array<{ path: string; home: string }>
      return vols.find((v) => v.path === '/' && v.home === 'hub')
    }, 30_000, 200)
  }
  return { hub, edge1, edge2, hubDir, leafPort }
}
