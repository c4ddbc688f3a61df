import fp from 'fastify-plugin'
import { INFLUX_CODES } from '../src/http/errors'

type RouteError = Error & { statusCode?: number, headers?: Record<string, string> }

/**
 * Every error answers in InfluxDB's shape, `{"code":"invalid","message":"…"}`, so Influx clients
 * show it. 4xx messages say what was wrong with the request; a 5xx never leaks internals.
 */
export default fp(async (fastify) => {
  fastify.setErrorHandler((err: RouteError, request, reply) => {
    const status = err.statusCode !== undefined && err.statusCode >= 400 ? err.statusCode : 500
    // 502-504 are an upstream's trouble (InfluxDB), reported to the caller; 500 is ours.
    if (status === 500) request.log.error({ err, method: request.method, url: request.url }, 'request failed')
    else if (status >= 500) request.log.warn({ method: request.method, url: request.url }, err.message)
    if (err.headers !== undefined) void reply.headers(err.headers)
    return reply.code(status).send({
      code: INFLUX_CODES[status] ?? (status < 500 ? 'invalid' : 'internal error'),
      message: status === 500 ? 'internal error' : err.message
    })
  })
  fastify.setNotFoundHandler((request, reply) => {
    return reply.code(404).send({ code: 'not found', message: `no route ${request.method} ${request.url.split('?')[0]}` })
  })
}, { name: 'errors' })
