import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyRequest } from 'fastify'

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
