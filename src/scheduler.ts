import type { FastifyBaseLogger } from 'fastify'
import type { Pool, PoolClient } from 'pg'
import type { Measurement } from '../measurements/measurement'
import { stampNs } from './clock'
import type { Point } from './line-protocol/point'

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

  async stop (): Promise<void> {
    this.stopped = true
    this.generation++
    for (const timer of this.timers) clearTimeout(timer)
    this.timers.clear()
    await Promise.all(this.running)
  }

  /** One poll inside a read-only transaction with a statement timeout; throws what the poll threw. */
  async pollOnce (measurement: Measurement, emit = this.emit): Promise<void> {
    const client = await this.pool.connect()
    let broken: Error | undefined
    // A checked-out client has no pool listener: a connection lost between two statements would
    // otherwise be an uncaught 'error' event. The next statement fails with it anyway.
    const onError = (err: Error): void => { broken = err }
    client.on('error', onError)
    try {
      await client.query(`BEGIN READ ONLY; SET LOCAL statement_timeout = ${this.options.pollTimeout}`)
      await measurement.poll({ client, timestamp: stampNs(), emit })
      await client.query('COMMIT')
    } catch (err) {
      broken ??= await rollback(client)
      throw err
    } finally {
      client.off('error', onError)
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
