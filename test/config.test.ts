import t from 'tap'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readdir, readFile, stat, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'
import { loadConfig } from '../node/config/index.ts'
import { isFabricError } from '../node/errors/index.ts'
import { ROOT, runCli, startNode, tempDir } from './harness/index.ts'

const errorOf = (fn: () => unknown): string => {
  try {
    fn()
  } catch (err) {
    if (!isFabricError(err, 'INVALID_ARGUMENT')) throw err
    return err.message
  }
  throw new Error('expected a config error')
}

t.test('no config at all: a complete single-site node on loopback', async (t) => {
  const c = loadConfig({ env: {}, cwd: '/srv/x' })
  t.equal(c.node.site, 'local')
  t.equal(c.node.id, undefined, 'the id is generated and kept in the data dir')
  t.equal(c.node.dataDir, '/srv/x/.fabric')
  t.same(c.api.listen, { host: '127.0.0.1', port: 7400 })
  t.same(c.http.listen, { host: '127.0.0.1', port: 7480 })
  t.equal(c.nats.port, 4250)
  t.equal(c.nats.url, undefined)
  t.ok(Object.isFrozen(c) && Object.isFrozen(c.api.listen), 'config is frozen')
})

t.test('no topology keys: a standalone site with one replica', async (t) => {
  const c = loadConfig({ env: { FABRIC_NODE_SITE: 'plant-3' } })
  t.same(
    { ...c.nats, port: undefined, binary: undefined },
    {
      port: undefined,
      url: undefined,
      binary: undefined,
      leafnodeListen: undefined,
      leafnodeAdvertise: undefined,
      leafnodeUser: undefined,
      leafnodePassword: undefined,
      hubUrls: [],
      clusterName: 'plant-3',
      clusterListen: undefined,
      routes: [],
      replicas: 1,
      monitorListen: undefined,
    },
    'no leafnode, cluster or monitoring listener; the cluster name would be the site name',
  )
})

t.test('a hub that is also the edge of an upper hub, clustered, from a file and the environment', async (t) => {
  const dir = await tempDir(t)
  const file = path.join(dir, 'fabric.toml')
  await writeFile(
    file,
    [
      '[node]',
      'site = "region-1"',
      '[nats]',
      'leafnode_listen = "0.0.0.0:7422"',
      'leafnode_advertise = "region-1.example.net:17422"',
      'leafnode_user = "leaf"',
      'hub_urls = ["nats-leaf://up:up-pw@hub.example.net:7422"]',
      'cluster_listen = "10.0.0.1:0"',
      'routes = ["nats-route://10.0.0.1:6222", "nats-route://[fd00::2]:6222"]',
      'replicas = 3',
      'monitor_listen = "127.0.0.1:0"',
    ].join('\n'),
  )
  const c = loadConfig({ file, env: { FABRIC_NATS_LEAFNODE_PASSWORD: 'from-env', FABRIC_NATS_CLUSTER_NAME: 'r1' } })
  t.same(c.nats.leafnodeListen, { host: '0.0.0.0', port: 7422 })
  t.same(c.nats.leafnodeAdvertise, { host: 'region-1.example.net', port: 17422 })
  t.equal(c.nats.leafnodeUser, 'leaf')
  t.equal(c.nats.leafnodePassword, 'from-env', 'FABRIC_NATS_LEAFNODE_PASSWORD sets the password')
  t.same(c.nats.hubUrls, ['nats-leaf://up:up-pw@hub.example.net:7422'])
  t.equal(c.nats.clusterName, 'r1')
  t.same(c.nats.clusterListen, { host: '10.0.0.1', port: 0 })
  t.same(c.nats.routes, ['nats-route://10.0.0.1:6222', 'nats-route://[fd00::2]:6222'])
  t.equal(c.nats.replicas, 3)
  t.same(c.nats.monitorListen, { host: '127.0.0.1', port: 0 })

  const e = loadConfig({
    env: {
      FABRIC_NATS_HUB_URLS: 'nats-leaf://a:b@hub-1:7422, nats-leaf://a:b@hub-2:7422',
      FABRIC_NATS_CLUSTER_LISTEN: '0.0.0.0:6222',
      FABRIC_NATS_ROUTES: 'nats-route://n1:6222,nats-route://n2:6222',
      FABRIC_NATS_REPLICAS: '2',
    },
  })
  t.same(e.nats.hubUrls, ['nats-leaf://a:b@hub-1:7422', 'nats-leaf://a:b@hub-2:7422'], 'lists from the environment are comma-separated')
  t.same(e.nats.routes, ['nats-route://n1:6222', 'nats-route://n2:6222'])
  t.equal(e.nats.replicas, 2, 'numbers from the environment are numbers')
  t.match(errorOf(() => loadConfig({ env: { FABRIC_NATS_REPLICAS: 'three' } })), /nats\.replicas \(from FABRIC_NATS_REPLICAS\): expected a number of replicas/)
})

