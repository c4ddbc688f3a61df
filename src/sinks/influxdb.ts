import { HttpError, InfluxDB } from '@influxdata/influxdb-client'
import { SinkError, type FailureKind, type Sink } from './sink'

export interface InfluxOptions { url: string, token?: string, org: string, bucket: string }

/** Bodies above this size are gzipped on the way to InfluxDB. */
const GZIP_THRESHOLD = 1024
const REQUEST_TIMEOUT_MS = 30_000

/**
 * `Retry-After` is in seconds (or an HTTP date). The official client reads the number as
 * milliseconds, so the header is parsed here instead of using `HttpError.retryAfter()`.
 */
export function retryAfterMs (header: string | string[] | undefined, now = Date.now()): number | undefined {
  const value = Array.isArray(header) ? header[0] : header
  if (value === undefined || value.trim() === '') return undefined
  if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000
  const date = Date.parse(value)
  return Number.isNaN(date) ? undefined : Math.max(0, date - now)
}

function failureKind (status: number): FailureKind {
  if (status === 401 || status === 403) return 'auth'
  if (status === 413) return 'too-large'
  if (status === 429 || status >= 500) return 'retry'
  return 'reject'
}

/** Writes to InfluxDB v2's `/api/v2/write` through the official client's transport, always with precision=ns. */
export class InfluxSink implements Sink {
  readonly description: string
  private readonly client: InfluxDB
  private readonly writePath: string

  constructor (options: InfluxOptions) {
    this.client = new InfluxDB({ url: options.url, token: options.token, timeout: REQUEST_TIMEOUT_MS })
    const query = new URLSearchParams({ org: options.org, bucket: options.bucket, precision: 'ns' })
    this.writePath = `/api/v2/write?${query.toString()}`
    this.description = `InfluxDB ${options.url} org=${options.org} bucket=${options.bucket}`
  }

  async send (body: string): Promise<void> {
    try {
      await this.client.transport.request(this.writePath, body, {
        method: 'POST',
        headers: { 'content-type': 'text/plain; charset=utf-8' },
        gzipThreshold: GZIP_THRESHOLD
      })
    } catch (err) {
      if (err instanceof HttpError) {
        const detail = (err.json as { message?: string } | undefined)?.message ?? err.body ?? err.statusMessage
        throw new SinkError(`InfluxDB answered ${err.statusCode}: ${detail}`, failureKind(err.statusCode), retryAfterMs(err.headers?.['retry-after']))
      }
      throw new SinkError(`InfluxDB unreachable: ${(err as Error).message}`, 'retry')
    }
  }

  async check (): Promise<void> {
    await this.client.transport.request('/ping', '', { method: 'GET' })
  }

  async close (): Promise<void> {}
}
