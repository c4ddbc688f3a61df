import t from 'tap'
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http'
import { Writable } from 'node:stream'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { gunzipSync, gzipSync } from 'node:zlib'
import { HttpError, InfluxDB } from '@influxdata/influxdb-client'
import type { FastifyInstance } from 'fastify'
import { buildTestApp, refusedPort, waitFor } from './helper'
import { answer, fixture, startFakeInflux, type FakeInflux } from './fixtures/flux/fake-influxdb'

const SERVER_TOKEN = 'server-token-5f0c2b9e-never-shown'
const DATABASE_URL = 'postgresql://postgres@127.0.0.1:5432/test'
const FLUX = 'from(bucket: "metrics") |> range(start: -1m)'

/** Every log line of every app in this file, checked for the server token at the end. */
const logLines: string[] = []

interface Sidecar { app: FastifyInstance, url: string, fake: FakeInflux }

async function start (t: { teardown: (fn: () => unknown) => void }, env: Record<string, string> = {}): Promise<Sidecar> {
  const fake = await startFakeInflux(t)
  const stream = new Writable({
    write (chunk: Buffer, _encoding, callback) {
      logLines.push(...chunk.toString().split('\n').filter(line => line !== ''))
      callback()
    }
  })
  const app = await buildTestApp(t, {
    DATABASE_URL,
    INFLUX_URL: fake.url,
    INFLUX_TOKEN: SERVER_TOKEN,
    INFLUX_ORG: 'sidecar-org',
    INFLUX_BUCKET: 'metrics',
    ...env
  }, { poll: false, logger: { level: 'trace', stream } })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, url: `http://127.0.0.1:${(app.server.address() as { port: number }).port}`, fake }
}

interface Raw { status: number, headers: IncomingHttpHeaders, body: Buffer }

/** A plain HTTP request (no automatic decompression, unlike fetch). */
async function post (url: string, body: string, headers: Record<string, string> = {}): Promise<Raw> {
  return await new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers } }, res => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

const queryBody = (query = FLUX): string => JSON.stringify({ query, type: 'flux', dialect: { annotations: ['datatype', 'group', 'default'] } })
const json = (raw: Raw): unknown => JSON.parse(raw.body.toString())

async function within<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms) })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

const MULTI_TABLE_ROWS = [
  { result: '_result', table: 0, _start: '2024-05-01T12:00:00Z', _stop: '2024-05-01T12:01:00Z', _time: '2024-05-01T12:00:10Z', _value: 1.5, _field: 'usage_user', _measurement: 'cpu', host: 'web-1' },
  { result: '_result', table: 0, _start: '2024-05-01T12:00:00Z', _stop: '2024-05-01T12:01:00Z', _time: '2024-05-01T12:00:20Z', _value: 2.25, _field: 'usage_user', _measurement: 'cpu', host: 'web-1' },
  { result: '_result', table: 1, _start: '2024-05-01T12:00:00Z', _stop: '2024-05-01T12:01:00Z', _time: '2024-05-01T12:00:10Z', _value: 3, _field: 'usage_user', _measurement: 'cpu', host: 'web-2' },
  { result: '_result', table: 2, _start: '2024-05-01T12:00:00Z', _stop: '2024-05-01T12:01:00Z', _time: '2024-05-01T12:00:10Z', _value: 7, _field: 'count', _measurement: 'derps', species: 'corgi' },
  { result: '_result', table: 3, _start: '2024-05-01T12:00:00Z', _stop: '2024-05-01T12:01:00Z', _time: '2024-05-01T12:00:10Z', _value: 5, _field: 'count', _measurement: 'derps', species: 'pug, black' },
  { result: '_result', table: 4, _start: '2024-05-01T12:00:00Z', _stop: '2024-05-01T12:01:00Z', _time: '2024-05-01T12:00:10Z', _value: true, _field: 'up', _measurement: 'service' }
]

