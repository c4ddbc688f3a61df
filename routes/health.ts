import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { version } from '../package.json'
import type { QueryConfig } from 'pg'

const Check = Type.Object({
  name: Type.String(),
  status: Type.Union([Type.Literal('pass'), Type.Literal('fail')]),
  message: Type.Optional(Type.String())
})
type Check = typeof Check.static

const Health = Type.Object({
  name: Type.String(),
  message: Type.String(),
  status: Type.Literal('pass'),
  checks: Type.Array(Check),
  version: Type.String()
})

const Readiness = Type.Object({
  status: Type.Union([Type.Literal('ready'), Type.Literal('not ready')]),
  checks: Type.Array(Check)
})

/** Longest a readiness check waits: a database or InfluxDB that hangs is not ready, and the probe answers. */
const CHECK_TIMEOUT_MS = 2000

async function check (name: string, probe: () => Promise<unknown>): Promise<Check> {
  let timer: NodeJS.Timeout | undefined
  // Also bounds what the probe cannot time itself, e.g. the wait for a free database connection.
  const late = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`no answer within ${CHECK_TIMEOUT_MS} ms`)), CHECK_TIMEOUT_MS) })
  try {
    await Promise.race([probe(), late])
    return { name, status: 'pass' }
  } catch (err) {
    return { name, status: 'fail', message: (err as Error).message }
  } finally {
    clearTimeout(timer)
  }
}

/** Probes for Kubernetes: liveness (/health, InfluxDB's shape), readiness (/ready) and /ping for Influx clients. */
const health: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/health', { schema: { response: { 200: Health } } }, async () => ({
    name: 'metrics-sidecar', message: 'ready for queries and writes', status: 'pass' as const, checks: [], version
  }))

  fastify.get('/ready', { schema: { response: { 200: Readiness, 503: Readiness } } }, async (_request, reply) => {
    const checks = await Promise.all([
      // pg honours query_timeout per query (its types do not list it): a hung connection is dropped.
      check('postgres', async () => await fastify.pg.query({ text: 'SELECT 1', query_timeout: CHECK_TIMEOUT_MS } as QueryConfig)),
      check('buffer', async () => {
        const failure = fastify.writer.bufferFailure
        if (failure !== undefined) throw new Error(failure)
      }),
      check('sink', async () => {
        const failure = fastify.writer.failure
        if (failure !== undefined) throw new Error(failure)
        await fastify.sink.check(CHECK_TIMEOUT_MS)
      })
    ])
    const ready = checks.every(c => c.status === 'pass')
    // Informational: only one replica per database runs the pollers; both are ready.
    checks.push({
      name: 'leader',
      status: 'pass',
      message: fastify.leader.leading ? 'leader: this replica runs the database pollers' : 'follower: another replica runs the database pollers'
    })
    return await reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready', checks })
  })

  fastify.get('/ping', { schema: { response: { 204: Type.Null() } } }, async (_request, reply) => await reply.code(204).send(null))
}

export default health
