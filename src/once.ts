import Fastify from 'fastify'
import { measurementsFromConfig } from '../measurements'
import configPlugin from '../plugins/config'
import postgres from '../plugins/postgres'
import type { Config } from './config'
import { formatPoints } from './line-protocol/format'
import type { Point } from './line-protocol/point'
import { Scheduler } from './scheduler'

/**
 * `metrics-sidecar --once`: runs every poller once, prints the points as line protocol on stdout
 * and the failures on stderr; resolves with the process exit code (0 when every poller worked).
 *
 * Only the configuration and PostgreSQL are set up: no HTTP server, no leader lock, and no writer,
 * so a check run beside a live sidecar never opens its SPOOL_DIR (which would deliver, and delete,
 * points that sidecar acknowledged) nor writes to the sink.
 */
export async function pollOnce (config: Config, stdout: NodeJS.WritableStream, stderr: NodeJS.WritableStream): Promise<number> {
  const app = Fastify({ logger: { level: 'error', stream: stderr } })
  await app.register(configPlugin, { config })
  await app.register(postgres)
  await app.ready()
  const print = (points: Point[]): void => { stdout.write(formatPoints(points).body) }
  const scheduler = new Scheduler(app.pg, measurementsFromConfig(config, app.pgServer), print, { pollTimeout: config.pollTimeout, log: app.log })
  let failed = 0
  try {
    for (const measurement of scheduler.measurements) {
      try {
        await scheduler.pollOnce(measurement)
      } catch (err) {
        failed++
        stderr.write(`metrics-sidecar: poller ${measurement.name} failed: ${(err as Error).message}\n`)
      }
    }
  } finally {
    await app.close()
  }
  return failed === 0 ? 0 : 1
}