t.test('the official client reads typed rows of a multi-table answer through the proxy', async t => {
  const { url, fake } = await start(t)
  const rows = await new InfluxDB({ url, token: 'caller-token' }).getQueryApi('someOtherOrg').collectRows(FLUX)
  t.same(rows, MULTI_TABLE_ROWS)

  t.equal(fake.queries.length, 1)
  const seen = fake.queries[0]
  t.equal(seen.method, 'POST')
  t.equal(seen.search, '?org=sidecar-org', 'the configured org replaces the caller\'s')
  t.equal(seen.headers.authorization, `Token ${SERVER_TOKEN}`, 'the server token replaces the caller\'s')
  t.notMatch(JSON.stringify(seen.headers) + seen.body, /caller-token|someOtherOrg/)
  t.match(JSON.parse(seen.body), { query: FLUX, type: 'flux', dialect: { annotations: ['datatype', 'group', 'default'] } })
})

t.test('the annotated CSV comes back byte for byte, whatever org or orgID the caller names', async t => {
  const { url, fake } = await start(t)
  const raw = await post(`${url}/api/v2/query?orgID=0123456789abcdef&org=evil`, queryBody(), { accept: 'application/csv' })
  t.equal(raw.status, 200)
  t.match(raw.headers['content-type'], /^text\/csv/)
  t.equal(raw.headers['content-encoding'], undefined)
  t.equal(raw.body.toString(), fixture('multi-table.csv'), 'CRLF, annotations, blank lines between tables and all')
  t.equal(fake.queries[0].search, '?org=sidecar-org')
})

t.test('a raw application/vnd.flux body is forwarded as such', async t => {
  const { url, fake } = await start(t)
  const raw = await post(`${url}/api/v2/query?org=someOtherOrg`, FLUX, { 'content-type': 'application/vnd.flux' })
  t.equal(raw.status, 200)
  t.equal(raw.body.toString(), fixture('multi-table.csv'))
  t.equal(fake.queries[0].headers['content-type'], 'application/vnd.flux')
  t.equal(fake.queries[0].body, FLUX)
  t.equal(fake.queries[0].headers.authorization, `Token ${SERVER_TOKEN}`)

  const withCharset = await post(`${url}/api/v2/query`, FLUX, { 'content-type': 'application/vnd.flux; charset=utf-8' })
  t.equal(withCharset.status, 200)
  t.equal(fake.queries[1].body, FLUX)
  const empty = await post(`${url}/api/v2/query`, '', { 'content-type': 'application/vnd.flux' })
  t.equal(empty.status, 400)
  t.match(json(empty), { code: 'invalid' })
  t.equal(fake.queries.length, 2)
})

t.test('the in-band error table InfluxDB sends with status 200 reaches the caller', async t => {
  const { url, fake } = await start(t)
  fake.handler = answer(fixture('error.csv'))
  const raw = await post(`${url}/api/v2/query`, queryBody())
  t.equal(raw.status, 200)
  t.equal(raw.body.toString(), fixture('error.csv'))
  // @influxdata/influxdb-client 1.35 does not throw for it: it returns the error table as a row.
  const rows = await new InfluxDB({ url, token: 'x' }).getQueryApi('o').collectRows(FLUX)
  t.same(rows, [{ error: 'failed to execute query: runtime error @3:6-3:55: filter: type conflict: int != string', reference: '897' }])
})

t.test('Accept-Encoding: gzip is honoured', async t => {
  const { url, fake } = await start(t)
  const csv = fixture('multi-table.csv')

  t.test('upstream gzip passes through', async t => {
    fake.handler = (req, res) => {
      const gzip = /gzip/.test(req.headers['accept-encoding'] ?? '')
      res.writeHead(200, { 'content-type': 'text/csv; charset=utf-8', ...(gzip ? { 'content-encoding': 'gzip' } : {}) })
      res.end(gzip ? gzipSync(csv) : csv)
    }
    const raw = await post(`${url}/api/v2/query`, queryBody(), { 'accept-encoding': 'gzip' })
    t.equal(raw.headers['content-encoding'], 'gzip')
    t.equal(gunzipSync(raw.body).toString(), csv)
    t.equal(fake.queries.at(-1)?.headers['accept-encoding'], 'gzip')

    const rows = await new InfluxDB({ url, token: 'x' }).getQueryApi({ org: 'o', gzip: true }).collectRows(FLUX)
    t.same(rows, MULTI_TABLE_ROWS)
    t.equal(fake.queries.at(-1)?.headers['accept-encoding'], 'gzip')
  })

  t.test('the sidecar compresses when upstream does not', async t => {
    fake.handler = answer(csv)
    const raw = await post(`${url}/api/v2/query`, queryBody(), { 'accept-encoding': 'br;q=1, gzip;q=0.5' })
    t.equal(raw.headers['content-encoding'], 'gzip')
    t.equal(gunzipSync(raw.body).toString(), csv)
  })

  t.test('no gzip when the caller refuses it', async t => {
    fake.handler = answer(csv)
    const raw = await post(`${url}/api/v2/query`, queryBody(), { 'accept-encoding': 'gzip;q=0' })
    t.equal(raw.headers['content-encoding'], undefined)
    t.equal(raw.body.toString(), csv)
    t.equal(fake.queries.at(-1)?.headers['accept-encoding'], 'identity')
  })
})

