import fp from 'fastify-plugin'
import { measurementsFromConfig } from '../measurements'
import { formatPoints } from '../src/line-protocol/format'
import { Scheduler } from '../src/scheduler'

declare module 'fastify' {
  interface FastifyInstance {
    scheduler: Scheduler
  }
}

/** The PostgreSQL pollers (measurements/); plugins/leader.ts starts them on the leading replica. */
export default fp(async (fastify) => {
  const scheduler = new Scheduler(
    fastify.pg,
    measurementsFromConfig(fastify.config, fastify.pgServer),
    points => {
      const { body, count } = formatPoints(points)
      fastify.writer.acceptOrDrop(body, count, 'poll')
    },
    { pollTimeout: fastify.config.pollTimeout, log: fastify.log.child({ component: 'scheduler' }) }
  )
  fastify.decorate('scheduler', scheduler)
  fastify.addHook('onClose', async () => await scheduler.stop())
}, { name: 'scheduler', dependencies: ['config', 'postgres', 'writer'] })
