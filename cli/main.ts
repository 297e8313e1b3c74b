#!/usr/bin/env node
/** The `fabric` command. One file per noun; this one wires them and maps errors to exit codes. */
import { Command, CommanderError } from 'commander'
import { FabricError } from '../node/errors/index.ts'
import { fabricVersion } from '../node/identity/index.ts'
import { EXIT_CODE_OF, EXIT_USAGE } from './exit-codes.ts'
import { nodeCommand } from './node.ts'
import { siteCommand } from './site.ts'
import { snapCommand } from './snap.ts'
import { statusCommand } from './status.ts'
import { fileCommand } from './file.ts'
import { modelCommand } from './model.ts'
import { streamCommand } from './stream.ts'
import { tableCommand } from './table.ts'
import { datasetCommand, volumeCommand } from './volume.ts'
import { outputOption, toJson, type OutputFormat } from './output.ts'

export function program(): Command {
  const p = new Command('fabric')
    .description('fabric: one namespace of tables, files and streams from edge to cloud, with models served next to the data')
    .version(fabricVersion(), '-V, --version', 'print the fabric version')
    .showHelpAfterError('(run with --help for usage)')
    // Options after a subcommand are that subcommand's: `fabric model deploy M --version 3` is the
    // model's version, not a request for fabric's own (-V, --version before any subcommand).
    .enablePositionalOptions()
    .exitOverride()
  p.addCommand(nodeCommand())
  p.addCommand(statusCommand())
  p.addCommand(siteCommand())
  p.addCommand(volumeCommand())
  p.addCommand(snapCommand())
  p.addCommand(datasetCommand())
  p.addCommand(tableCommand())
  p.addCommand(fileCommand())
  p.addCommand(streamCommand())
  p.addCommand(modelCommand())
  p.addCommand(
    new Command('version')
      .description('print the fabric version')
      .addOption(outputOption())
      .action((opts: { output: OutputFormat }) => {
        const v = { version: fabricVersion(), node: process.versions.node }
        process.stdout.write(opts.output === 'json' ? `${toJson(v)}\n` : `fabric ${v.version} (node ${v.node})\n`)
      }),
  )
  // Every subcommand inherits exitOverride so usage errors come back here as CommanderError.
  const override = (c: Command) => {
    c.exitOverride()
    c.commands.forEach(override)
  }
  override(p)
  return p
}

async function main(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv)
    return typeof process.exitCode === 'number' ? process.exitCode : 0
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version output end in a CommanderError with exit code 0.
      return err.exitCode === 0 ? 0 : EXIT_USAGE
    }
    const fe = FabricError.from(err)
    const message = fe.code === 'INTERNAL' && fe.message === 'internal error' && fe.cause ? `internal error: ${String((fe.cause as Error).message ?? fe.cause)}` : fe.message
    process.stderr.write(`fabric: ${message}\n`)
    return EXIT_CODE_OF[fe.code]
  }
}

main(process.argv).then((code) => {
  process.exitCode = code
})
