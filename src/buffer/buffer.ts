/** Newline-terminated line protocol with nanosecond timestamps, and how many points it holds. */
export interface Chunk { body: Buffer, count: number }

/**
 * Where accepted points wait for the sink: a FIFO with one consumer (the writer), which peeks at a
 * batch from the head, delivers it, and only then commits it away.
 */
export interface PointBuffer {
  /** Points held and not yet committed. */
  readonly points: number
  /** Whether `count` more points (of `bytes` bytes) fit. */
  fits: (count: number, bytes: number) => boolean
  /** Resolves once the points are held (for the spool: on disk). */
  append: (chunk: Chunk) => Promise<void>
  /** Up to `maxPoints` from the head, whole chunks, at least one; undefined when empty. */
  peek: (maxPoints: number) => Promise<Chunk | undefined>
  /** Removes what the last peek returned. */
  commit: () => Promise<void>
  /** Whether what is still held survives a restart (then it is not dropped on shutdown). */
  readonly durable: boolean
  close: () => Promise<void>
}
