import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'

/** GET /metrics: the sidecar's own metrics in Prometheus text format (plugins/self-monitoring.ts). */
const metrics: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/metrics', { schema: { response: { 200: Type.String() } } }, async (_request, reply) => {
    return await reply.type(fastify.metrics.contentType).send(await fastify.metrics.metrics())
  })
}

export default metrics
