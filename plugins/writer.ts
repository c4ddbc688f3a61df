import fp from 'fastify-plugin'
import { FileSink } from '../src/sinks/file'
import { InfluxSink } from '../src/sinks/influxdb'
import type { Sink } from '../src/sinks/sink'
import { Writer } from '../src/writer'

declare module 'fastify' {
  interface FastifyInstance {
    sink: Sink
    writer: Writer
  }
}

/** How long close() keeps trying to deliver what is buffered. */
export const FLUSH_ON_CLOSE_MS = 8000

/** The one buffered writer and the sink it delivers to: InfluxDB when INFLUX_URL is set, else a file. */
export default fp(async (fastify) => {
  const { config } = fastify
  const sink: Sink = config.influx === undefined ? new FileSink(config.sinkFile) : new InfluxSink(config.influx)
  const writer = new Writer(sink, {
    batchSize: config.batchSize,
    flushInterval: config.flushInterval,
    bufferPoints: config.bufferPoints,
    maxRetryDelay: config.maxRetryDelay,
    log: fastify.log.child({ component: 'writer' })
  })
  fastify.decorate('sink', sink)
  fastify.decorate('writer', writer)
  fastify.log.info(`points go to ${sink.description}`)
  fastify.addHook('onClose', async () => {
    await writer.close(Date.now() + FLUSH_ON_CLOSE_MS)
    await sink.close()
  })
}, { name: 'writer', dependencies: ['config'] })
