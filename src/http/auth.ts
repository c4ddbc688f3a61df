import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import { HttpError } from './errors'

const digest = (text: string): Buffer => createHash('sha256').update(text).digest()

/** The token of `Authorization: Token <t>` or `Bearer <t>`. */
function headerToken (request: FastifyRequest): string | undefined {
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
  // Digests are compared in constant time (they have one length whatever the input); the
  // expected one is made once, and the hook is callback style: it runs for every push.
  const expected = token === undefined ? undefined : digest(token)
  return (request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction): void => {
    if (expected === undefined) return done()
    const presented = extract(request)
    if (presented === undefined || !timingSafeEqual(digest(presented), expected)) {
      return done(new HttpError(401, `a valid token is required (Authorization: Token <${name}>)`))
    }
    done()
  }
}
