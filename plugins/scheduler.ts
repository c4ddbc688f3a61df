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

/** The PostgreSQL pollers (measurements/); plugins/leader.ts starts them on the leading replica. */
export default fp(async (fastify) => {
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
  fastify.addHook('onClose', async () => await scheduler.stop())
}, { name: 'scheduler', dependencies: ['config', 'postgres', 'writer'] })
