/** How commands reach a node: --server, then $FABRIC_SERVER, then the default API address. */
import { Option } from 'commander'
import { createClient, type AnyService, type Client } from '../node/api/client.ts'

export const DEFAULT_SERVER = '127.0.0.1:7400'

export const serverOption = () =>
  new Option('-s, --server <host:port>', 'API address of the fabric node').env('FABRIC_SERVER').default(DEFAULT_SERVER)

/** Runs fn with a client for service at server and always closes it. */
export async function withClient<S extends AnyService, T>(service: S, server: string, fn: (client: Client<S>) => Promise<T>): Promise<T> {
  const client = createClient(service, server)
  try {
    return await fn(client)
  } finally {
    client.close()
  }
}
