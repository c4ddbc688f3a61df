import fp from 'fastify-plugin'
import type { Config } from '../src/config'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
  }
}

/** Exposes the configuration validated at start-up (src/config.ts) to every plugin. */
export default fp<{ config: Config }>(async (fastify, { config }) => {
  fastify.decorate('config', config)
}, { name: 'config' })
