import type { Readable } from 'node:stream'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { writeStampNs } from '../src/clock'
import { normalize, type Precision } from '../src/line-protocol/parse'
import { ErrorBody, HttpError } from '../src/http/errors'
import { acknowledge, refuseWhenFull } from '../src/http/push'
import { readRawBody } from '../src/http/raw-body'
import { requireToken, v1Token } from '../src/http/auth'

const Precisions = ['ns', 'us', 'ms', 's'] as const

const V2Query = Type.Object({
  org: Type.Optional(Type.String()),
  orgID: Type.Optional(Type.String()),
  bucket: Type.String({ minLength: 1 }),
  precision: Type.Unsafe<Precision>({ type: 'string', enum: Precisions, default: 'ns' })
})

/** InfluxDB 1.x names: n and u as well as ns and us. Minutes and hours are not accepted (see README). */
const V1_PRECISIONS: Record<string, Precision> = { n: 'ns', ns: 'ns', u: 'us', us: 'us', µ: 'us', ms: 'ms', s: 's' }
const V1Query = Type.Object({
  db: Type.String({ minLength: 1 }),
  rp: Type.Optional(Type.String()),
  precision: Type.Optional(Type.String()),
  u: Type.Optional(Type.String()),
  p: Type.Optional(Type.String()),
  consistency: Type.Optional(Type.String())
})

/**
 * The InfluxDB-compatible write endpoints, so an app's existing Influx client can point at the
 * sidecar: POST /api/v2/write (v2) and POST /write (v1). Not wrapped in fastify-plugin: the
 * raw-body parser below applies to these routes only.
 */
const write: FastifyPluginAsyncTypebox = async (fastify) => {
  const { writeToken, bodyLimit, influx } = fastify.config

  // Line protocol arrives as text/plain, octet-stream or with no type at all: take any, as bytes.
  fastify.removeAllContentTypeParsers()
  fastify.addContentTypeParser('*', async (request: FastifyRequest, payload: Readable) => await readRawBody(request.raw, payload, bodyLimit))

  /** Lines are validated as a whole: one bad line refuses the request and nothing of it is written. */
  function ingest (body: unknown, precision: Precision, source: string, reply: FastifyReply): ReturnType<typeof acknowledge> {
    const result = normalize(Buffer.isBuffer(body) ? body : Buffer.alloc(0), precision, writeStampNs)
    if (!result.ok) throw new HttpError(400, result.message)
    return acknowledge(fastify.writer, reply, result.body, result.count, source)
  }

  /** One of `names` must be the bucket this sidecar writes to (v1 clients may name it `db/rp`). */
  const checkBucket = (...names: string[]): void => {
    if (influx !== undefined && !names.includes(influx.bucket)) {
      throw new HttpError(400, `bucket "${names[0]}" is not the one this sidecar writes to ("${influx.bucket}")`)
    }
  }

  fastify.post('/api/v2/write', {
    onRequest: [requireToken(writeToken, 'WRITE_TOKEN'), refuseWhenFull(fastify.writer)],
    schema: { querystring: V2Query, response: { 204: Type.Null(), '4xx': ErrorBody } }
  }, (request, reply) => {
    checkBucket(request.query.bucket)
    return ingest(request.body, request.query.precision as Precision, 'api_v2_write', reply)
  })

  fastify.post('/write', {
    onRequest: [requireToken(writeToken, 'WRITE_TOKEN', v1Token), refuseWhenFull(fastify.writer)],
    schema: { querystring: V1Query, response: { 204: Type.Null(), '4xx': ErrorBody } }
  }, (request, reply) => {
    const { db, rp, precision = 'ns' } = request.query
    const mapped = V1_PRECISIONS[precision]
    if (mapped === undefined) throw new HttpError(400, `precision "${precision}" is not supported; use n, u, ms or s`)
    checkBucket(db, `${db}/${rp ?? 'autogen'}`)
    return ingest(request.body, mapped, 'write', reply)
  })
}

export default write
