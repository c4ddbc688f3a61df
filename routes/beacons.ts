import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { BeaconsBody, beaconsToLineProtocol } from '../src/beacon'
import { requireToken } from '../src/http/auth'
import { acknowledge, refuseWhenFull } from '../src/http/push'
import { ErrorBody } from '../src/http/errors'

/** POST /beacons: JSON metrics pushed by the app, one beacon or an array of them (SPEC §4). */
const beacons: FastifyPluginAsyncTypebox = async (fastify) => {
  // Without WRITE_TOKEN the hook would only cost time on every beacon.
  if (fastify.config.writeToken !== undefined) fastify.addHook('onRequest', requireToken(fastify.config.writeToken, 'WRITE_TOKEN'))
  fastify.addHook('onRequest', refuseWhenFull(fastify.writer))
  // Beacons are JSON only; any other type gets 415 rather than being read as something else.
  fastify.removeContentTypeParser('text/plain')

  fastify.post('/beacons', {
    schema: {
      body: BeaconsBody,
      response: { 204: Type.Null(), '4xx': ErrorBody }
    }
  }, (request, reply) => {
    // Not async: with room in a memory buffer, the beacon is held and answered without a promise.
    const { body, count } = beaconsToLineProtocol(request.body)
    return acknowledge(fastify.writer, reply, body, count, 'beacons')
  })
}

export default beacons
