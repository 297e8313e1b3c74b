/**
 * Model serving, the domain side: the registry (publish, remove, deploy) and the server (load
 * deployed versions, answer and forward predictions). The runtime underneath is node/models.
 */
export { ModelRegistry, type DeploySpec, type PublishHeader, type RegistryOptions } from './registry.ts'
export { ModelServer, type PredictCall, type PredictResult, type ServerOptions } from './server.ts'
export { checkVersion, nearestSites, nextVersion, parseModelName, pickVersion, type Split } from './routing.ts'
