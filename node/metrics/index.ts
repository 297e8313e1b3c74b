/**
 * Prometheus metrics: the process's own (CPU, memory, event loop, GC) and fabric's, all prefixed
 * fabric_. Only this folder touches prom-client; subsystems get counters and gauges from here.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'

export type { Counter, Gauge, Histogram } from 'prom-client'

export class Metrics {
  readonly registry = new Registry()

  constructor() {
    collectDefaultMetrics({ register: this.registry })
  }

  counter<L extends string>(name: string, help: string, labelNames: readonly L[] = []): Counter<L> {
    return new Counter({ name, help, labelNames, registers: [this.registry] })
  }

  /** A gauge; with collect, its value is computed at every scrape. */
  gauge<L extends string>(name: string, help: string, options: { labelNames?: readonly L[]; collect?: (g: Gauge<L>) => void | Promise<void> } = {}): Gauge<L> {
    const collect = options.collect
    return new Gauge<L>({
      name,
      help,
      labelNames: options.labelNames ?? [],
      registers: [this.registry],
      ...(collect ? { collect(this: Gauge<L>) { return collect(this) } } : {}),
    })
  }

  histogram<L extends string>(name: string, help: string, labelNames: readonly L[], buckets: number[]): Histogram<L> {
    return new Histogram({ name, help, labelNames, buckets, registers: [this.registry] })
  }

  /** The exposition text and its content type. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() }
  }
}
