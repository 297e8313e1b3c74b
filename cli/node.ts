/** `fabric node ...`: run the daemon. */
import { Command } from 'commander'
import { FabricError } from '../node/errors/index.ts'
import { EXIT_CODE_OF, EXIT_FORCED } from './exit-codes.ts'
import { nodesListCommand } from './site.ts'

export function nodeCommand(): Command {
  const node = new Command('node').description('run and manage the fabric node daemon')
  node
    .command('start')
    .description('run a fabric node in the foreground until SIGINT or SIGTERM (a second signal forces the exit)')
    .option('-c, --config <file>', 'TOML config file (see fabric.example.toml); without it the node runs on defaults', process.env.FABRIC_CONFIG)
    .action(async (opts: { config?: string }) => {
      process.exitCode = await runNode(opts.config)
    })
  node.addCommand(nodesListCommand())
  return node
}

/** Runs the daemon; resolves with the process exit code once it has stopped. */
async function runNode(configFile: string | undefined): Promise<number> {
  // The daemon's modules load only here, so other commands start fast.
  const [{ loadConfig }, { createLogger }, { FabricNode }] = await Promise.all([
    import('../node/config/index.ts'),
    import('../node/log/index.ts'),
    import('../node/main.ts'),
  ])
  // Config errors come before any logger exists (the logger is configured by it): plain stderr.
  const config = loadConfig({ file: configFile })
  const log = createLogger(config.log)
  const node = new FabricNode(config, log)

  let signals = 0
  const forceExit = (): never => {
    node.killNow()
    process.exit(EXIT_FORCED)
  }
  const stopped = new Promise<number>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      signals++
      if (signals > 1) {
        log.warn({ signal }, 'second signal: forcing exit')
        forceExit()
      }
      log.info({ signal }, 'stopping (send the signal again to force)')
      const force = setTimeout(() => {
        log.error({ timeoutMs: config.node.shutdownTimeoutMs }, 'graceful stop took too long: forcing exit')
        forceExit()
      }, config.node.shutdownTimeoutMs + 2_000)
      force.unref()
      node.stop().then(
        () => resolve(0),
        (err: unknown) => {
          log.error({ err }, 'stop failed')
          resolve(1)
        },
      )
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
  })
  const crash = (err: unknown) => {
    log.fatal({ err }, 'unexpected error: exiting')
    node.killNow()
    process.exit(1)
  }
  process.on('uncaughtException', crash)
  process.on('unhandledRejection', crash)

  try {
    await node.start()
  } catch (err) {
    const fe = FabricError.from(err)
    log.error({ err: fe.cause ?? fe, code: fe.code }, `node failed to start: ${fe.message}`)
    if (signals === 0) {
      process.stderr.write(`fabric: ${fe.message}\n`)
      return EXIT_CODE_OF[fe.code]
    }
  }
  return stopped
}
