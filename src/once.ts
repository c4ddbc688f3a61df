import type { FastifyInstance } from 'fastify'
import { formatPoints } from './line-protocol/format'

/**
 * `metrics-sidecar --once`: runs every poller once, prints the points as line protocol on stdout
 * and the failures on stderr; resolves with the process exit code (0 when every poller worked).
 */
export async function pollOnce (app: FastifyInstance, stdout: NodeJS.WritableStream, stderr: NodeJS.WritableStream): Promise<number> {
  let failed = 0
  for (const measurement of app.scheduler.measurements) {
    try {
      await app.scheduler.pollOnce(measurement, points => stdout.write(formatPoints(points).body))
    } catch (err) {
      failed++
      stderr.write(`metrics-sidecar: poller ${measurement.name} failed: ${(err as Error).message}\n`)
    }
  }
  return failed === 0 ? 0 : 1
}
