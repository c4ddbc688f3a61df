import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyRequest } from 'fastify'
import { HttpError } from './errors'

const digest = (text: string): Buffer => createHash('sha256').update(text).digest()

/** Compares in constant time (digests have one length whatever the input). */
export const sameToken = (presented: string, expected: string): boolean => timingSafeEqual(digest(presented), digest(expected))

/** The token of `Authorization: Token <t>` or `Bearer <t>`. */
export function headerToken (request: FastifyRequest): string | undefined {
  return /^(?:Token|Bearer)\s+(\S+)\s*$/i.exec(request.headers.authorization ?? '')?.[1]
}

/** InfluxDB 1.x clients send the token as password: `p` in the query string or Basic auth. */
export function v1Token (request: FastifyRequest): string | undefined {
  const query = request.query as { p?: string }
  if (typeof query.p === 'string' && query.p !== '') return query.p
  const basic = /^Basic\s+(\S+)\s*$/i.exec(request.headers.authorization ?? '')?.[1]
  if (basic === undefined) return headerToken(request)
  const decoded = Buffer.from(basic, 'base64').toString('utf8')
  return decoded.slice(decoded.indexOf(':') + 1)
}

/**
 * An onRequest hook: when `token` is set, the request must present it (`extract` finds it),
 * else 401. `name` is the variable that holds it, for the message.
 */
export function requireToken (token: string | undefined, name: string, extract: (request: FastifyRequest) => string | undefined = headerToken) {
  return async (request: FastifyRequest): Promise<void> => {
    if (token === undefined) return
    const presented = extract(request)
    if (presented === undefined || !sameToken(presented, token)) {
      throw new HttpError(401, `a valid token is required (Authorization: Token <${name}>)`)
    }
  }
}
