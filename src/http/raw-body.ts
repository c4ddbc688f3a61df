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
  const source: Readable = encoding === 'gzip' ? payload.pipe(createGunzip()) : payload
  const chunks: Buffer[] = []
  let size = 0
  try {
    for await (const chunk of source) {
      size += (chunk as Buffer).length
      if (size > limit) throw new HttpError(413, `body is over the limit of ${limit} bytes${encoding === 'gzip' ? ' after decompression' : ''}`)
      chunks.push(chunk as Buffer)
    }
  } catch (err) {
    payload.destroy()
    if (err instanceof HttpError) throw err
    throw new HttpError(400, `unreadable ${encoding === 'gzip' ? 'gzip ' : ''}body: ${(err as Error).message}`)
  }
  return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size)
}
