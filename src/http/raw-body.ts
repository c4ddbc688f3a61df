import type { IncomingMessage } from 'node:http'
import type { Readable } from 'node:stream'
import { createGunzip } from 'node:zlib'
import { HttpError } from './errors'

/**
 * A request body as bytes, gunzipped when `Content-Encoding: gzip`. `limit` applies to the
 * decompressed size, so a small gzip bomb is refused with 413 long before it fills memory.
 */
export async function readRawBody (request: IncomingMessage, payload: Readable, limit: number): Promise<Buffer> {
  const encoding = (request.headers['content-encoding'] ?? 'identity').toLowerCase()
  if (encoding !== 'identity' && encoding !== 'gzip') {
    payload.resume()
    throw new HttpError(415, `Content-Encoding ${encoding} is not supported; use gzip or none`)
  }
  const declared = Number(request.headers['content-length'])
  if (encoding === 'identity' && declared > limit) {
    payload.resume()
    throw new HttpError(413, `body of ${declared} bytes is over the limit of ${limit}`)
  }
  const gunzip = encoding === 'gzip' ? createGunzip() : undefined
  const source: Readable = gunzip === undefined ? payload : payload.pipe(gunzip)
  // Read with events, as Fastify reads every other body; `for await` over the gunzip stream alone
  // never ended when the client went away mid-body (see onError below).
  return await new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    let settled = false
    const fail = (err: HttpError): void => {
      if (settled) return
      settled = true
      payload.destroy()
      source.destroy()
      reject(err)
    }
    /**
     * Over the limit: stop keeping the body, but read the rest of it off the connection and
     * discard it (as Node does for a body nobody read) so that the 413 reaches the client; a
     * destroyed socket would answer nothing, and the client would send the same body again.
     */
    const refuse = (err: HttpError): void => {
      settled = true
      chunks.length = 0
      if (gunzip !== undefined) {
        payload.unpipe(gunzip)
        gunzip.destroy()
      }
      payload.resume()
      reject(err)
    }
    source.on('data', (chunk: Buffer) => {
      if (settled) return
      size += chunk.length
      if (size <= limit) chunks.push(chunk)
      else refuse(new HttpError(413, `body is over the limit of ${limit} bytes${encoding === 'gzip' ? ' after decompression' : ''}`))
    })
    source.on('end', () => {
      if (settled) return
      settled = true
      resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size))
    })
    // pipe() does not pass the request's own errors (a client gone mid-body) on to the gunzip stream.
    const onError = (err: Error): void => fail(new HttpError(400, `unreadable ${encoding === 'gzip' ? 'gzip ' : ''}body: ${err.message}`))
    payload.on('error', onError)
    if (source !== payload) source.on('error', onError)
  })
}
