/** What operators' tools see: Prometheus metrics, liveness and readiness. */
import t from 'tap'
import { isAlive, listeningAddresses, poll, runCli, startNode } from './harness/index.ts'

t.test('/metrics, /healthz and /readyz', async (t) => {
  const node = await startNode(t, { config: { node: { site: 'dc-1' } } })
  const base = `http://${node.http}`

  const health = await fetch(`${base}/healthz`)
  t.equal(health.status, 200)
  t.same(await health.json(), { status: 'ok' })

  const ready = await fetch(`${base}/readyz`)
  t.equal(ready.status, 200)
  t.same(await ready.json(), { status: 'ready', checks: { store: true, nats: true, data: true, api: true } })

  t.equal((await runCli(['status', '--server', node.api])).code, 0) // one gRPC call to count
  const metrics = await fetch(`${base}/metrics`)
  t.equal(metrics.status, 200)
  t.match(metrics.headers.get('content-type'), /^text\/plain; version=0\.0\.4/)
  const text = await metrics.text()
  t.match(text, /^process_cpu_seconds_total \d/m, 'process metrics')
  t.match(text, /^nodejs_heap_size_used_bytes \d/m)
  t.match(text, new RegExp(`^fabric_info\\{node_id="${node.nodeId}",site="dc-1",version="[^"]+"\\} 1$`, 'm'))
  t.match(text, /^fabric_ready 1$/m)
  t.match(text, /^fabric_nats_connected 1$/m)
  t.match(text, /^fabric_store_bytes [1-9]\d*$/m)
  t.match(text, /^fabric_grpc_requests_total\{method="fabric\.v1\.NodeService\/GetStatus",code="0"\} [1-9]/m)
  t.match(text, /^fabric_grpc_request_duration_seconds_count\{method="fabric\.v1\.NodeService\/GetStatus"\} [1-9]/m)

  const missing = await fetch(`${base}/nope`)
  t.equal(missing.status, 404)
  t.equal((await fetch(`${base}/metrics`, { method: 'POST' })).status, 405)
})

t.test('/readyz turns 503 while NATS is down and 200 once it is back', async (t) => {
  const node = await startNode(t)
  const natsPid = node.natsPid()!
  // Freeze the server so the outage lasts until we end it, then kill it so the supervisor restarts it.
  process.kill(natsPid, 'SIGSTOP')
  process.kill(natsPid, 'SIGKILL')
  await poll('nats-server gone', () => !isAlive(natsPid))
  const down = await poll('readyz 503', async () => {
    const r = await fetch(`http://${node.http}/readyz`)
    return r.status === 503 ? ((await r.json()) as { checks: Record<string, boolean> }) : undefined
  })
  t.equal(down.checks.nats, false, 'names the failing check')
  await poll('readyz 200 again', async () => (await fetch(`http://${node.http}/readyz`)).status === 200)
  t.pass('ready again after the restart')
})

t.test('nothing listens beyond loopback by default', async (t) => {
  const node = await startNode(t, { defaults: true, env: { FABRIC_API_LISTEN: '127.0.0.1:0', FABRIC_HTTP_LISTEN: '127.0.0.1:0', FABRIC_NATS_PORT: '0' } })
  const sockets = [...(await listeningAddresses(node.pid)), ...(await listeningAddresses(node.natsPid()!))]
  t.ok(sockets.length >= 3, `gRPC, HTTP and NATS listen: ${sockets.join(', ')}`)
  for (const address of sockets) t.match(address, /^127\.0\.0\.1:\d+$/, `${address} is loopback`)
})
