import type { FastifyReply } from 'fastify'

/** Seconds a client is asked to wait when the buffer is full. */
const RETRY_AFTER_S = 1

/** 429 with Retry-After: the buffer is full, the client keeps its points and tries again. */
export async function tooManyPoints (reply: FastifyReply, count: number): Promise<FastifyReply> {
  return await reply.code(429).header('retry-after', String(RETRY_AFTER_S)).send({
    code: 'too many requests',
    message: `the sidecar's buffer is full; ${count} points not accepted, retry after ${RETRY_AFTER_S} s`
  })
}
