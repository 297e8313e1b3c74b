import t from 'tap'
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import { loadConfig } from '../node/config/index.ts'
import { isFabricError } from '../node/errors/index.ts'
import { ROOT, runCli, tempDir } from './harness/index.ts'

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
