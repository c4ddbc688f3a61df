import fp from 'fastify-plugin'
import { LeaderElection } from '../src/leader'

declare module 'fastify' {
  interface FastifyInstance {
    leader: LeaderElection
  }
}

/**
 * Starts the pollers only on the replica that holds the database's advisory lock (src/leader.ts);
 * push endpoints work on every replica regardless.
 */
export default fp<{ autoStart?: boolean }>(async (fastify, { autoStart = true }) => {
  const { scheduler, config } = fastify
  const election = new LeaderElection(fastify.pgConfig, {
    checkInterval: Math.max(100, Math.min(5000, Math.floor(config.pollInterval / 2))),
    log: fastify.log.child({ component: 'leader' }),
    onLead: () => scheduler.start(),
    onFollow: async () => await scheduler.stop()
  })
  fastify.decorate('leader', election)
  if (autoStart) fastify.addHook('onReady', async () => election.start())
  fastify.addHook('onClose', async () => await election.stop())
}, { name: 'leader', dependencies: ['config', 'postgres', 'scheduler'] })
