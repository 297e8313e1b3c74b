/**
 * One lifecycle contract for every subsystem: start() and stop() are safe to call twice and
 * concurrently, and return promises that tests and the composition root await instead of sleeping.
 */

export interface Service {
  /** Name used in logs ("nats", "store", "api", ...). */
  readonly name: string
  start(): Promise<void>
  stop(): Promise<void>
}

export type ServiceState = 'idle' | 'starting' | 'running' | 'stopping' | 'stopped' | 'failed'

/**
 * Makes start/stop idempotent around two functions. A stop during start waits for the start to
 * settle, then stops; a start after stop is refused (a stopped service is not restartable).
 */
export class Lifecycle {
  private current: ServiceState = 'idle'
  private starting: Promise<void> | undefined
  private stopping: Promise<void> | undefined

  constructor(
    private readonly doStart: () => Promise<void>,
    private readonly doStop: () => Promise<void>,
  ) {}

  get state(): ServiceState {
    return this.current
  }

  start(): Promise<void> {
    if (this.stopping) return Promise.reject(new Error('cannot start a stopped service'))
    this.starting ??= (async () => {
      this.current = 'starting'
      try {
        await this.doStart()
        this.current = 'running'
      } catch (err) {
        this.current = 'failed'
        throw err
      }
    })()
    return this.starting
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      if (this.starting) await this.starting.catch(() => undefined)
      this.current = 'stopping'
      try {
        await this.doStop()
      } finally {
        this.current = 'stopped'
      }
    })()
    return this.stopping
  }
}
