import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Writer } from '../writer'

/** Seconds a client is asked to wait when the buffer is full. */
const RETRY_AFTER_S = 1

/** 429 with Retry-After: the buffer is full, the client keeps its points and tries again. */
export async function tooManyPoints (reply: FastifyReply, count?: number): Promise<FastifyReply> {
  const refused = count === undefined ? '' : ` ${count} points not accepted,`
  return await reply.code(429).header('retry-after', String(RETRY_AFTER_S)).send({
    code: 'too many requests',
    message: `the sidecar's buffer is full;${refused} retry after ${RETRY_AFTER_S} s`
  })
}

/** Hands a push's points to the writer and answers: 204 once they are held, 429 when they do not fit. */
export async function acknowledge (writer: Writer, reply: FastifyReply, body: Buffer, count: number, source: string): Promise<FastifyReply> {
  if (!await writer.accept(body, count, source)) return await tooManyPoints(reply, count)
  return await reply.code(204).send(null)
}

/**
 * An onRequest hook: while the buffer is full, answer 429 before reading the body, so a client
 * pushing faster than InfluxDB takes points costs no parsing and no memory.
 */
export function refuseWhenFull (writer: Writer) {
  return async (_request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (writer.full) await tooManyPoints(reply)
  }
}
