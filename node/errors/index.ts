/**
 * The one error type of fabric. Every failure that reaches a user carries one of a closed set of
 * codes; the API maps the code to a gRPC status (node/api/status.ts) and the CLI to an exit code
 * (cli/exit-codes.ts), each with an exhaustive table, so adding a code is a compile error until
 * both edges know it.
 */

export const ERROR_CODES = [
  'INVALID_ARGUMENT',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'PERMISSION_DENIED',
  'UNAUTHENTICATED',
  'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION',
  'UNAVAILABLE',
  'INTERNAL',
] as const

export type ErrorCode = (typeof ERROR_CODES)[number]

export interface FabricErrorOptions {
  /** What went wrong underneath: kept for logs, never sent to clients. */
  cause?: unknown
  /** Machine-readable facts about the failure (the key, the path, the limit). Sent to clients. */
  details?: Record<string, string>
}

export class FabricError extends Error {
  override readonly name = 'FabricError'
  readonly code: ErrorCode
  readonly details: Readonly<Record<string, string>>

  constructor(code: ErrorCode, message: string, options: FabricErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    this.details = Object.freeze({ ...(options.details ?? {}) })
  }

  static invalidArgument(message: string, options?: FabricErrorOptions): FabricError {
    return new FabricError('INVALID_ARGUMENT', message, options)
  }
  static notFound(message: string, options?: FabricErrorOptions): FabricError {
    return new FabricError('NOT_FOUND', message, options)
  }
  static alreadyExists(message: string, options?: FabricErrorOptions): FabricError {
    return new FabricError('ALREADY_EXISTS', message, options)
  }
  static permissionDenied(message: string, options?: FabricErrorOptions): FabricError {
    return new FabricError('PERMISSION_DENIED', message, options)
  }
  static unauthenticated(message: string, options?: FabricErrorOptions): FabricError {
    return new FabricError('UNAUTHENTICATED', message, options)
  }
  static resourceExhausted(message: string, options?: FabricErrorOptions): FabricError {
    return new FabricError('RESOURCE_EXHAUSTED', message, options)
  }
  static failedPrecondition(message: string, options?: FabricErrorOptions): FabricError {
    return new FabricError('FAILED_PRECONDITION', message, options)
  }
  static unavailable(message: string, options?: FabricErrorOptions): FabricError {
    return new FabricError('UNAVAILABLE', message, options)
  }
  static internal(message: string, options?: FabricErrorOptions): FabricError {
    return new FabricError('INTERNAL', message, options)
  }

  /**
   * Wraps anything thrown: a FabricError passes through unchanged, anything else becomes INTERNAL
   * with a generic message and the original kept as the cause (for the log, not the client).
   */
  static from(err: unknown): FabricError {
    if (err instanceof FabricError) return err
    return new FabricError('INTERNAL', 'internal error', { cause: err })
  }
}

export function isFabricError(err: unknown, code?: ErrorCode): err is FabricError {
  return err instanceof FabricError && (code === undefined || err.code === code)
}

/** The message of anything thrown, for logs and wrapped errors. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
