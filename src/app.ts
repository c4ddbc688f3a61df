import Fastify, { type FastifyInstance } from 'fastify'
import sensible from '@fastify/sensible'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { Config } from './config'
import configPlugin from '../plugins/config'
import postgres from '../plugins/postgres'
import scheduler from '../plugins/scheduler'
import writer from '../plugins/writer'
import health from '../routes/health'

export interface AppOptions {
  /** Start the pollers when the server is ready (false for --once and some tests). */
  poll?: boolean
  /** Pino logger options or an instance; defaults to the configured level. */
  logger?: boolean | object
}

/**
 * The sidecar as a Fastify app. Points are born in measurements/ (pollers, run by the scheduler)
 * and in routes/ (pushes), wait in the one writer, and leave through a sink (src/sinks/).
 */
export async function buildApp (config: Config, options: AppOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: options.logger ?? { level: config.logLevel },
    bodyLimit: config.bodyLimit
  }).withTypeProvider<TypeBoxTypeProvider>()

  await app.register(configPlugin, { config })
  await app.register(sensible)
  await app.register(postgres)
  await app.register(writer)
  await app.register(scheduler, { autoStart: options.poll ?? true })
  await app.register(health)
  return app
}
