import type { FastifyBaseLogger } from 'fastify'
import type { Chunk, PointBuffer } from './buffer/buffer'
import { splitEntries } from './line-protocol/parse'
import { SinkError, type Encoded, type Sink } from './sinks/sink'

export interface WriterOptions {
  /** Points per request to the sink. */
  batchSize: number
  /** Longest a point waits for a batch to fill, in ms. */
  flushInterval: number
  /**
   * Batches sent before the first of them is answered. Above 1 the sink never waits idle between
   * two batches, but a later batch may land first: only points of one series and timestamp written
   * twice within a moment could then end up with the older value. Commits stay in order.
   */
  batchesInFlight: number
  /** Ceiling of the retry backoff, in ms. */
  maxRetryDelay: number
  log: FastifyBaseLogger
}

export type DropReason = 'rejected' | 'buffer_full' | 'shutdown'

export interface WriterStats {
  accepted: Record<string, number>
  written: number
  dropped: Record<DropReason, number>
  retries: number
  batches: number
}

const MIN_RETRY_DELAY_MS = 250

/** A batch peeked from the buffer, with its encoding for the sink under way. */
interface Batch extends Chunk { encoded: Promise<Encoded> }

const sleep = async (ms: number, signal: AbortSignal): Promise<void> => await new Promise(resolve => {
  const timer = setTimeout(done, ms)
  signal.addEventListener('abort', done, { once: true })
  function done (): void {
    clearTimeout(timer)
    signal.removeEventListener('abort', done)
    resolve()
  }
})

/** At most one 'points dropped' line this often. */
const DROP_LOG_MS = 10_000
const NO_DROPS = { points: 0, source: '', why: '' }

/** The buffer failed to take points (e.g. ENOSPC writing the spool): nothing was held, the caller may retry. */
export class HoldError extends Error {
  name = 'HoldError'
}

/**
 * The one writer every point goes through: sources hand it line protocol, it holds it in a buffer
 * (memory, or the on-disk spool), delivers batches by size and interval to the sink, a few at once
 * (`batchesInFlight`), while it encodes the next, retries what may succeed later, isolates what the
 * sink refuses, and counts every point as written or dropped.
 */
export class Writer {
  readonly stats: WriterStats = { accepted: {}, written: 0, dropped: { rejected: 0, buffer_full: 0, shutdown: 0 }, retries: 0, batches: 0 }
  private lastFailure?: SinkError
  /** Points in batches peeked from the buffer and not yet committed. */
  private batched = 0
  /** Points delivered but left uncommitted because delivery of an older batch was stopped at shutdown. */
  private deliveredUncommitted = 0
  /** Set while the writer waits for points: how many it waits for, and how to stop waiting. */
  private waiting?: { points: number, wake: () => void }
  private closing = false
  private closed?: Promise<void>
  private readonly stopWaiting = new AbortController()
  private readonly loop: Promise<void>
  /** Pushes waiting for room (see waitForRoom). */
  private readonly roomWaiters = new Set<() => void>()

  constructor (private readonly sink: Sink, readonly buffer: PointBuffer, private readonly options: WriterOptions) {
    this.loop = this.run()
  }

  /** Points accepted and not yet written or dropped (waiting, or in flight). */
  get bufferedPoints (): number {
    return this.buffer.points
  }

  /** True while not even one more point fits: pushes wait for room before their bodies are read. */
  get full (): boolean {
    return !this.buffer.fits(1, 0)
  }

  /**
   * Resolves true as soon as `count` points of `bytes` fit (the sink took a batch), or false after
   * `ms` or on close. A push waits here rather than being refused at once: a fast client is slowed
   * to the sink's pace instead of spinning on 429s, which would take CPU from delivery.
   */
  async waitForRoom (ms: number, count = 1, bytes = 0): Promise<boolean> {
    if (this.closing) return false
    if (ms <= 0 || this.buffer.fits(count, bytes)) return this.buffer.fits(count, bytes)
    return await new Promise(resolve => {
      const finish = (room: boolean): void => {
        clearTimeout(timer)
        this.roomWaiters.delete(check)
        resolve(room)
      }
      const check = (): void => {
        if (this.closing) finish(false)
        else if (this.buffer.fits(count, bytes)) finish(true)
      }
      const timer = setTimeout(finish, ms, false)
      this.roomWaiters.add(check)
    })
  }

  /** Why the sink is not taking points right now, or undefined when it is. */
  get failure (): string | undefined {
    return this.lastFailure?.message
  }

  /** Drops not yet logged, with the last one's source and reason, and the timer that logs them (see dropFull). */
  private unlogged = NO_DROPS
  private dropLogTimer?: NodeJS.Timeout
  private holdFailure?: string
  private readFailure?: string

  /** Why the buffer could not take the last points it was given (a full disk under SPOOL_DIR), or be read; undefined when it works. */
  get bufferFailure (): string | undefined {
    return this.holdFailure ?? this.readFailure
  }

