import fp from 'fastify-plugin'
import { measurementsFromConfig } from '../measurements'
import { formatPoint } from '../src/line-protocol/format'
import type { Point } from '../src/line-protocol/point'
import { Scheduler } from '../src/scheduler'

declare module 'fastify' {
  interface FastifyInstance {
    scheduler: Scheduler
  }
}

/** Formats polled points as line protocol for the writer; returns the body and how many points it holds. */
export function toLineProtocol (points: Point[]): { body: string, count: number } {
  let body = ''
  let count = 0
  for (const point of points) {
    const line = formatPoint(point)
    if (line === undefined) continue
    body += line + '\n'
    count++
  }
  return { body, count }
}

/** Runs the PostgreSQL pollers (measurements/) once the server is ready; stops them first on close. */
export default fp<{ autoStart?: boolean }>(async (fastify, { autoStart = true }) => {
  const scheduler = new Scheduler(
    fastify.pg,
    measurementsFromConfig(fastify.config, fastify.pgServer),
    points => {
      const { body, count } = toLineProtocol(points)
      fastify.writer.acceptOrDrop(body, count, 'poll')
    },
    { pollTimeout: fastify.config.pollTimeout, log: fastify.log.child({ component: 'scheduler' }) }
  )
  fastify.decorate('scheduler', scheduler)
  if (autoStart) fastify.addHook('onReady', async () => scheduler.start())
  fastify.addHook('onClose', async () => await scheduler.stop())
}, { name: 'scheduler', dependencies: ['config', 'postgres', 'writer'] })
