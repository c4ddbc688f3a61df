import type { FastifyBaseLogger } from 'fastify'
import { SinkError, type Sink } from './sinks/sink'

export interface WriterOptions {
  /** Points per request to the sink. */
  batchSize: number
  /** Longest a point waits for a batch to fill, in ms. */
  flushInterval: number
  /** Points held (queued or in flight) before new ones are refused. */
  bufferPoints: number
  /** Ceiling of the retry backoff, in ms. */
  maxRetryDelay: number
  log: FastifyBaseLogger
}

/** Newline-terminated line protocol with nanosecond timestamps, and how many points it holds. */
interface Chunk { body: string, count: number }

export type DropReason = 'rejected' | 'buffer_full' | 'shutdown'

export interface WriterStats {
  accepted: Record<string, number>
  written: number
  dropped: Record<DropReason, number>
  retries: number
  batches: number
}

const MIN_RETRY_DELAY_MS = 250

const sleep = async (ms: number, signal: AbortSignal): Promise<void> => await new Promise(resolve => {
  const timer = setTimeout(done, ms)
  signal.addEventListener('abort', done, { once: true })
  function done (): void {
    clearTimeout(timer)
    signal.removeEventListener('abort', done)
    resolve()
  }
})

/**
 * The one buffered writer every point goes through: sources hand it line protocol, it batches by
 * size and interval, delivers to the sink one batch at a time (so order is kept), retries what may
 * succeed later, isolates what the sink refuses, and counts every point as written or dropped.
 */
export class Writer {
  readonly stats: WriterStats = { accepted: {}, written: 0, dropped: { rejected: 0, buffer_full: 0, shutdown: 0 }, retries: 0, batches: 0 }
  /** Points accepted and not yet written or dropped (queued plus in flight). */
  private held = 0
  private readonly queue: Chunk[] = []
  private queuedPoints = 0
  private lastFailure?: SinkError
  private wake?: () => void
  private closing = false
  private readonly stopWaiting = new AbortController()
  private readonly loop: Promise<void>

  constructor (private readonly sink: Sink, private readonly options: WriterOptions) {
    this.loop = this.run()
  }

  get bufferedPoints (): number {
    return this.held
  }

  /** Why the sink is not taking points right now, or undefined when it is. */
  get failure (): string | undefined {
    return this.lastFailure?.message
  }

  /**
   * Queues points unless that would overfill the buffer; returns false (nothing queued) when full,
   * so a push route can answer 429 and the client keeps the points.
   */
  accept (body: string, count: number, source: string): boolean {
    if (count === 0) return true
    if (this.closing || (this.held > 0 && this.held + count > this.options.bufferPoints)) return false
    this.held += count
    this.queuedPoints += count
    this.queue.push({ body, count })
    this.stats.accepted[source] = (this.stats.accepted[source] ?? 0) + count
    // The first queued point starts the flush interval; a full batch goes at once.
    if (this.queuedPoints === count || this.queuedPoints >= this.options.batchSize) this.wake?.()
    return true
  }

  /** Like {@link accept}, for sources that cannot be told to retry: a full buffer drops, and counts it. */
  acceptOrDrop (body: string, count: number, source: string): void {
    if (!this.accept(body, count, source)) {
      this.stats.dropped.buffer_full += count
      this.options.log.warn({ source, points: count }, 'buffer full: points dropped')
    }
  }

  /** Delivers everything held, retrying until `deadline` (epoch ms); what is left then is counted as dropped. */
  async close (deadline: number): Promise<void> {
    this.closing = true
    const timer = setTimeout(() => this.stopWaiting.abort(), Math.max(0, deadline - Date.now()))
    this.wake?.()
    await this.loop
    clearTimeout(timer)
    if (this.held > 0) {
      this.options.log.error({ points: this.held }, 'shutdown deadline passed: points not delivered')
      this.drop(this.held, 'shutdown')
    }
  }

  private async run (): Promise<void> {
    while (!this.stopWaiting.signal.aborted) {
      if (this.queuedPoints === 0) {
        if (this.closing) return
        await this.waitForWake(undefined)
        continue
      }
      if (this.queuedPoints < this.options.batchSize && !this.closing) await this.waitForWake(this.options.flushInterval)
      const batch = this.takeBatch()
      await this.deliver(batch.body, batch.count)
    }
  }

  private async waitForWake (ms: number | undefined): Promise<void> {
    await new Promise<void>(resolve => {
      const timer = ms === undefined ? undefined : setTimeout(resolve, ms)
      this.wake = () => {
        clearTimeout(timer)
        resolve()
      }
    })
    this.wake = undefined
  }

  private takeBatch (): Chunk {
    let body = ''
    let count = 0
    while (this.queue.length > 0 && (count === 0 || count + this.queue[0].count <= this.options.batchSize)) {
      const chunk = this.queue.shift() as Chunk
      body += chunk.body
      count += chunk.count
    }
    this.queuedPoints -= count
    return { body, count }
  }

  private async deliver (body: string, count: number): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        this.stats.batches++
        await this.sink.send(body)
        this.lastFailure = undefined
        this.stats.written += count
        this.held -= count
        return
      } catch (err) {
        const failure = err instanceof SinkError ? err : new SinkError(String(err), 'retry')
        if (failure.kind === 'reject' || failure.kind === 'too-large') {
          await this.isolate(body, count, failure)
          return
        }
        this.lastFailure = failure
        if (this.stopWaiting.signal.aborted) return
        const delay = failure.retryAfterMs ?? this.backoff(attempt)
        this.stats.retries++
        this.options.log.warn({ points: count, attempt: attempt + 1, retryInMs: delay }, failure.message)
        await sleep(delay, this.stopWaiting.signal)
      }
    }
  }

  /** Splits a refused batch in halves until the refused points stand alone, so good neighbours still land. */
  private async isolate (body: string, count: number, failure: SinkError): Promise<void> {
    if (count === 1) {
      this.options.log.error({ line: body.trimEnd(), reason: failure.message }, 'point refused by the sink: dropped')
      this.drop(1, 'rejected')
      return
    }
    const lines = body.split('\n', count)
    const half = count >> 1
    await this.deliver(lines.slice(0, half).join('\n') + '\n', half)
    await this.deliver(lines.slice(half).join('\n') + '\n', count - half)
  }

  private drop (count: number, reason: DropReason): void {
    this.stats.dropped[reason] += count
    this.held -= count
  }

  private backoff (attempt: number): number {
    const ceiling = Math.min(this.options.maxRetryDelay, MIN_RETRY_DELAY_MS * 2 ** attempt)
    return Math.round(ceiling / 2 + Math.random() * ceiling / 2)
  }
}
