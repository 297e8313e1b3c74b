import type { MessageInitShape } from '@bufbuild/protobuf'
import { NodeService, type GetStatusResponseSchema } from '../../proto/gen/fabric/v1/node_pb.ts'
import type { ServiceImpl } from './adapter.ts'

/** Whatever can describe the node; the composition root provides it. */
export type NodeStatusSource = () => Promise<MessageInitShape<typeof GetStatusResponseSchema>>

export function nodeServiceImpl(status: NodeStatusSource): ServiceImpl<typeof NodeService> {
  return {
    getStatus: () => status(),
  }
}
