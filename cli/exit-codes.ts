/**
 * The CLI's exit codes: one per error code, so scripts can tell "not found" from "node down".
 * docs/cli.md lists them; keep the two in step.
 */
import type { ErrorCode } from '../node/errors/index.ts'

export const EXIT_OK = 0
/** Bad command-line usage (unknown flag, missing argument), found before anything is sent. */
export const EXIT_USAGE = 2

export const EXIT_CODE_OF: { readonly [C in ErrorCode]: number } = {
  INTERNAL: 1,
  INVALID_ARGUMENT: 2,
  NOT_FOUND: 3,
  ALREADY_EXISTS: 4,
  PERMISSION_DENIED: 5,
  UNAUTHENTICATED: 6,
  RESOURCE_EXHAUSTED: 7,
  FAILED_PRECONDITION: 8,
  UNAVAILABLE: 9,
}

/** A second SIGINT/SIGTERM cut the graceful stop short. */
export const EXIT_FORCED = 130