t.test('topology keys: each mistake names its key, and never shows a password', async (t) => {
  const dir = await tempDir(t)
  const cases: Array<[string, RegExp]> = [
    ['leafnode_listen = "7422"', /nats\.leafnode_listen: expected "host:port", got "7422"/],
    ['leafnode_listen = "0.0.0.0:7422"\nleafnode_advertise = "hub"', /nats\.leafnode_advertise: expected "host:port", got "hub"/],
    ['leafnode_advertise = "hub:7422"', /nats\.leafnode_advertise: only applies to a hub: set nats\.leafnode_listen too/],
    ['leafnode_listen = "0.0.0.0:7422"\nleafnode_user = "leaf"', /nats\.leafnode_password: must be set together with nats\.leafnode_user/],
    ['leafnode_listen = "0.0.0.0:7422"\nleafnode_password = "pw-7f3k"', /nats\.leafnode_user: must be set together with nats\.leafnode_password/],
    ['leafnode_listen = "0.0.0.0:7422"\nleafnode_user = "leaf"\nleafnode_password = ""', /nats\.leafnode_password: must not be empty/],
    ['leafnode_listen = "0.0.0.0:7422"\nleafnode_user = "leaf"\nleafnode_password = 42', /nats\.leafnode_password: expected a password \(string\)/],
    ['leafnode_user = "leaf"\nleafnode_password = "pw-7f3k"', /nats\.leafnode_user: only applies to a hub/],
    ['hub_urls = "nats-leaf://hub:7422"', /nats\.hub_urls: expected a list of URLs/],
    ['hub_urls = ["nats://leaf:pw-7f3k@hub:7422"]', /nats\.hub_urls\.0: expected "nats-leaf:\/\/\[user:pass@\]host:port", got "nats:\/\/hub:7422"/],
    ['hub_urls = ["nats-leaf://leaf:pw-7f3k@hub"]', /nats\.hub_urls\.0: expected "nats-leaf:\/\/\[user:pass@\]host:port", got "nats-leaf:\/\/hub"/],
    ['cluster_name = "Hub One"\ncluster_listen = "0.0.0.0:6222"\nroutes = ["nats-route://a:6222"]', /nats\.cluster_name: expected a cluster name: .*got "Hub One"/],
    ['cluster_name = "hub"', /nats\.cluster_name: only applies to a clustered site: set nats\.cluster_listen too/],
    ['routes = ["nats-route://a:6222"]', /nats\.routes: only applies to a clustered site/],
    ['cluster_listen = "0.0.0.0:6222"', /nats\.routes: a clustered site needs its routes: list every server of the site, this one included/],
    ['cluster_listen = "0.0.0.0:6222"\nroutes = ["a:6222"]', /nats\.routes\.0: expected "nats-route:\/\/host:port", got "a:6222"/],
    ['cluster_listen = "0.0.0.0:6222"\nroutes = ["nats-route://u:pw-7f3k@a:6222"]', /nats\.routes\.0: expected "nats-route:\/\/host:port" without a user or password/],
    ['replicas = 0', /nats\.replicas: expected a number of replicas from 1 to 5/],
    ['replicas = 6', /nats\.replicas: expected a number of replicas from 1 to 5/],
    ['replicas = 2.5', /nats\.replicas: expected a number of replicas from 1 to 5 \(integer\)/],
    ['replicas = 3', /nats\.replicas: 3 replicas need a clustered site: set nats\.cluster_listen and nats\.routes/],
    ['monitor_listen = "localhost"', /nats\.monitor_listen: expected "host:port", got "localhost"/],
    ['leafnode_port = 7422', /nats\.leafnode_port: unknown key/],
  ]
  for (const [toml, expected] of cases) {
    const file = path.join(dir, 'fabric.toml')
    await writeFile(file, `[nats]\n${toml}\n`)
    const message = errorOf(() => loadConfig({ file, env: {} }))
    t.match(message, expected, JSON.stringify(toml))
    t.notMatch(message, /pw-7f3k/, 'no password in the message')
  }
  t.notMatch(errorOf(() => loadConfig({ env: { FABRIC_NATS_LEAFNODE_PASSWORD: 'pw-7f3k' } })), /pw-7f3k/, 'nor from the environment')
})