t.test('QUERY_TOKEN guards the proxy', async t => {
  const { url, fake } = await start(t, { QUERY_TOKEN: 'dashboard-token' })
  for (const authorization of [undefined, 'Token wrong', 'Bearer wrong', 'dashboard-token', `Token ${SERVER_TOKEN}`]) {
    const raw = await post(`${url}/api/v2/query`, queryBody(), authorization === undefined ? {} : { authorization })
    t.equal(raw.status, 401, `${authorization ?? 'no header'} → 401`)
    t.match(json(raw), { code: 'unauthorized', message: /token/ })
  }
  t.equal(fake.queries.length, 0, 'nothing reached InfluxDB')

  t.equal((await post(`${url}/api/v2/query`, queryBody(), { authorization: 'Token dashboard-token' })).status, 200)
  t.equal((await post(`${url}/api/v2/query`, queryBody(), { authorization: 'Bearer dashboard-token' })).status, 200)
  t.same(await new InfluxDB({ url, token: 'dashboard-token' }).getQueryApi('o').collectRows(FLUX), MULTI_TABLE_ROWS)
  const rejected = await new InfluxDB({ url, token: 'nope' }).getQueryApi('o').collectRows(FLUX).catch((err: unknown) => err)
  t.equal((rejected as HttpError).statusCode, 401)
  t.equal(fake.queries.length, 3)
  t.ok(fake.queries.every(q => q.headers.authorization === `Token ${SERVER_TOKEN}`))
})

t.test('bad requests get InfluxDB-shaped 4xx answers', async t => {
  const { url, fake } = await start(t)
  const missing = await post(`${url}/api/v2/query`, JSON.stringify({ type: 'flux' }))
  t.equal(missing.status, 400)
  t.match(json(missing), { code: 'invalid', message: /query/ })
  // As InfluxDB: what is not application/vnd.flux is read as JSON, so raw Flux under another type is not JSON.
  const notJson = await post(`${url}/api/v2/query`, FLUX, { 'content-type': 'text/plain' })
  t.equal(notJson.status, 400)
  t.match(json(notJson), { code: 'invalid', message: /JSON/ })
  t.equal(fake.queries.length, 0)
})

t.test('a JSON body without Content-Type, or under another type, is a query, as InfluxDB reads it', async t => {
  const { url, fake } = await start(t)
  fake.handler = answer(fixture('multi-table.csv'))
  for (const type of [undefined, 'text/plain', 'application/x-www-form-urlencoded']) {
    const raw = await new Promise<Raw>((resolve, reject) => {
      // node:http sends no Content-Type unless told to.
      const req = httpRequest(`${url}/api/v2/query`, { method: 'POST', headers: type === undefined ? {} : { 'content-type': type } }, res => {
        const chunks: Buffer[] = []
        res.on('data', (chunk: Buffer) => chunks.push(chunk)).on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      })
      req.on('error', reject).end(queryBody())
    })
    t.equal(raw.status, 200, type ?? 'no Content-Type')
    t.equal(raw.body.toString(), fixture('multi-table.csv').toString())
  }
  t.equal(fake.queries.length, 3)
  t.ok(fake.queries.every(q => q.headers['content-type'] === 'application/json; charset=utf-8' && JSON.parse(q.body).query === FLUX), 'forwarded as JSON')
})

