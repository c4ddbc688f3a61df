import Fastify, { LogController, type FastifyInstance } from 'fastify'
import sensible from '@fastify/sensible'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { Config } from './config'
import { ajvOptions, schemaErrorFormatter } from './http/validation'
import configPlugin from '../plugins/config'
import errors from '../plugins/errors'
import leader from '../plugins/leader'
import postgres from '../plugins/postgres'
import scheduler from '../plugins/scheduler'
import selfMonitoring from '../plugins/self-monitoring'
import writer from '../plugins/writer'
import beacons from '../routes/beacons'
import health from '../routes/health'
import metrics from '../routes/metrics'
import query from '../routes/query'
import write from '../routes/write'

/** How long a shutdown waits for requests under way before closing their connections. */
const REQUEST_DRAIN_MS = 2000

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
    bodyLimit: config.bodyLimit,
    requestTimeout: config.requestTimeout,
    // Node checks request timeouts every connectionsCheckingInterval (30 s by default), and only
    // enforces requestTimeout when headersTimeout is not longer: slow clients are cut off on time.
    http: { connectionsCheckingInterval: Math.min(1000, config.requestTimeout), headersTimeout: Math.min(60_000, config.requestTimeout) },
    // A beacon per Django request would mean a log line per request; errors are still logged.
    logController: new LogController({ disableRequestLogging: true }),
    // Without request logging, a child logger per request (to bind its reqId) ties a line to nothing,
    // and making one per beacon cost about 9 % of requests/s: errors name their request instead.
    childLoggerFactory: logger => logger,
    ajv: ajvOptions,
    schemaErrorFormatter
  }).withTypeProvider<TypeBoxTypeProvider>()

  // Closing waits for requests under way, and a client trickling a body would hold it until
  // requestTimeout: after a short drain the rest are cut off, so the writer's flush gets the grace.
  app.addHook('preClose', async () => {
    setTimeout(() => app.server.closeAllConnections(), REQUEST_DRAIN_MS).unref()
  })
  await app.register(configPlugin, { config })
  await app.register(sensible)
  await app.register(errors)
  await app.register(postgres)
  await app.register(writer)
  await app.register(scheduler)
  await app.register(leader, { autoStart: options.poll ?? true })
  await app.register(selfMonitoring)
  await app.register(health)
  await app.register(metrics)
  await app.register(beacons)
  await app.register(write)
  await app.register(query)
  return app
}
