import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import { HoldError, type Writer } from '../writer'
import { HttpError } from './errors'

/** Seconds a client is asked to wait when the buffer is full. */
const RETRY_AFTER_S = 1
/**
 * Longest a push waits for room in a full buffer before it is refused with 429. Short of client
 * timeouts (InfluxDB clients default to 10 s or more), long enough for the sink to take a batch.
 */
const ROOM_WAIT_MS = 1000

/** 429 with Retry-After: the buffer is full, the client keeps its points and tries again. */
async function tooManyPoints (reply: FastifyReply, count?: number): Promise<FastifyReply> {
  const refused = count === undefined ? '' : ` ${count} points not accepted,`
  return await reply.code(429).header('retry-after', String(RETRY_AFTER_S)).send({
    code: 'too many requests',
    message: `the sidecar's buffer is full;${refused} retry after ${RETRY_AFTER_S} s`
  })
}

/**
 * Hands a push's points to the writer and answers: 204 once they are held, 429 when they do not fit
 * in time. Answers before returning when the writer holds them at once, else returns a promise
 * (settled once answered) for the route to return.
 */
export function acknowledge (writer: Writer, reply: FastifyReply, body: Buffer, count: number, source: string): Promise<void> | undefined {
  if (!writer.holdNow(body, count, source)) return acknowledgeWhenHeld(writer, reply, body, count, source)
  // Without a payload, send() skips the serializer: a 204 has no body anyway.
  void reply.code(204).send()
  return undefined
}

async function acknowledgeWhenHeld (writer: Writer, reply: FastifyReply, body: Buffer, count: number, source: string): Promise<void> {
  let held: boolean
  try {
    held = await writer.accept(body, count, source, ROOM_WAIT_MS)
  } catch (err) {
    if (!(err instanceof HoldError)) throw err
    // Not the client's fault and not for good (a full disk): unavailable, try again later.
    throw new HttpError(503, `${err.message}; retry after ${RETRY_AFTER_S} s`, { 'retry-after': String(RETRY_AFTER_S) })
  }
  if (held) await reply.code(204).send()
  else await tooManyPoints(reply, count)
}

/**
 * An onRequest hook: while the buffer is full, wait for room before reading the body, and answer
 * 429 if none comes — a client pushing faster than InfluxDB takes points is slowed down, and costs
 * no parsing and no memory meanwhile. Callback style: it runs for every push, and an async hook
 * costs a promise and a microtask even when there is room.
 */
export function refuseWhenFull (writer: Writer) {
  return (_request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void => {
    if (!writer.full) return done()
    writer.waitForRoom(ROOM_WAIT_MS).then(room => {
      if (room) done()
      else void tooManyPoints(reply) // answered: done() is not called
    }, done)
  }
}
