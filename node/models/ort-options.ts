/**
 * The onnxruntime session options fabric uses, shared by the serving session and the validation
 * child so that validation loads a model exactly as serving will (the same graph optimizations,
 * hence the same constant folding and the same memory at load). No onnxruntime import: the shape
 * is a subset of InferenceSession.SessionOptions.
 */

export interface SessionThreads {
  /** Threads one run may use inside an operator (ORT's default: one per core). */
  intraOpThreads?: number
  /** Threads for running independent operators in parallel (only with executionMode 'parallel'). */
  interOpThreads?: number
}

export function ortSessionOptions(threads: SessionThreads = {}) {
  return {
    graphOptimizationLevel: 'all' as const,
    executionMode: 'sequential' as const,
    // Fatal only. ORT logs to stderr, past the daemon's logger: its warnings (an initializer listed
    // as an input, ...) are about the model's export, and its errors (every failed run) come back
    // as exceptions anyway, which fabric reports itself.
    logSeverityLevel: 4 as const,
    // onnxruntime's pool threads spin between runs by default, waiting for the next one: with
    // the node, its nats-server and the callers on the same few cores (an edge box), that spin is
    // CPU taken from them. Measured with the benchmarks' small MLP and other work between runs:
    // 106 ms of wall time for 2000 runs spinning, 66 ms not.
    extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
    ...(threads.intraOpThreads === undefined ? {} : { intraOpNumThreads: threads.intraOpThreads }),
    ...(threads.interOpThreads === undefined ? {} : { interOpNumThreads: threads.interOpThreads }),
  }
}
