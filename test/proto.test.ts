/** The generated code in proto/gen is what buf + protoc-gen-es make of proto/fabric today. */
import t from 'tap'
import { execFile } from 'node:child_process'
import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'
import { ROOT, tempDir } from './harness/index.ts'

const run = promisify(execFile)

async function files(dir: string, base = dir): Promise<string[]> {
  const out: string[] = []
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, e.name)
    if (e.isDirectory()) out.push(...(await files(full, base)))
    else out.push(path.relative(base, full))
  }
  return out.sort()
}

t.test('proto/gen is up to date (run `npm run proto` after editing a .proto)', async (t) => {
  const out = await tempDir(t)
  const bin = path.join(ROOT, 'node_modules', '.bin')
  await run(path.join(bin, 'buf'), ['generate', '--output', out], { cwd: path.join(ROOT, 'proto'), env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } })
  const fresh = await files(path.join(out, 'gen'))
  const committed = await files(path.join(ROOT, 'proto', 'gen'))
  t.same(committed, fresh, 'same files')
  for (const f of fresh) {
    t.equal(await readFile(path.join(ROOT, 'proto', 'gen', f), 'utf8'), await readFile(path.join(out, 'gen', f), 'utf8'), `${f} unchanged`)
  }
  await run(path.join(bin, 'buf'), ['lint'], { cwd: path.join(ROOT, 'proto') })
  t.pass('buf lint is clean')
})
