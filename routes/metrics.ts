import type { FastifyPluginAsync } from 'fastify'

/** GET /metrics: the sidecar's own metrics in Prometheus text format (plugins/self-monitoring.ts). */
const metrics: FastifyPluginAsync = async (fastify) => {
  fastify.get('/metrics', async (_request, reply) => {
    return await reply.type(fastify.metrics.contentType).send(await fastify.metrics.metrics())
  })
}

export default metrics
