import { pipeline, type Readable } from 'node:stream'
import { createGzip } from 'node:zlib'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import { Type } from '@sinclair/typebox'
import { CoalescingCache, runFlux, type Row } from '../src/flux/named'
import { acceptsGzip, noInflux, openQuery, timedOut } from '../src/flux/upstream'
import { requireToken } from '../src/http/auth'
import { ErrorBody, HttpError } from '../src/http/errors'

/** InfluxDB's query request (`/api/v2/query`); InfluxDB itself validates the rest. */
const QueryRequest = Type.Object({
  query: Type.String({ minLength: 1 }),
  type: Type.Optional(Type.String()),
  dialect: Type.Optional(Type.Object({}, { additionalProperties: true })),
  now: Type.Optional(Type.String()),
  params: Type.Optional(Type.Object({}, { additionalProperties: true }))
}, { additionalProperties: true })

/**
 * GET /queries/:name answers
 * `{"name": "derps-total", "rows": [{"result": "_result", "table": 0, "_time": "2024-05-01T12:00:00Z", "_value": 12}], "cachedAt": "<RFC 3339>"}`:
 * one object per row of every table, typed as the official client types them, and when InfluxDB
 * answered (Cache-Control max-age says for how much longer it is served from the cache).
 */
const NamedResult = Type.Object({
  name: Type.String(),
  rows: Type.Array(Type.Object({}, { additionalProperties: true })),
  cachedAt: Type.String({ format: 'date-time' })
})

const FLUX_TYPE = /^\s*application\/vnd\.flux\s*(;|$)/i

/** As InfluxDB does: a body that is not application/vnd.flux is JSON, whatever its Content-Type. */
function readAsJsonUnlessFlux (request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction): void {
  if (!FLUX_TYPE.test(request.headers['content-type'] ?? '')) request.headers['content-type'] = 'application/json'
  done()
}

/**
 * The Flux proxy (POST /api/v2/query) and named queries (GET /queries/:name), SPEC §6. Not
 * wrapped in fastify-plugin: its content-type parsers stay inside this scope. Failures are
 * HttpErrors, answered `{code, message}` by the app's error handler (plugins/errors.ts).
 */
const query: FastifyPluginAsyncTypebox = async (fastify) => {
  const { influx, queryToken, queryTimeout, namedQueries } = fastify.config
  const inFlight = new Set<AbortController>()
  const cache = new CoalescingCache<Row[]>()

  /** Aborts with a 504 after QUERY_TIMEOUT; the returned function stops the clock. */
  function track (controller: AbortController): () => void {
    inFlight.add(controller)
    const timer = setTimeout(() => controller.abort(timedOut(queryTimeout)), queryTimeout)
    return () => {
      clearTimeout(timer)
      inFlight.delete(controller)
    }
  }

  fastify.addHook('preClose', async () => {
    for (const controller of inFlight) controller.abort(new HttpError(503, 'the sidecar is shutting down'))
  })

  // InfluxDB reads a body as raw Flux when it is application/vnd.flux and as JSON otherwise (any
  // other type, or none), so clients that send JSON without the header work here too.
  fastify.addContentTypeParser('application/vnd.flux', { parseAs: 'string' }, (_request, body, done) => done(null, body))

  fastify.post('/api/v2/query', {
    onRequest: [requireToken(queryToken, 'QUERY_TOKEN'), readAsJsonUnlessFlux],
    schema: {
      body: {
        content: {
          'application/json': { schema: QueryRequest },
          'application/vnd.flux': { schema: Type.String({ minLength: 1 }) }
        }
      },
      // 200 is InfluxDB's annotated CSV, streamed through unchanged (a stream is never serialised).
      response: { 200: Type.Any(), '4xx': ErrorBody, '5xx': ErrorBody }
    }
  }, async (request, reply) => {
    if (influx === undefined) throw noInflux()
    const controller = new AbortController()
    const done = track(controller)
    // Covers the client leaving early, and the end of a streamed response (stops the clock).
    reply.raw.once('close', () => {
      done()
      if (!reply.raw.writableFinished) controller.abort(new HttpError(499, 'the client closed the request'))
    })
    const gzip = acceptsGzip(request.headers['accept-encoding'])
    const raw = typeof request.body === 'string'
    const upstream = await openQuery(influx, {
      body: raw ? request.body as string : JSON.stringify(request.body),
      contentType: raw ? 'application/vnd.flux' : 'application/json; charset=utf-8',
      accept: request.headers.accept,
      gzip
    }, controller.signal)

    let body: Readable = upstream
    const encoding = upstream.headers['content-encoding']
    if (encoding !== undefined) {
      reply.header('content-encoding', encoding)
    } else if (gzip) {
      body = pipeline(upstream, createGzip(), () => {})
      reply.header('content-encoding', 'gzip')
    }
    return await reply
      .code(upstream.statusCode ?? 200)
      .header('content-type', upstream.headers['content-type'] ?? 'text/csv; charset=utf-8')
      .header('vary', 'Accept-Encoding')
      .send(body)
  })

  fastify.get('/queries/:name', {
    schema: {
      params: Type.Object({ name: Type.String() }),
      response: { 200: NamedResult, '4xx': ErrorBody, '5xx': ErrorBody }
    }
  }, async (request, reply) => {
    const { name } = request.params
    if (!Object.hasOwn(namedQueries, name)) throw new HttpError(404, `no named query "${name}"`)
    if (influx === undefined) throw noInflux()
    const { flux, ttl } = namedQueries[name]
    // Not tied to this request: the load is shared with every caller waiting for it.
    const entry = await cache.get(name, ttl, async () => {
      const controller = new AbortController()
      const done = track(controller)
      try {
        return await runFlux(influx, flux, queryTimeout, controller.signal)
      } finally {
        done()
      }
    })
    reply.header('cache-control', `max-age=${Math.max(0, Math.floor((entry.expires - Date.now()) / 1000))}`)
    return { name, rows: entry.value, cachedAt: new Date(entry.at).toISOString() }
  })
}

export default query
