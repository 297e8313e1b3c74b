/**
 * Every call gets a context: who is calling (the principal), a signal that fires when the caller
 * goes away, and a logger bound to the call. Access control plugs in at authenticate() without
 * touching handlers.
 */
import type { Metadata } from '@grpc/grpc-js'
import type { Logger } from '../log/index.ts'

export interface Principal {
  /** "admin" is the node's local administrator; users and services come with access control. */
  readonly kind: 'admin' | 'user' | 'service'
  readonly name: string
}

export const LOCAL_ADMIN: Principal = Object.freeze({ kind: 'admin', name: 'local-admin' })

export interface CallContext {
  readonly principal: Principal
  /** Aborted when the client cancels or the deadline passes. */
  readonly signal: AbortSignal
  /** Fully qualified method, e.g. "fabric.v1.NodeService/GetStatus". */
  readonly method: string
  readonly peer: string
  readonly log: Logger
}

/**
 * Maps a call's metadata to a principal, or throws UNAUTHENTICATED. The peer address is a function:
 * grpc-js builds that string on request, and most authenticators never need it.
 */
export type Authenticator = (metadata: Metadata, peer: () => string) => Principal | Promise<Principal>

/** Until tokens and mTLS arrive every caller on the (loopback-only by default) API is the local admin. */
export const localAdminAuthenticator: Authenticator = () => LOCAL_ADMIN
