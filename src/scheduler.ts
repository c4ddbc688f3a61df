import type { Socket } from 'node:net'
import type { FastifyBaseLogger } from 'fastify'
import type { Pool, PoolClient } from 'pg'
import type { Measurement } from '../measurements/measurement'
import { stampNs } from './clock'
import type { Point } from './line-protocol/point'

/** How long past pollTimeout stop() waits for a poll before cutting its connection. */
const STOP_MARGIN_MS = 1000

export interface PollerStats {
  polls: number
  errors: number
  lastDurationMs?: number
  lastError?: string
}

export interface SchedulerOptions {
  /** statement_timeout of every poll, in ms. */
  pollTimeout: number
  log: FastifyBaseLogger
}

/**
 * Runs each measurement on its own interval. The next poll of a measurement is scheduled only when
 * the previous one has finished, so a poller never overlaps itself; a failing poller is logged,
 * counted and tried again next interval, and never stops the others.
 */
export class Scheduler {
  readonly stats = new Map<string, PollerStats>()
  private readonly timers = new Set<NodeJS.Timeout>()
  private readonly running = new Set<Promise<void>>()
  /** How to end each poll under way (see pollOnce). */
  private readonly cuts = new Set<(why: Error) => void>()
  private stopped = true
  private generation = 0

  constructor (
    private readonly pool: Pool,
    readonly measurements: Measurement[],
    private readonly emit: (points: Point[]) => void,
    private readonly options: SchedulerOptions
  ) {
    for (const m of measurements) this.stats.set(m.name, { polls: 0, errors: 0 })
  }

  start (): void {
    if (!this.stopped) return
    this.stopped = false
    const generation = ++this.generation
    // A poll of the previous run may still be under way (a leader that lost the lock and took it
    // again before stop() was done): start after it, never beside it.
    void Promise.all(this.running).then(() => {
      for (const m of this.measurements) this.schedule(m, 0, generation)
    })
  }

  /**
   * Stops scheduling and waits for the polls under way; one still running once statement_timeout
   * must have ended its statement is stuck on a dead connection, and is cut.
   */
  async stop (): Promise<void> {
    this.stopped = true
    this.generation++
    for (const timer of this.timers) clearTimeout(timer)
    this.timers.clear()
    const stuck = setTimeout(() => { for (const cut of this.cuts) cut(new Error('polling stopped')) }, this.options.pollTimeout + STOP_MARGIN_MS)
    await Promise.all(this.running)
    clearTimeout(stuck)
  }

  /** One poll inside a read-only transaction with a statement timeout; throws what the poll threw. */
  async pollOnce (measurement: Measurement, emit = this.emit): Promise<void> {
    const client = await this.pool.connect()
    let broken: Error | undefined
    const controller = new AbortController()
    // A checked-out client has no pool listener: a connection lost between two statements would
    // otherwise be an uncaught 'error' event. A statement under way fails with it, a stream is aborted.
    const onError = (err: Error): void => {
      broken ??= err
      controller.abort(err)
    }
    /** Ends the poll by dropping its connection, which also ends a statement stuck on a dead network. */
    const cut = (why: Error): void => {
      onError(why)
      ;(client as unknown as { connection: { stream: Socket } }).connection.stream.destroy()
    }
    // statement_timeout bounds the database's work, not a connection gone silent: a poll still under
    // way at its next turn is cut.
    const limit = this.options.pollTimeout + measurement.interval
    const watchdog = setTimeout(() => cut(new Error(`poll did not finish within ${limit} ms: its connection was dropped`)), limit)
    // A terminated backend may end the connection without an 'error' (its FATAL went to the query).
    const onEnd = (): void => onError(new Error('Connection terminated unexpectedly'))
    this.cuts.add(cut)
    client.on('error', onError)
    client.on('end', onEnd)
    try {
      await client.query(`BEGIN READ ONLY; SET LOCAL statement_timeout = ${this.options.pollTimeout}`)
      await measurement.poll({ client, timestamp: stampNs(), emit, signal: controller.signal })
      await client.query('COMMIT')
    } catch (err) {
      broken ??= await rollback(client)
      throw broken instanceof Error && controller.signal.aborted ? broken : err
    } finally {
      clearTimeout(watchdog)
      this.cuts.delete(cut)
      client.off('error', onError)
      client.off('end', onEnd)
      client.release(broken)
    }
  }

  /** `generation`: the start() this loop belongs to; a loop of an earlier run ends at its next turn. */
  private schedule (measurement: Measurement, delay: number, generation: number): void {
    if (this.stopped || generation !== this.generation) return
    const timer = setTimeout(() => {
      this.timers.delete(timer)
      const run = this.pollAndRecord(measurement).finally(() => {
        this.running.delete(run)
        this.schedule(measurement, measurement.interval, generation)
      })
      this.running.add(run)
    }, delay)
    this.timers.add(timer)
  }

  private async pollAndRecord (measurement: Measurement): Promise<void> {
    const stats = this.stats.get(measurement.name) as PollerStats
    const started = performance.now()
    try {
      await this.pollOnce(measurement)
      if (stats.lastError !== undefined) this.options.log.info({ poller: measurement.name }, 'poller works again')
      stats.lastError = undefined
    } catch (err) {
      stats.errors++
      const message = (err as Error).message
      // A lasting failure (say, a table the database does not have) is reported once, not every interval.
      const level = message === stats.lastError ? 'debug' : 'warn'
      this.options.log[level]({ poller: measurement.name, err }, `poll failed, trying again every ${measurement.interval} ms`)
      stats.lastError = message
    } finally {
      stats.polls++
      stats.lastDurationMs = performance.now() - started
    }
  }
}

/** Ends a failed poll's transaction; returns an error when the connection itself is unusable. */
async function rollback (client: PoolClient): Promise<Error | undefined> {
  try {
    await client.query('ROLLBACK')
    return undefined
  } catch (err) {
    return err as Error
  }
}