t.test('an upstream HTTP error is a 502 carrying its message; InfluxDB busy is a 503 with its Retry-After, its timeout a 504', async t => {
  const { url, fake } = await start(t)
  fake.handler = answer(JSON.stringify({ code: 'invalid', message: 'compilation failed: error at @1:1-1:4: undefined identifier bad' }), { status: 400 })
  const err = await new InfluxDB({ url, token: 'x' }).getQueryApi('o').collectRows('bad').catch((err: unknown) => err)
  t.type(err, HttpError)
  t.equal((err as HttpError).statusCode, 502)
  t.same((err as HttpError).json, { code: 'upstream error', message: 'InfluxDB answered 400: compilation failed: error at @1:1-1:4: undefined identifier bad' })

  fake.handler = (_req, res) => { res.writeHead(401, { 'content-type': 'application/json' }).end(`{"code":"unauthorized","message":"bad token ${SERVER_TOKEN}"}`) }
  const raw = await post(`${url}/api/v2/query`, queryBody())
  t.equal(raw.status, 502)
  t.same(json(raw), { code: 'upstream error', message: 'InfluxDB answered 401: bad token [redacted]' })

  for (const status of [429, 503]) {
    fake.handler = (_req, res) => { res.writeHead(status, { 'content-type': 'application/json', 'retry-after': '7' }).end('{"code":"unavailable","message":"too busy"}') }
    const busy = await post(`${url}/api/v2/query`, queryBody())
    t.equal(busy.status, 503, `${status} → 503`)
    t.equal(busy.headers['retry-after'], '7')
    t.same(json(busy), { code: 'unavailable', message: `InfluxDB answered ${status}: too busy` })
  }
  fake.handler = (_req, res) => { res.writeHead(504, { 'x-influxdb-error': 'gateway timed out' }).end() }
  const slow = await post(`${url}/api/v2/query`, queryBody())
  t.equal(slow.status, 504)
  t.same(json(slow), { code: 'timeout', message: 'InfluxDB answered 504: gateway timed out' })
})

t.test('an unreachable InfluxDB is a 503', async t => {
  const { url } = await start(t, { INFLUX_URL: `http://127.0.0.1:${await refusedPort()}` })
  const raw = await post(`${url}/api/v2/query`, queryBody())
  t.equal(raw.status, 503)
  t.match(json(raw), { code: 'unavailable', message: /InfluxDB is unreachable: ECONNREFUSED/ })
})

t.test('no INFLUX_URL is a 503 saying so', async t => {
  const app = await buildTestApp(t, { DATABASE_URL }, { poll: false })
  const response = await app.inject({ method: 'POST', url: '/api/v2/query', payload: { query: FLUX } })
  t.equal(response.statusCode, 503)
  t.same(response.json(), { code: 'unavailable', message: 'INFLUX_URL is not set: the sidecar has no InfluxDB to query' })
})

t.test('QUERY_TIMEOUT: 504 and the upstream request is aborted', async t => {
  const { url, fake } = await start(t, { QUERY_TIMEOUT: '300ms' })
  fake.handler = () => {} // never answers
  const started = Date.now()
  const raw = await post(`${url}/api/v2/query`, queryBody())
  const elapsed = Date.now() - started
  t.equal(raw.status, 504)
  t.same(json(raw), { code: 'timeout', message: 'InfluxDB did not answer within 300 ms' })
  t.ok(elapsed >= 290 && elapsed < 1500, `answered after ${elapsed} ms`)
  await within(fake.queries[0].aborted, 1000, 'upstream seeing the socket close')
})

t.test('QUERY_TIMEOUT cuts a response that is already streaming', async t => {
  const { url, fake } = await start(t, { QUERY_TIMEOUT: '300ms' })
  const csv = fixture('multi-table.csv')
  fake.handler = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/csv; charset=utf-8' })
    res.write(csv.slice(0, 300)) // ... and stalls
  }
  const started = Date.now()
  const outcome = await new Promise<{ status: number, received: string, error?: Error }>(resolve => {
    httpRequest(`${url}/api/v2/query`, { method: 'POST', headers: { 'content-type': 'application/json' } }, res => {
      let received = ''
      res.setEncoding('utf8').on('data', (chunk: string) => { received += chunk })
      res.on('error', error => resolve({ status: res.statusCode ?? 0, received, error }))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, received }))
    }).end(queryBody())
  })
  t.equal(outcome.status, 200)
  t.equal(outcome.received, csv.slice(0, 300))
  t.ok(outcome.error, 'the caller sees the response break off, not a clean end')
  t.ok(Date.now() - started < 1500)
  await within(fake.queries[0].aborted, 1000, 'upstream seeing the socket close')
})

