import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'
import { promisify } from 'node:util'
import { gzip } from 'node:zlib'
import { retryAfterMs } from '../http/retry-after'
import { SinkError, type Encoded, type FailureKind, type Sink } from './sink'

export interface InfluxOptions { url: string, token?: string, org: string, bucket: string }

/** Bodies above this size are gzipped on the way to InfluxDB. */
const GZIP_THRESHOLD = 1024
/**
 * zlib's fastest level: line protocol still shrinks about 6×, at a third of the CPU of the default
 * level 6 — and on one core, CPU spent compressing is taken from ingest.
 */
const GZIP_LEVEL = 1
const REQUEST_TIMEOUT_MS = 30_000
/** Enough of an error answer for its message; the rest is not read into memory. */
const MAX_ERROR_BODY = 64 * 1024

const gzipAsync = promisify(gzip)

function failureKind (status: number): FailureKind {
  if (status === 401 || status === 403 || status === 404) return 'misconfigured'
  if (status === 413) return 'too-large'
  if (status === 400 || status === 422) return 'reject'
  // 429, 5xx, and what InfluxDB's write API does not answer (e.g. 408 from a proxy): try again.
  return 'retry'
}

/** InfluxDB's `{"code","message"}` error body, or the text as it came. */
function errorDetail (text: string, response: IncomingMessage): string {
  try {
    const message = (JSON.parse(text) as { message?: unknown }).message
    if (typeof message === 'string') return message
  } catch {}
  return text.trim() !== '' ? text.trim() : response.statusMessage ?? ''
}

/**
 * Writes to InfluxDB v2's `/api/v2/write` with precision=ns, over pooled keep-alive connections.
 * Plain node:http rather than the official client's transport, which takes text only (every
 * batch would be decoded from bytes and encoded back) and gzips at the default level.
 */
export class InfluxSink implements Sink {
  readonly description: string
  private readonly writeUrl: URL
  private readonly pingUrl: URL
  private readonly agent: HttpAgent
  private readonly request: typeof httpRequest
  private readonly authorization?: string

  constructor (options: InfluxOptions) {
    const base = new URL(options.url.endsWith('/') ? options.url : `${options.url}/`)
    this.writeUrl = new URL('api/v2/write', base)
    this.writeUrl.search = new URLSearchParams({ org: options.org, bucket: options.bucket, precision: 'ns' }).toString()
    this.pingUrl = new URL('ping', base)
    const https = base.protocol === 'https:'
    this.agent = https ? new HttpsAgent({ keepAlive: true }) : new HttpAgent({ keepAlive: true })
    this.request = https ? httpsRequest : httpRequest
    if (options.token !== undefined) this.authorization = `Token ${options.token}`
    this.description = `InfluxDB ${options.url} org=${options.org} bucket=${options.bucket}`
  }

  async encode (body: Buffer): Promise<Encoded> {
    if (body.length <= GZIP_THRESHOLD) return { bytes: body, gzipped: false }
    return { bytes: await gzipAsync(body, { level: GZIP_LEVEL }), gzipped: true }
  }

  async send (batch: Encoded, signal?: AbortSignal): Promise<void> {
    const headers: Record<string, string | number> = { 'content-type': 'text/plain; charset=utf-8', 'content-length': batch.bytes.length }
    if (batch.gzipped) headers['content-encoding'] = 'gzip'
    await this.exchange(this.writeUrl, 'POST', headers, batch.bytes, signal)
  }

  async check (timeoutMs: number): Promise<void> {
    await this.exchange(this.pingUrl, 'GET', {}, undefined, AbortSignal.timeout(timeoutMs))
  }

  async close (): Promise<void> {
    this.agent.destroy()
  }

  /** Resolves on 2xx; otherwise rejects with a SinkError saying what InfluxDB answered, or why it could not be reached. */
  private async exchange (url: URL, method: string, headers: Record<string, string | number>, payload?: Buffer, signal?: AbortSignal): Promise<void> {
    if (this.authorization !== undefined) headers = { ...headers, authorization: this.authorization }
    await new Promise<void>((resolve, reject) => {
      const req = this.request(url, { method, headers, agent: this.agent, timeout: REQUEST_TIMEOUT_MS, signal }, response => {
        const status = response.statusCode ?? 0
        if (status >= 200 && status < 300) {
          response.resume().on('end', resolve).on('error', reject)
          return
        }
        let text = ''
        response.setEncoding('utf8')
        response.on('data', (part: string) => { if (text.length < MAX_ERROR_BODY) text += part })
        response.on('error', reject)
        response.on('end', () => {
          reject(new SinkError(`InfluxDB answered ${status}: ${errorDetail(text, response)}`, failureKind(status), retryAfterMs(response.headers['retry-after'])))
        })
      })
      req.on('timeout', () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS / 1000} s`)))
      req.on('error', err => {
        const why = signal?.aborted === true && signal.reason instanceof Error && signal.reason.name === 'TimeoutError' ? 'no answer in time' : err.message
        reject(new SinkError(`InfluxDB unreachable: ${why}`, 'retry'))
      })
      req.end(payload)
    })
  }
}