  /**
   * Resolves true once the points are held (with a spool: on disk), or false, holding nothing, when
   * they do not fit within `waitMs`: a push route answers 429 and the client keeps them.
   */
  async accept (body: Buffer, count: number, source: string, waitMs = 0): Promise<boolean> {
    if (count === 0) return true
    if (!this.buffer.fits(count, body.length)) {
      const deadline = Date.now() + waitMs
      // Checked again after each wait: another push woken by the same commit may have taken the room.
      // From the last check to the start of append() nothing else runs, so the bound holds.
      do {
        if (!await this.waitForRoom(deadline - Date.now(), count, body.length)) return false
      } while (!this.buffer.fits(count, body.length))
    }
    if (this.closing) return false
    try {
      await this.buffer.append({ body, count })
      this.holdFailure = undefined
    } catch (err) {
      this.holdFailure = `the buffer cannot hold points: ${(err as Error).message}`
      throw new HoldError(this.holdFailure)
    }
    this.countHeld(count, source)
    return true
  }

  /**
   * {@link accept} without a promise: true once the points are held, when they fit and the buffer
   * holds them at once (memory). False, holding nothing, when they need accept() to wait (for room,
   * or for the spool's write). Pushes take this path first: a promise per beacon costs throughput.
   */
  holdNow (body: Buffer, count: number, source: string): boolean {
    if (count === 0) return true
    if (this.buffer.appendNow === undefined || this.closing || !this.buffer.fits(count, body.length)) return false
    this.buffer.appendNow({ body, count })
    this.countHeld(count, source)
    return true
  }

  private countHeld (count: number, source: string): void {
    this.stats.accepted[source] = (this.stats.accepted[source] ?? 0) + count
    this.wakeIfReady()
  }

  /**
   * The first point starts the flush interval; a full batch goes at once. Also called after each
   * commit: a push counted while a commit was under way saw `batched` not yet lowered.
   */
  private wakeIfReady (): void {
    if (this.waiting !== undefined && this.buffer.points - this.batched >= this.waiting.points) this.waiting.wake()
  }

  /** Like {@link accept}, for sources that cannot be told to retry: what does not fit is dropped, and counted. */
  acceptOrDrop (body: Buffer, count: number, source: string): void {
    this.accept(body, count, source).then(held => {
      if (!held) this.dropFull(count, source, 'buffer full')
    }, (err: Error) => this.dropFull(count, source, err.message))
  }

  /**
   * Delivers what is held, retrying until `deadline` (epoch ms). What is left then stays in a
   * durable buffer for the next start, or is counted as dropped from memory.
   */
  async close (deadline: number): Promise<void> {
    this.closed ??= this.drain(deadline)
    await this.closed
  }

  private async drain (deadline: number): Promise<void> {
    this.closing = true
    this.recheckWaiters()
    const timer = setTimeout(() => this.stopWaiting.abort(), Math.max(0, deadline - Date.now()))
    this.waiting?.wake()
    await this.loop
    clearTimeout(timer)
    const left = this.buffer.points - this.deliveredUncommitted
    if (left > 0 && this.buffer.durable) {
      this.options.log.warn({ points: left }, 'shutdown: undelivered points stay in the spool for the next start')
    } else if (left > 0) {
      this.options.log.error({ points: left }, 'shutdown deadline passed: points not delivered')
      this.stats.dropped.shutdown += left
    }
    clearTimeout(this.dropLogTimer)
    this.logDrops()
    await this.buffer.close()
  }

  /** Room was freed (a commit) or will never come (close): waiting pushes look again, in arrival order. */
  private recheckWaiters (): void {
    for (const check of this.roomWaiters) check()
  }

  /**
   * Counted at once (/metrics is exact), logged at most every DROP_LOG_MS with the points dropped
   * since the last line: a large poll into a full buffer drops in hundreds of chunks.
   */
  private dropFull (count: number, source: string, why: string): void {
    this.stats.dropped.buffer_full += count
    this.unlogged = { points: this.unlogged.points + count, source, why }
    if (this.dropLogTimer === undefined) this.logDrops()
  }

  /** Logs the drops since the last line, if any; while they go on (and until close), again after DROP_LOG_MS. */
  private logDrops (): void {
    this.dropLogTimer = undefined
    const { points, source, why } = this.unlogged
    if (points === 0) return
    this.options.log.warn({ source, points }, `points dropped: ${why}`)
    this.unlogged = NO_DROPS
    if (!this.closing) this.dropLogTimer = setTimeout(() => this.logDrops(), DROP_LOG_MS).unref()
  }

  private async run (): Promise<void> {
    // Batches under way, oldest first: each settles after the one before it (see fly()).
    const flights: Array<Promise<boolean>> = []
    let next = this.nextBatch()
    try {
      while (!this.stopWaiting.signal.aborted) {
        const batch = await next
        if (batch === undefined) break
        const flight = this.fly(batch, flights.at(-1))
        flights.push(flight)
        const leave = (): unknown => flights.shift()
        void flight.then(leave, leave)
        // The next batch is peeked and encoded while these are in flight.
        next = this.nextBatch()
        if (flights.length >= this.options.batchesInFlight && !await flights[0]) break
      }
      await flights.at(-1)
    } finally {
      // Stopped: the batch being prepared stays in the buffer, but must be done reading it first.
      this.waiting?.wake()
      await next.catch(() => undefined)
    }
  }