t.test('with an external NATS, keys of the embedded server are refused, replicas are not', async (t) => {
  const dir = await tempDir(t)
  const keys: Array<[string, string]> = [
    ['leafnode_listen', '"0.0.0.0:7422"'],
    ['leafnode_advertise', '"hub:7422"'],
    ['leafnode_user', '"leaf"'],
    ['leafnode_password', '"pw-7f3k"'],
    ['hub_urls', '["nats-leaf://hub:7422"]'],
    ['cluster_name', '"hub"'],
    ['cluster_listen', '"0.0.0.0:6222"'],
    ['routes', '["nats-route://a:6222"]'],
    ['monitor_listen', '"127.0.0.1:8222"'],
  ]
  const file = path.join(dir, 'fabric.toml')
  for (const [key, value] of keys) {
    await writeFile(file, `[nats]\nurl = "nats://10.0.0.5:4222"\n${key} = ${value}\n`)
    t.match(
      errorOf(() => loadConfig({ file, env: {} })),
      new RegExp(`nats\\.${key}: only applies to the embedded nats-server; configure your NATS deployment instead`),
      key,
    )
  }
  await writeFile(file, `[nats]\nurl = "nats://10.0.0.5:4222"\nreplicas = 3\nhub_urls = []\n`)
  t.equal(loadConfig({ file, env: {} }).nats.replicas, 3, 'replicas apply to the external cluster too')
})

t.test('deploy/examples: every fabric config loads, every nats-server config passes nats-server -t', async (t) => {
  const examples = path.join(ROOT, 'deploy', 'examples')
  const files = (await readdir(examples, { recursive: true })).map((f) => path.join(examples, f)).sort()
  const tomls = files.filter((f) => f.endsWith('.toml'))
  const confs = files.filter((f) => f.endsWith('.conf'))
  t.ok(tomls.length >= 6 && confs.length >= 3, `found ${tomls.length} fabric and ${confs.length} nats-server configs`)
  for (const file of tomls) {
    const c = loadConfig({ file, env: {} })
    t.ok(c.node.site, `${path.relative(ROOT, file)} loads (site ${c.node.site})`)
  }
  const cluster = tomls.filter((f) => f.includes('hub-cluster'))
  t.same(
    cluster.map((f) => loadConfig({ file: f, env: {} }).nats.replicas),
    [3, 3, 3],
    'the clustered hub keeps three replicas',
  )
  t.equal(new Set(cluster.map((f) => loadConfig({ file: f, env: {} }).nats.leafnodeAdvertise?.host)).size, 3, 'each hub server advertises its own address')
  for (const file of confs) {
    const { stdout, stderr } = await promisify(execFile)('nats-server', ['-t', '-c', file])
    t.match(stdout + stderr, /is valid/, `nats-server -t accepts ${path.relative(ROOT, file)}`)
  }
})

t.test('the leafnode password reaches the server config (mode 0600) and no log', async (t) => {
  const password = 'env-leaf-s3cret'
  const node = await startNode(t, {
    config: { nats: { leafnode_listen: '127.0.0.1:0', leafnode_user: 'leaf' } },
    env: { FABRIC_NATS_LEAFNODE_PASSWORD: password },
  })
  const conf = path.join(node.dataDir, 'nats', 'nats-server.conf')
  t.match(await readFile(conf, 'utf8'), `password: "${password}"`, 'FABRIC_NATS_LEAFNODE_PASSWORD is the hub\'s leafnode password')
  t.equal((await stat(conf)).mode & 0o777, 0o600, 'in a file only the node\'s user reads')
  t.notMatch(JSON.stringify(node.logs) + node.stderr(), password, 'not in the debug log')
})

t.test('fabric.example.toml documents every key with its default', async (t) => {
  const example = loadConfig({ file: path.join(ROOT, 'fabric.example.toml'), env: {}, cwd: ROOT })
  const defaults = loadConfig({ env: {}, cwd: ROOT })
  t.same({ ...example, source: undefined }, { ...defaults, source: undefined }, 'the example file yields exactly the defaults')
})

