import { HttpError as InfluxHttpError, InfluxDB, RequestTimedOutError } from '@influxdata/influxdb-client'
import { HttpError } from '../http/errors'
import { redact, timedOut, unreachable, upstreamError, type InfluxTarget } from './upstream'

export type Row = Record<string, unknown>

export interface Entry<T> { value: T, /** ms epoch when loaded */ at: number, expires: number }

/**
 * A TTL cache that coalesces loads: while a key is loading, every caller awaits the same load,
 * so N concurrent misses cost one upstream query. Failed loads are not cached.
 */
export class CoalescingCache<T> {
  private readonly fresh = new Map<string, Entry<T>>()
  private readonly loading = new Map<string, Promise<Entry<T>>>()

  constructor (private readonly now: () => number = Date.now) {}

  async get (key: string, ttl: number, load: () => Promise<T>): Promise<Entry<T>> {
    const hit = this.fresh.get(key)
    if (hit !== undefined && hit.expires > this.now()) return hit
    let flight = this.loading.get(key)
    if (flight === undefined) {
      flight = load().then(value => {
        const at = this.now()
        const entry = { value, at, expires: at + ttl }
        this.fresh.set(key, entry)
        return entry
      }).finally(() => this.loading.delete(key))
      this.loading.set(key, flight)
    }
    return await flight
  }
}

/**
 * Runs a Flux script with the official client and returns its rows as objects typed by the
 * client's serializers (long/unsignedLong/double → number, boolean → boolean, dateTime → RFC 3339
 * string, empty → null). InfluxDB reports a failure after it started answering as an in-band
 * `error,reference` table with status 200, which the client returns as an ordinary row: that
 * becomes a 502 here. Aborting `signal` rejects with its reason.
 */
export async function runFlux (influx: InfluxTarget, flux: string, timeout: number, signal: AbortSignal): Promise<Row[]> {
  // QueryApi takes no AbortSignal, but transportOptions reach http.request, which honours `signal`.
  const client = new InfluxDB({ url: influx.url, token: influx.token, timeout, transportOptions: { signal } })
  let inBandError: string | undefined
  try {
    const rows = await client.getQueryApi(influx.org).collectRows<Row>(flux, (values, meta) => {
      if (meta.columns.map(c => c.label).join() === 'error,reference') {
        inBandError ??= String(meta.get(values, 'error'))
        return undefined
      }
      return meta.toObject(values)
    })
    if (inBandError !== undefined) throw new HttpError(502, `InfluxDB query failed: ${redact(inBandError, influx.token)}`)
    return rows
  } catch (err) {
    if (err instanceof HttpError) throw err
    if (signal.aborted) throw signal.reason
    if (err instanceof InfluxHttpError) {
      const detail = (err.json as { message?: string } | undefined)?.message ?? err.body ?? err.statusMessage
      throw upstreamError(err.statusCode, redact(String(detail), influx.token), err.headers?.['retry-after'])
    }
    if (err instanceof RequestTimedOutError) throw timedOut(timeout)
    throw unreachable(err)
  }
}