  /**
   * Delivers a batch, then commits it once every batch before it is committed: the buffer forgets
   * points in the order it took them, so a spool never skips an undelivered batch. False once stopped.
   */
  private async fly (batch: Batch, before: Promise<boolean> | undefined): Promise<boolean> {
    const delivered = await this.deliver(batch)
    if (!(await before ?? true) || !delivered) {
      if (delivered) this.deliveredUncommitted += batch.count
      return false
    }
    await this.buffer.commit()
    this.batched -= batch.count
    this.wakeIfReady()
    this.recheckWaiters()
    return true
  }

  /**
   * Waits until a batch is full, or the flush interval has passed since its first point, then peeks
   * at it and starts encoding it; undefined once closing with nothing left.
   */
  private async nextBatch (): Promise<Batch | undefined> {
    for (;;) {
      while (this.buffer.points === this.batched) {
        if (this.closing) return undefined
        await this.waitFor(1, undefined)
      }
      if (this.buffer.points - this.batched < this.options.batchSize && !this.closing) await this.waitFor(this.options.batchSize, this.options.flushInterval)
      let chunk: Chunk | undefined
      try {
        chunk = await this.buffer.peek(this.options.batchSize)
        this.readFailure = undefined
      } catch (err) {
        // A buffer that cannot be read (the spool's files removed or unreadable) must not end the
        // writer, and with it the process: it is reported and read again later.
        this.readFailure = `the buffer cannot be read: ${(err as Error).message}`
        this.options.log.error({ err }, `${this.readFailure}; trying again in ${this.options.maxRetryDelay} ms`)
        if (this.closing) return undefined
        await sleep(this.options.maxRetryDelay, this.stopWaiting.signal)
        continue
      }
      if (chunk !== undefined) {
        this.batched += chunk.count
        return this.batchOf(chunk.body, chunk.count)
      }
    }
  }

  private async waitFor (points: number, ms: number | undefined): Promise<void> {
    await new Promise<void>(resolve => {
      const timer = ms === undefined ? undefined : setTimeout(resolve, ms)
      this.waiting = {
        points,
        wake: () => {
          clearTimeout(timer)
          resolve()
        }
      }
    })
    this.waiting = undefined
  }

  private batchOf (body: Buffer, count: number): Batch {
    const encoded = this.sink.encode(body)
    // Awaited in deliver(); a batch left behind at shutdown must not become an unhandled rejection.
    encoded.catch(() => undefined)
    return { body, count, encoded }
  }

  /** Resolves true once every point is written or dropped, false when stopped while retrying. */
  private async deliver (batch: Batch): Promise<boolean> {
    const { body, count } = batch
    for (let attempt = 0; ; attempt++) {
      try {
        this.stats.batches++
        // A retry encodes again: the encoding may be what failed.
        // Aborted at the shutdown deadline: an InfluxDB that does not answer must not hold the exit.
        await this.sink.send(await (attempt === 0 ? batch.encoded : this.sink.encode(body)), this.stopWaiting.signal)
        this.lastFailure = undefined
        this.stats.written += count
        return true
      } catch (err) {
        const failure = err instanceof SinkError ? err : new SinkError(String(err), 'retry')
        if (failure.kind === 'reject' || failure.kind === 'too-large') return await this.isolate(body, count, failure)
        this.lastFailure = failure
        if (this.stopWaiting.signal.aborted) return false
        const delay = failure.retryAfterMs ?? this.backoff(attempt)
        this.stats.retries++
        this.options.log.warn({ points: count, attempt: attempt + 1, retryInMs: delay }, failure.message)
        await sleep(delay, this.stopWaiting.signal)
      }
    }
  }

  /** Splits a refused batch in halves until the refused points stand alone, so good neighbours still land. */
  private async isolate (body: Buffer, count: number, failure: SinkError): Promise<boolean> {
    if (count === 1) {
      this.options.log.error({ line: body.toString().trimEnd(), reason: failure.message }, 'point refused by the sink: dropped')
      this.stats.dropped.rejected++
      return true
    }
    const entries = splitEntries(body)
    const half = entries.length >> 1
    return await this.deliver(this.batchOf(Buffer.concat(entries.slice(0, half)), half)) &&
      await this.deliver(this.batchOf(Buffer.concat(entries.slice(half)), entries.length - half))
  }

  private backoff (attempt: number): number {
    const ceiling = Math.min(this.options.maxRetryDelay, MIN_RETRY_DELAY_MS * 2 ** attempt)
    return Math.round(ceiling / 2 + Math.random() * ceiling / 2)
  }
}
