import type { FastifyReply, FastifyRequest } from 'fastify'
import { headerToken, sameToken } from './auth'
import { HttpError } from './errors'

/** Seconds a client is asked to wait when the buffer is full. */
const RETRY_AFTER_S = 1

/** An onRequest hook: with WRITE_TOKEN set, a push must present it (`extract` finds it in the request). */
export function requireWriteToken (token: string | undefined, extract: (request: FastifyRequest) => string | undefined = headerToken) {
  return async (request: FastifyRequest): Promise<void> => {
    if (token === undefined) return
    const presented = extract(request)
    if (presented === undefined || !sameToken(presented, token)) {
      throw new HttpError(401, 'a valid write token is required (Authorization: Token <WRITE_TOKEN>)')
    }
  }
}

/** 429 with Retry-After: the buffer is full, the client keeps its points and tries again. */
export async function tooManyPoints (reply: FastifyReply, count: number): Promise<FastifyReply> {
  return await reply.code(429).header('retry-after', String(RETRY_AFTER_S)).send({
    code: 'too many requests',
    message: `the sidecar's buffer is full; ${count} points not accepted, retry after ${RETRY_AFTER_S} s`
  })
}
