/**
 * How the writer must treat a failed delivery:
 * - `retry`: keep the batch and send it again later (network error, 429, 5xx);
 * - `misconfigured`: like retry, as the target refuses every write until its configuration is fixed
 *   (401/403 token, 404 org or bucket not found): nothing is dropped, and the sidecar reports not ready;
 * - `reject`: the target refuses these points for good (400/422); isolate and drop the bad ones;
 * - `too-large`: the batch is over the target's size limit (413); split it.
 */
export type FailureKind = 'retry' | 'misconfigured' | 'reject' | 'too-large'

export class SinkError extends Error {
  name = 'SinkError'
  constructor (
    message: string,
    readonly kind: FailureKind,
    /** The delay the target asked for (Retry-After), in milliseconds. */
    readonly retryAfterMs?: number
  ) {
    super(message)
  }
}

/** A batch as it goes on the wire. */
export interface Encoded {
  bytes: Buffer
  gzipped: boolean
}

/** Where points leave the sidecar. */
export interface Sink {
  /** Said at start-up, e.g. `InfluxDB http://influx:8086 bucket=app`. */
  readonly description: string
  /**
   * Newline-terminated line protocol with nanosecond timestamps, as send() takes it (for InfluxDB,
   * gzipped). Apart from send() so that the writer can encode the next batch while one is in flight.
   */
  encode: (body: Buffer) => Promise<Encoded>
  /** Stores an encoded batch; rejects with a {@link SinkError}, or when `signal` aborts it (shutdown deadline). */
  send: (batch: Encoded, signal?: AbortSignal) => Promise<void>
  /** Throws when the target cannot be reached (readiness), or does not answer within `timeoutMs`. */
  check: (timeoutMs: number) => Promise<void>
  close: () => Promise<void>
}
