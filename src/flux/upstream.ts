import http, { type IncomingMessage } from 'node:http'
import https from 'node:https'
import { pipeline, type Readable } from 'node:stream'
import { createGunzip } from 'node:zlib'
import { HttpError } from '../http/errors'
import { retryAfterMs } from '../http/retry-after'

export interface InfluxTarget { url: string, token?: string, org: string }

// Failures are HttpErrors: the app's error handler answers `{"code": "upstream error"|"unavailable"|"timeout", "message": …}` by status.

export const noInflux = (): HttpError => new HttpError(503, 'INFLUX_URL is not set: the sidecar has no InfluxDB to query')

export const timedOut = (ms: number): HttpError => new HttpError(504, `InfluxDB did not answer within ${ms} ms`)

export const unreachable = (err: unknown): HttpError =>
  new HttpError(503, `InfluxDB is unreachable: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)

/**
 * An InfluxDB non-2xx answer as the caller gets it: 503 (with InfluxDB's Retry-After, in seconds) when InfluxDB
 * is overloaded or unavailable (429, 503), 504 when its own gateway timed out, else 502. The
 * caller is never answered 401/403 for the server's token, nor 400 for a named query's Flux.
 */
export function upstreamError (status: number, message: string, retryAfter?: string | string[]): HttpError {
  const text = `InfluxDB answered ${status}: ${message}`
  if (status === 429 || status === 503) {
    const ms = retryAfterMs(retryAfter)
    return new HttpError(503, text, ms === undefined ? {} : { 'retry-after': String(Math.ceil(ms / 1000)) })
  }
  return new HttpError(status === 504 ? 504 : 502, text)
}

/** Defence in depth: an upstream message quoted to the caller never carries the server's token. */
export function redact (text: string, token: string | undefined): string {
  return token === undefined ? text : text.replaceAll(token, '[redacted]')
}

/** Whether an Accept-Encoding header allows gzip (`gzip` or `*`, with a non-zero q). */
export function acceptsGzip (header: string | undefined): boolean {
  return (header ?? '').split(',').some(part => {
    const [coding, ...params] = part.trim().toLowerCase().split(';')
    const q = params.map(p => /^\s*q=([\d.]+)\s*$/.exec(p)?.[1]).find(v => v !== undefined)
    return (coding === 'gzip' || coding === '*') && (q === undefined || Number(q) > 0)
  })
}

/** `<INFLUX_URL>/api/v2/query?org=<INFLUX_ORG>`, keeping any path prefix of INFLUX_URL. */
function queryUrl (influx: InfluxTarget): URL {
  const url = new URL(`${influx.url.replace(/\/+$/, '')}/api/v2/query`)
  url.searchParams.set('org', influx.org)
  return url
}

async function readMessage (response: IncomingMessage, token: string | undefined): Promise<string> {
  const body: Readable = response.headers['content-encoding'] === 'gzip' ? pipeline(response, createGunzip(), () => {}) : response
  body.setEncoding('utf8')
  let text = ''
  try {
    for await (const chunk of body) {
      text += chunk as string
      if (text.length > 64 * 1024) break // an error message, not a result: read no further
    }
  } catch {}
  let message = text.trim()
  try {
    const json = JSON.parse(message) as { message?: unknown }
    if (typeof json.message === 'string') message = json.message
  } catch {}
  // InfluxDB also names the error in a header, e.g. when a proxy in front of it dropped the body.
  const header = response.headers['x-influxdb-error']
  if (message === '' && typeof header === 'string') message = header
  return redact(message === '' ? response.statusMessage ?? '' : message, token)
}

export interface ProxiedQuery {
  body: string
  contentType: string
  accept?: string
  gzip: boolean
}

/**
 * Sends a query to InfluxDB with the server's token and org and resolves with its successful
 * response, unread, for the caller to stream. Non-2xx answers become {@link upstreamError}s,
 * network failures 503;
 * aborting `signal` destroys the upstream request, and the abort reason (e.g. the 504 of a
 * timeout) is what rejects.
 */
export async function openQuery (influx: InfluxTarget, query: ProxiedQuery, signal: AbortSignal): Promise<IncomingMessage> {
  const url = queryUrl(influx)
  const headers: http.OutgoingHttpHeaders = {
    'content-type': query.contentType,
    'content-length': Buffer.byteLength(query.body),
    accept: query.accept ?? 'application/csv',
    'accept-encoding': query.gzip ? 'gzip' : 'identity',
    'user-agent': 'metrics-sidecar'
  }
  if (influx.token !== undefined) headers.authorization = `Token ${influx.token}`
  let response: IncomingMessage
  try {
    response = await new Promise<IncomingMessage>((resolve, reject) => {
      const request = (url.protocol === 'https:' ? https : http).request(url, { method: 'POST', headers, signal }, res => {
        res.on('error', () => {}) // an aborted stream is reported to whoever reads it; never crash on it
        resolve(res)
      })
      request.once('error', reject)
      request.end(query.body)
    })
  } catch (err) {
    if (signal.aborted) throw signal.reason
    throw unreachable(err)
  }
  const status = response.statusCode ?? 502
  if (status >= 300) {
    const message = await readMessage(response, influx.token)
    if (signal.aborted) throw signal.reason
    throw upstreamError(status, message, response.headers['retry-after'])
  }
  return response
}
