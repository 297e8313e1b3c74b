/**
 * Core NATS messaging between nodes, within a site and across leafnodes: requests answered by
 * one node of a group (forwarded writes, lookups) and broadcasts (heartbeats). Only node/nats
 * knows nats.js; the rest of the node sends bytes on subjects.
 */
import { NoRespondersError, RequestError, TimeoutError, type NatsConnection, type Subscription } from '@nats-io/transport-node'
import { FabricError, messageOf } from '../errors/index.ts'
import type { Logger } from '../log/index.ts'

/** Nobody subscribes to the subject (at this site or any site linked to it right now). */
export class NoResponders extends Error {}

export class Bus {
  private readonly subs = new Set<Subscription>()

  constructor(
    private readonly nc: NatsConnection,
    private readonly log: Logger,
  ) {}

  /**
   * Answers requests on subject; with a queue group, each request goes to one member. The
   * handler's bytes are the reply; a handler that throws gets no reply (the caller times out),
   * so handlers encode their own errors.
   */
  serve(subject: string, queue: string | undefined, handler: (data: Uint8Array) => Promise<Uint8Array>): () => void {
    const sub = this.nc.subscribe(subject, {
      ...(queue ? { queue } : {}),
      callback: (err, msg) => {
        if (err) return
        handler(msg.data).then(
          (reply) => msg.respond(reply),
          (e: unknown) => this.log.warn({ subject, err: messageOf(e) }, 'request handler failed'),
        )
      },
    })
    this.subs.add(sub)
    return () => {
      this.subs.delete(sub)
      sub.unsubscribe()
    }
  }

  /** Sends a request and resolves with the first reply; NoResponders when nobody listens. */
  async request(subject: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    try {
      const reply = await this.nc.request(subject, data, { timeout: timeoutMs })
      return reply.data
    } catch (err) {
      if (err instanceof NoRespondersError || (err instanceof RequestError && err.isNoResponders())) throw new NoResponders(subject)
      if (err instanceof TimeoutError || (err instanceof RequestError && err.cause instanceof TimeoutError)) throw FabricError.unavailable(`no answer on ${subject} within ${timeoutMs} ms`, { cause: err })
      throw FabricError.unavailable(`request on ${subject} failed: ${messageOf(err)}`, { cause: err })
    }
  }

  publish(subject: string, data: Uint8Array): void {
    try {
      this.nc.publish(subject, data)
    } catch (err) {
      // A closed or reconnecting connection: broadcasts are best effort.
      this.log.debug({ subject, err: messageOf(err) }, 'publish dropped')
    }
  }

  /** Calls fn for every message on subject (wildcards allowed) until the returned stop. */
  subscribe(subject: string, fn: (subject: string, data: Uint8Array) => void): () => void {
    const sub = this.nc.subscribe(subject, {
      callback: (err, msg) => {
        if (!err) fn(msg.subject, msg.data)
      },
    })
    this.subs.add(sub)
    return () => {
      this.subs.delete(sub)
      sub.unsubscribe()
    }
  }

  close(): void {
    for (const s of this.subs) s.unsubscribe()
    this.subs.clear()
  }
}
