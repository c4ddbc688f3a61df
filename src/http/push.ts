import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
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
export async function acknowledge (writer: Writer, reply: FastifyReply, body: string, count: number, source: string): Promise<FastifyReply> {
  if (!await writer.accept(body, count, source)) return await tooManyPoints(reply, count)
  // Without a payload, send() skips the serializer: a 204 has no body anyway.
  return reply.code(204).send()
}

/**
 * An onRequest hook: while the buffer is full, answer 429 before reading the body, so a client
 * pushing faster than InfluxDB takes points costs no parsing and no memory.
 */
export function refuseWhenFull (writer: Writer) {
  // Callback style: it runs for every push, and an async hook costs a promise and a microtask.
  return (_request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void => {
    if (writer.full) void tooManyPoints(reply) // answered: done() is not called
    else done()
  }
}
