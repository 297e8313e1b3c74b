/** FabricError codes <-> gRPC status codes: the one table each way. */
import { status as GrpcStatus } from '@grpc/grpc-js'
import type { ErrorCode } from '../errors/index.ts'

export const GRPC_STATUS_OF: { readonly [C in ErrorCode]: GrpcStatus } = {
  INVALID_ARGUMENT: GrpcStatus.INVALID_ARGUMENT,
  NOT_FOUND: GrpcStatus.NOT_FOUND,
  ALREADY_EXISTS: GrpcStatus.ALREADY_EXISTS,
  PERMISSION_DENIED: GrpcStatus.PERMISSION_DENIED,
  UNAUTHENTICATED: GrpcStatus.UNAUTHENTICATED,
  RESOURCE_EXHAUSTED: GrpcStatus.RESOURCE_EXHAUSTED,
  FAILED_PRECONDITION: GrpcStatus.FAILED_PRECONDITION,
  UNAVAILABLE: GrpcStatus.UNAVAILABLE,
  INTERNAL: GrpcStatus.INTERNAL,
}

/** What a client makes of any status a server (ours or a proxy in between) may send. */
export const ERROR_CODE_OF: { readonly [S in GrpcStatus]: ErrorCode | undefined } = {
  [GrpcStatus.OK]: undefined,
  [GrpcStatus.CANCELLED]: 'UNAVAILABLE',
  [GrpcStatus.UNKNOWN]: 'INTERNAL',
  [GrpcStatus.INVALID_ARGUMENT]: 'INVALID_ARGUMENT',
  [GrpcStatus.DEADLINE_EXCEEDED]: 'UNAVAILABLE',
  [GrpcStatus.NOT_FOUND]: 'NOT_FOUND',
  [GrpcStatus.ALREADY_EXISTS]: 'ALREADY_EXISTS',
  [GrpcStatus.PERMISSION_DENIED]: 'PERMISSION_DENIED',
  [GrpcStatus.RESOURCE_EXHAUSTED]: 'RESOURCE_EXHAUSTED',
  [GrpcStatus.FAILED_PRECONDITION]: 'FAILED_PRECONDITION',
  [GrpcStatus.ABORTED]: 'FAILED_PRECONDITION',
  [GrpcStatus.OUT_OF_RANGE]: 'INVALID_ARGUMENT',
  // An older node that lacks an RPC: the caller must upgrade it (or itself) first.
  [GrpcStatus.UNIMPLEMENTED]: 'FAILED_PRECONDITION',
  [GrpcStatus.INTERNAL]: 'INTERNAL',
  [GrpcStatus.UNAVAILABLE]: 'UNAVAILABLE',
  [GrpcStatus.DATA_LOSS]: 'INTERNAL',
  [GrpcStatus.UNAUTHENTICATED]: 'UNAUTHENTICATED',
}

/** Trailer keys that carry a FabricError's details, e.g. fabric-detail-key: "api.listen". */
export const DETAIL_PREFIX = 'fabric-detail-'
