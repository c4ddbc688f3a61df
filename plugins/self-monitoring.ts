import { hostname } from 'node:os'
import fp from 'fastify-plugin'
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client'
import { MemoryBuffer } from '../src/buffer/memory'
import { Spool } from '../src/buffer/spool'
import { stampNs } from '../src/clock'
import { formatPoints } from '../src/line-protocol/format'
import type { FieldValue } from '../src/line-protocol/point'

declare module 'fastify' {
  interface FastifyInstance {
    /** Prometheus registry behind GET /metrics. */
    metrics: Registry
  }
}

type DefaultMetric = (registry: Registry, config: { eventLoopMonitoringPrecision: number }) => void

/**
 * prom-client's default metrics (process, heap, event loop) except nodejs_gc_duration_seconds: its
 * observer of every garbage collection cost about 10 % of the beacon route's requests/s (A/B on one
 * pinned core), and prom-client has no option to leave one metric out, so each of the others is
 * loaded from its file (prom-client/lib/metrics/<name>.js, as collectDefaultMetrics does).
 */
function collectDefaultMetricsExceptGc (registry: Registry): void {
  for (const name of collectDefaultMetrics.metricsList) {
    if (name === 'gc') continue
    const collect = require(`prom-client/lib/metrics/${name}`) as DefaultMetric
    collect(registry, { eventLoopMonitoringPrecision: 10 })
  }
}

/**
 * The sidecar's own counters: read from the writer and the scheduler when Prometheus scrapes
 * /metrics, and written as the `sidecar` measurement every poll interval, so nothing it drops goes
 * unseen in either place.
 */
export default fp(async (fastify) => {
  const { writer, scheduler, config } = fastify
  const registry = new Registry()
  collectDefaultMetricsExceptGc(registry)
  const registers = [registry]

  /** A counter mirrored from a running total the writer or scheduler keeps. */
  const mirror = (name: string, help: string, labelNames: string[], read: (set: (labels: Record<string, string>, value: number) => void) => void): void => {
    // eslint-disable-next-line no-new
    new Counter({
      name, help, labelNames, registers,
      collect () {
        this.reset()
        read((labels, value) => this.inc(labels, value))
      }
    })
  }
  const gauge = (name: string, help: string, labelNames: string[], read: (set: (labels: Record<string, string>, value: number) => void) => void): void => {
    // eslint-disable-next-line no-new
    new Gauge({
      name, help, labelNames, registers,
      collect () {
        this.reset()
        read((labels, value) => this.set(labels, value))
      }
    })
  }

  mirror('sidecar_points_accepted_total', 'Points accepted into the buffer, by source.', ['source'], set => {
    for (const [source, n] of Object.entries(writer.stats.accepted)) set({ source }, n)
  })
  mirror('sidecar_points_written_total', 'Points the sink stored.', [], set => set({}, writer.stats.written))
  mirror('sidecar_points_dropped_total', 'Points accepted and then dropped, by reason.', ['reason'], set => {
    for (const [reason, n] of Object.entries(writer.stats.dropped)) set({ reason }, n)
  })
  mirror('sidecar_write_retries_total', 'Deliveries retried after a failure.', [], set => set({}, writer.stats.retries))
  mirror('sidecar_write_requests_total', 'Requests made to the sink.', [], set => set({}, writer.stats.batches))
  gauge('sidecar_buffer_points', 'Points accepted and not yet written or dropped.', [], set => set({}, writer.bufferedPoints))
  const { buffer } = writer
  if (buffer instanceof MemoryBuffer) {
    gauge('sidecar_buffer_limit_points', 'BUFFER_POINTS: above it pushes get 429.', [], set => set({}, config.bufferPoints))
    gauge('sidecar_buffer_bytes', 'Memory the buffer holds.', [], set => set({}, buffer.bytes))
    gauge('sidecar_buffer_limit_bytes', 'bufferMaxBytes: above it pushes get 429.', [], set => set({}, config.bufferMaxBytes))
  } else if (buffer instanceof Spool) {
    gauge('sidecar_spool_bytes', 'Bytes in SPOOL_DIR segment files.', [], set => set({}, buffer.bytes))
    gauge('sidecar_spool_limit_bytes', 'Largest the spool may grow; past it pushes get 429.', [], set => set({}, config.spoolMaxBytes))
    mirror('sidecar_spool_corrupt_bytes_total', 'Bytes of torn or corrupt records cut off at start.', [], set => set({}, buffer.corruptBytes))
  }
  gauge('sidecar_leader', '1 on the replica that runs the database pollers (advisory lock held).', [], set => set({}, fastify.leader.leading ? 1 : 0))
  gauge('sidecar_sink_up', '1 while the sink takes points, 0 while deliveries fail.', [], set => set({}, writer.failure === undefined ? 1 : 0))
  mirror('sidecar_polls_total', 'Polls run, by measurement.', ['measurement'], set => {
    for (const [measurement, s] of scheduler.stats) set({ measurement }, s.polls)
  })
  mirror('sidecar_poll_errors_total', 'Polls that failed, by measurement.', ['measurement'], set => {
    for (const [measurement, s] of scheduler.stats) set({ measurement }, s.errors)
  })
  gauge('sidecar_poll_duration_seconds', 'Duration of the last poll, by measurement.', ['measurement'], set => {
    for (const [measurement, s] of scheduler.stats) if (s.lastDurationMs !== undefined) set({ measurement }, s.lastDurationMs / 1000)
  })
  fastify.decorate('metrics', registry)

  const host = hostname()
  const report = (): void => {
    const fields: Record<string, FieldValue> = {
      points_written: BigInt(writer.stats.written),
      write_retries: BigInt(writer.stats.retries),
      buffer_points: BigInt(writer.bufferedPoints)
    }
    for (const [source, n] of Object.entries(writer.stats.accepted)) fields[`points_accepted_${source}`] = BigInt(n)
    for (const [reason, n] of Object.entries(writer.stats.dropped)) fields[`points_dropped_${reason}`] = BigInt(n)
    for (const [name, s] of scheduler.stats) {
      fields[`poll_errors_${name}`] = BigInt(s.errors)
      if (s.lastDurationMs !== undefined) fields[`poll_duration_ms_${name}`] = s.lastDurationMs
    }
    const { body, count } = formatPoints([{ measurement: 'sidecar', tags: { host }, fields, timestamp: stampNs() }])
    writer.acceptOrDrop(body, count, 'self')
  }
  let timer: NodeJS.Timeout | undefined
  fastify.addHook('onReady', async () => { timer = setInterval(report, config.pollInterval).unref() })
  fastify.addHook('onClose', async () => clearInterval(timer))
}, { name: 'self-monitoring', dependencies: ['config', 'writer', 'scheduler', 'leader'] })
