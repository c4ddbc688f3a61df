/** Newline-terminated line protocol with nanosecond timestamps, and how many points it holds. */
export interface Chunk { body: Buffer, count: number }

/**
 * Where accepted points wait for the sink: a FIFO with one consumer (the writer), which peeks at a
 * batch, delivers it, and only then commits it away. The writer may peek at the next batches while
 * some are in flight (to compress them meanwhile, or to send them too); commits go in the order of
 * the peeks.
 */
export interface PointBuffer {
  /** Points held and not yet committed. */
  readonly points: number
  /** Whether `count` more points (of `bytes` bytes) fit. */
  fits: (count: number, bytes: number) => boolean
  /** Resolves once the points are held (for the spool: on disk). */
  append: (chunk: Chunk) => Promise<void>
  /** Holds the points before returning; only a buffer that never waits (memory) has it. */
  appendNow?: (chunk: Chunk) => void
  /** Up to `maxPoints` following what is already peeked, whole chunks, at least one; undefined when there are none. */
  peek: (maxPoints: number) => Promise<Chunk | undefined>
  /** Removes the oldest batch peeked and not yet committed. */
  commit: () => Promise<void>
  /** Whether what is still held survives a restart (then it is not dropped on shutdown). */
  readonly durable: boolean
  close: () => Promise<void>
}
