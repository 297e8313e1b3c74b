/** The gRPC API: the only part of the node (and of the CLI's client) that knows grpc-js. */
export { ApiServer, type ApiServerOptions } from './server.ts'
export { createClient, fromServiceError, type AnyService, type CallOptions, type Client, type ServiceImpl, type CallObserver } from './adapter.ts'
export { LOCAL_ADMIN, localAdminAuthenticator, type Authenticator, type CallContext, type Principal } from './context.ts'
export { GRPC_STATUS_OF, ERROR_CODE_OF } from './status.ts'
export { nodeServiceImpl, type NodeStatusSource } from './node-service.ts'
export { fileServiceImpl, namespaceServiceImpl, streamServiceImpl, tableServiceImpl } from './data-services.ts'
export { snapshotServiceImpl, type SnapshotServiceOptions } from './snapshot-service.ts'
export { siteServiceImpl } from './site-service.ts'