t.test('a client that disconnects aborts the upstream request', async t => {
  const { url, fake } = await start(t)
  fake.handler = () => {}
  const req = httpRequest(`${url}/api/v2/query`, { method: 'POST', headers: { 'content-type': 'application/json' } })
  req.on('error', () => {})
  req.end(queryBody())
  await waitFor(() => fake.queries.length === 1, 'the query to reach upstream', 2000)
  t.notOk(fake.queries[0].wasAborted)
  req.destroy()
  await within(fake.queries[0].aborted, 1000, 'upstream seeing the socket close')
  t.ok(fake.queries[0].wasAborted)
})

t.test('a 200 MB answer streams through with bounded memory and backpressure', async t => {
  const { url, fake } = await start(t)
  const header = fixture('derps-total.csv').split('\r\n').slice(0, 4).join('\r\n') + '\r\n'
  const block = Buffer.from(Array.from({ length: 20_000 }, (_, i) => `,,0,2024-05-01T12:00:00.${String(i).padStart(9, '0')}Z,${i}\r\n`).join(''))
  const total = 200 * 1024 * 1024
  let sent = 0
  fake.handler = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/csv; charset=utf-8' })
    res.write(header)
    const pump = (): void => {
      while (sent < total) {
        sent += block.length
        if (!res.write(block)) {
          res.once('drain', pump)
          return
        }
      }
      res.end()
    }
    pump()
  }
  // Sampled after a forced collection, so chunks already passed on and waiting for the GC don't count.
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const usage = (): NodeJS.MemoryUsage => {
    gc()
    return process.memoryUsage()
  }
  const before = usage()
  const peak = { heap: 0, rss: 0 }
  const measure = (): void => {
    const now = usage()
    peak.heap = Math.max(peak.heap, now.heapUsed - before.heapUsed)
    peak.rss = Math.max(peak.rss, now.rss - before.rss)
  }

  const res = await new Promise<IncomingMessage>(resolve => {
    httpRequest(`${url}/api/v2/query`, { method: 'POST', headers: { 'content-type': 'application/json' } }, resolve).end(queryBody())
  })
  t.equal(res.statusCode, 200)
  // The caller reads nothing for a while: upstream must be held back, not drained into memory.
  await new Promise(resolve => setTimeout(resolve, 300))
  const sentWhilePaused = sent
  t.ok(sentWhilePaused < 40 * 1024 * 1024, `upstream sent only ${(sentWhilePaused / 1048576).toFixed(1)} MB while the caller was not reading`)
  measure()

  let received = 0
  let nextSample = 0
  for await (const chunk of res) {
    received += (chunk as Buffer).length
    if (received >= nextSample) {
      measure()
      nextSample += 16 * 1024 * 1024
    }
  }
  measure()
  t.equal(received, header.length + sent)
  t.ok(sent >= total)
  const MB = 1024 * 1024
  t.ok(peak.rss < 50 * MB, `RSS grew at most ${(peak.rss / MB).toFixed(1)} MB for a ${(received / MB).toFixed(0)} MB answer`)
  t.ok(peak.heap < 50 * MB, `heap grew at most ${(peak.heap / MB).toFixed(1)} MB`)
})

t.test('the server token never appears in a log line', async t => {
  t.ok(logLines.length > 10, `${logLines.length} log lines were written`)
  t.notOk(logLines.some(line => line.includes(SERVER_TOKEN)))
  t.ok(logLines.some(line => line.includes('InfluxDB answered 401: bad token [redacted]')), 'upstream failures are logged (redacted)')
  const failure = logLines.find(line => line.includes('InfluxDB answered 401'))
  t.match(JSON.parse(failure ?? '{}'), { method: 'POST', url: /^\/api\/v2\/query/ }, 'the line names the request that failed')
})