t.test('a file overrides defaults; relative paths are relative to the file', async (t) => {
  const dir = await tempDir(t)
  const file = path.join(dir, 'fabric.toml')
  await writeFile(file, '[node]\nid = "edge-7"\nsite = "plant-3"\ndata_dir = "state"\nshutdown_timeout = "2s"\n[api]\nlisten = "[::1]:7500"\n[nats]\nurl = "nats://10.0.0.5:4222"\n')
  const c = loadConfig({ file, env: {}, cwd: '/elsewhere' })
  t.equal(c.node.id, 'edge-7')
  t.equal(c.node.site, 'plant-3')
  t.equal(c.node.dataDir, path.join(dir, 'state'))
  t.equal(c.node.shutdownTimeoutMs, 2000)
  t.same(c.api.listen, { host: '::1', port: 7500 })
  t.equal(c.nats.url, 'nats://10.0.0.5:4222')
  t.equal(c.source, file)
})

t.test('environment overrides the file', async (t) => {
  const c = loadConfig({ env: { FABRIC_API_LISTEN: '127.0.0.1:9000', FABRIC_NATS_PORT: '4333', FABRIC_NODE_SITE: 'hub', FABRIC_NODE_DATA_DIR: 'd' }, cwd: '/w' })
  t.same(c.api.listen, { host: '127.0.0.1', port: 9000 })
  t.equal(c.nats.port, 4333)
  t.equal(c.node.site, 'hub')
  t.equal(c.node.dataDir, '/w/d')
  t.match(errorOf(() => loadConfig({ env: { FABRIC_NATS_PORT: 'many' } })), /nats\.port \(from FABRIC_NATS_PORT\): expected a port number/)
})

t.test('bad config is refused with the key path and the bad value', async (t) => {
  const dir = await tempDir(t)
  const cases: Array<[string, RegExp]> = [
    ['[api]\nlisten = "localhost"', /api\.listen: expected "host:port", got "localhost"/],
    ['[api]\nlisten = 7400', /api\.listen: expected "host:port"/],
    ['[http]\nlisten = "127.0.0.1:99999"', /http\.listen: expected "host:port", got "127\.0\.0\.1:99999"/],
    ['[node]\ncolour = "blue"', /node\.colour: unknown key/],
    ['[storage]\nsize = 1', /storage: unknown key/],
    ['[nats]\nport = "4222"', /nats\.port: expected a port number/],
    ['[nats]\nport = 4222.5', /nats\.port: expected a port number/],
    ['[nats]\nurl = "localhost:4222"', /nats\.url: expected a NATS URL/],
    ['[node]\nsite = "Plant 3"', /node\.site: expected a site name: .*got "Plant 3"/],
    ['[node]\nshutdown_timeout = "soon"', /node\.shutdown_timeout: expected a duration/],
    ['[log]\nlevel = "loud"', /log\.level: expected one of/],
    ['[models]\nmax_bytes = "lots"', /models\.max_bytes: expected a size such as "512MiB", "2GiB" or "100MB", got "lots"/],
    ['[models]\nvalidation_memory = "64MiB"', /models\.validation_memory: must be at least 192MiB/],
    ['[models]\nintra_op_threads = -1', /models\.intra_op_threads: expected a number of threads/],
    ['[gc]\nunclaimed_chunk_grace = "forever"', /gc\.unclaimed_chunk_grace: expected a duration/],
    ['[api]\nlisten = ', /fabric\.toml:2:10: /],
  ]
  for (const [toml, expected] of cases) {
    const file = path.join(dir, 'fabric.toml')
    await writeFile(file, toml)
    t.match(errorOf(() => loadConfig({ file, env: {} })), expected, JSON.stringify(toml))
  }
  t.match(errorOf(() => loadConfig({ file: path.join(dir, 'missing.toml'), env: {} })), /missing\.toml: no such file/)
})

t.test('fabric node start with a bad config exits 2, names the key and starts nothing', async (t) => {
  const dir = await tempDir(t)
  const file = path.join(dir, 'fabric.toml')
  await writeFile(file, `[node]\ndata_dir = "data"\n[api]\nlisten = "everywhere"\n`)
  const r = await runCli(['node', 'start', '--config', file], { cwd: dir })
  t.equal(r.code, 2, 'exit code of INVALID_ARGUMENT')
  t.match(r.stderr, /api\.listen: expected "host:port", got "everywhere"/)
  t.notOk(existsSync(path.join(dir, 'data')), 'no data dir was created')
  t.equal(r.stdout, '', 'no node log: nothing started')
})
