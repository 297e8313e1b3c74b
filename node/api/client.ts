/**
 * The client side of the API: the public entry for programs that call a node (the CLI, tests,
 * applications in TypeScript). Kept apart from index.ts so a client does not load the server's
 * dependencies (reflection, health, the node's subsystems): the CLI starts in a fraction of the time.
 */
export { createClient, fromServiceError, type AnyService, type CallOptions, type Client } from './adapter.ts'
