/** The fabric command's contract with scripts: help, version, usage errors and exit codes. */
import t from 'tap'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { EXIT_CODE_OF } from '../cli/exit-codes.ts'
import { ERROR_CODES } from '../node/errors/index.ts'
import { freePort, ROOT, runCli } from './harness/index.ts'

const version = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version as string

t.test('version and help', async (t) => {
  const v = await runCli(['version'])
  t.equal(v.code, 0)
  t.match(v.stdout, new RegExp(`^fabric ${version.replace(/\./g, '\\.')} \\(node `))
  t.same(JSON.parse((await runCli(['version', '-o', 'json'])).stdout).version, version)
  t.equal((await runCli(['--version'])).stdout.trim(), version)
  for (const args of [['--help'], ['node', '--help'], ['node', 'start', '--help'], ['status', '--help'], ['version', '--help']]) {
    const r = await runCli(args)
    t.equal(r.code, 0, `${args.join(' ')} exits 0`)
    t.match(r.stdout, /^Usage: fabric/m, `${args.join(' ')} prints usage`)
  }
})

t.test('usage errors exit 2 and say what is wrong', async (t) => {
  const unknown = await runCli(['frobnicate'])
  t.equal(unknown.code, 2)
  t.match(unknown.stderr, /unknown command 'frobnicate'/)
  const badFlag = await runCli(['status', '--colour'])
  t.equal(badFlag.code, 2)
  t.match(badFlag.stderr, /unknown option '--colour'/)
  const badOutput = await runCli(['status', '-o', 'yaml'])
  t.equal(badOutput.code, 2)
  t.match(badOutput.stderr, /yaml/)
})

t.test('a node that is not running: exit 9 (UNAVAILABLE) and a hint', async (t) => {
  const port = await freePort()
  const r = await runCli(['status', '--server', `127.0.0.1:${port}`])
  t.equal(r.code, EXIT_CODE_OF.UNAVAILABLE)
  t.match(r.stderr, new RegExp(`cannot reach the fabric node at 127\\.0\\.0\\.1:${port} \\(ECONNREFUSED\\); is it running\\?`))
})

t.test('every error code has its own exit code, and docs/cli.md lists them', async (t) => {
  const codes = ERROR_CODES.map((c) => EXIT_CODE_OF[c])
  t.equal(new Set(codes).size, codes.length, 'distinct')
  const doc = readFileSync(path.join(ROOT, 'docs', 'cli.md'), 'utf8')
  for (const c of ERROR_CODES) t.match(doc, new RegExp(`\\| ${EXIT_CODE_OF[c]} \\| \`${c}\``), `${c} documented`)
})
