import type { FastifyBaseLogger } from 'fastify'
import fp from 'fastify-plugin'
import { ConfigError, type Config } from '../src/config'
import { FileSink } from '../src/sinks/file'
import { InfluxSink } from '../src/sinks/influxdb'
import type { Sink } from '../src/sinks/sink'
import type { PointBuffer } from '../src/buffer/buffer'
import { MemoryBuffer } from '../src/buffer/memory'
import { Spool } from '../src/buffer/spool'
import { Writer, type WriterOptions } from '../src/writer'

declare module 'fastify' {
  interface FastifyInstance {
    sink: Sink
    writer: Writer
  }
}

/**
 * Large enough that opening and syncing a new segment is rare at 100 MB/s of ingest, and at most an
 * eighth of spoolMaxBytes: the active segment is only deleted once sealed, so a small spool needs
 * small segments to free room.
 */
const segmentBytes = (maxBytes: number): number => Math.min(64 * 1024 * 1024, Math.floor(maxBytes / 8))

/** How long after the shutdown begins close() keeps trying to deliver what is buffered. */
const FLUSH_ON_CLOSE_MS = 8000

/** The writer's settings from the sidecar's configuration (bench/reference.ts builds one the same way). */
export function writerOptions (config: Config, log: FastifyBaseLogger): WriterOptions {
  return {
    batchSize: config.batchSize,
    flushInterval: config.flushInterval,
    // Appends to one file must not interleave.
    batchesInFlight: config.influx === undefined ? 1 : config.batchesInFlight,
    maxRetryDelay: config.maxRetryDelay,
    log
  }
}

/** The spool in SPOOL_DIR; a directory that cannot be used (a file, no permission) is bad configuration. */
async function openSpool (dir: string, maxBytes: number, log: FastifyBaseLogger): Promise<Spool> {
  try {
    return await Spool.open(dir, { maxBytes, segmentBytes: segmentBytes(maxBytes), log })
  } catch (err) {
    throw new ConfigError(`SPOOL_DIR ${dir} cannot be used: ${(err as Error).message}`)
  }
}

/**
 * The one writer, the buffer it drains (memory, or the spool when SPOOL_DIR is set) and the sink it
 * delivers to: InfluxDB when INFLUX_URL is set, else a file.
 */
export default fp(async (fastify) => {
  const { config } = fastify
  const sink: Sink = config.influx === undefined ? new FileSink(config.sinkFile) : new InfluxSink(config.influx)
  const buffer: PointBuffer = config.spoolDir === undefined
    ? new MemoryBuffer(config.bufferPoints, config.bufferMaxBytes, config.batchSize)
    : await openSpool(config.spoolDir, config.spoolMaxBytes, fastify.log.child({ component: 'spool' }))
  const writer = new Writer(sink, buffer, writerOptions(config, fastify.log.child({ component: 'writer' })))
  fastify.decorate('sink', sink)
  fastify.decorate('writer', writer)
  fastify.log.info(`points go to ${sink.description}${config.spoolDir === undefined ? '' : `, through the spool in ${config.spoolDir}`}`)
  // The deadline counts from the start of the shutdown: onClose hooks run in reverse order, so the
  // scheduler's (which waits for a poll under way) runs before this one, inside the same grace.
  let deadline = 0
  fastify.addHook('preClose', async () => { deadline = Date.now() + FLUSH_ON_CLOSE_MS })
  fastify.addHook('onClose', async () => {
    await writer.close(deadline || Date.now() + FLUSH_ON_CLOSE_MS)
    await sink.close()
  })
}, { name: 'writer', dependencies: ['config'] })
