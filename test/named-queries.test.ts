import t from 'tap'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { buildTestApp, refusedPort } from './helper'
import { answer, fixture, startFakeInflux, type FakeInflux } from './fixtures/flux/fake-influxdb'

const SERVER_TOKEN = 'server-token-for-named-queries'
const DATABASE_URL = 'postgresql://postgres@127.0.0.1:5432/test'
type Test = { teardown: (fn: () => unknown) => void }

async function start (t: Test, env: Record<string, string> = {}): Promise<{ app: FastifyInstance, fake: FakeInflux }> {
  const fake = await startFakeInflux(t)
  fake.handler = answer(fixture('derps-total.csv'))
  const app = await buildTestApp(t, {
    DATABASE_URL, INFLUX_URL: fake.url, INFLUX_TOKEN: SERVER_TOKEN, INFLUX_ORG: 'sidecar-org', INFLUX_BUCKET: 'metrics', ...env
  }, { poll: false })
  return { app, fake }
}

async function configFile (t: Test, content: unknown): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'named-queries-'))
  t.teardown(async () => await rm(dir, { recursive: true, force: true }))
  const path = join(dir, 'sidecar.json')
  await writeFile(path, JSON.stringify(content))
  return path
}

const DERPS_ROWS = [
  { result: '_result', table: 0, _time: '2024-05-01T12:00:00Z', _value: 12 },
  { result: '_result', table: 1, _time: '2024-05-01T12:00:10Z', _value: 15 }
]

t.test('50 concurrent requests cost InfluxDB one query, and the answer is served from the cache', async t => {
  const { app, fake } = await start(t)
  fake.handler = answer(fixture('derps-total.csv'), { delay: 100 })
  const responses = await Promise.all(Array.from({ length: 50 }, async () => await app.inject('/queries/derps-total')))
  t.equal(fake.queries.length, 1, 'one upstream request')
  t.ok(responses.every(r => r.statusCode === 200))
  const body = responses[0].json()
  t.same(body.rows, DERPS_ROWS, 'typed rows: numbers and RFC 3339 times')
  t.equal(body.name, 'derps-total')
  t.equal(new Date(body.cachedAt).toISOString(), body.cachedAt)
  t.ok(responses.every(r => r.body === responses[0].body), 'everyone got the same answer')

  const seen = fake.queries[0]
  t.equal(seen.org, 'sidecar-org')
  t.equal(seen.headers.authorization, `Token ${SERVER_TOKEN}`)
  t.match(JSON.parse(seen.body).query, /from\(bucket: "metrics"\)[\s\S]*r._measurement == "derps" and r._field == "count"[\s\S]*sum\(\)/)

  const again = await app.inject('/queries/derps-total')
  t.equal(again.statusCode, 200)
  t.equal(again.body, responses[0].body)
  t.match(again.headers['cache-control'], /^max-age=\d+$/)
  t.equal(fake.queries.length, 1, 'still one upstream request within the TTL')
  t.notMatch(again.body, SERVER_TOKEN)
})

t.test('a result expires after its TTL', async t => {
  const SIDECAR_CONFIG = await configFile(t, {
    queries: { x: { flux: 'from(bucket: "{{bucket}}") |> range(start: -1m) |> last()', ttl: '200ms' } }
  })
  const { app, fake } = await start(t, { SIDECAR_CONFIG })
  const first = (await app.inject('/queries/x')).json()
  t.equal((await app.inject('/queries/x')).json().cachedAt, first.cachedAt)
  t.equal(fake.queries.length, 1)
  t.equal(JSON.parse(fake.queries[0].body).query, 'from(bucket: "metrics") |> range(start: -1m) |> last()')

  await new Promise(resolve => setTimeout(resolve, 250))
  const later = (await app.inject('/queries/x')).json()
  t.equal(fake.queries.length, 2, 'a new upstream request once the TTL passed')
  t.ok(later.cachedAt > first.cachedAt)
  t.same(later.rows, DERPS_ROWS)
  t.equal((await app.inject('/queries/derps-total')).statusCode, 200, 'the built-in query is still there')
})

t.test('an unknown name is a 404', async t => {
  const { app, fake } = await start(t)
  for (const name of ['nope', '__proto__', 'constructor']) {
    const response = await app.inject(`/queries/${name}`)
    t.equal(response.statusCode, 404)
    t.same(response.json(), { code: 'not found', message: `no named query "${name}"` })
  }
  t.equal(fake.queries.length, 0)
})

t.test('failures are not cached', async t => {
  const { app, fake } = await start(t)

  fake.handler = answer(JSON.stringify({ code: 'internal error', message: 'engine exploded' }), { status: 500, delay: 50 })
  const failed = await Promise.all(Array.from({ length: 10 }, async () => await app.inject('/queries/derps-total')))
  t.equal(fake.queries.length, 1, 'a failing query is coalesced too')
  t.ok(failed.every(r => r.statusCode === 502))
  t.same(failed[0].json(), { code: 'upstream error', message: 'InfluxDB answered 500: engine exploded' })

  fake.handler = (_req, res) => { res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '4' }).end('{"code":"unavailable","message":"starting up"}') }
  const busy = await app.inject('/queries/derps-total')
  t.equal(busy.statusCode, 503)
  t.equal(busy.headers['retry-after'], '4')
  t.same(busy.json(), { code: 'unavailable', message: 'InfluxDB answered 503: starting up' })

  fake.handler = answer(fixture('error.csv'))
  const inBand = await app.inject('/queries/derps-total')
  t.equal(inBand.statusCode, 502, 'the in-band error table InfluxDB sends with status 200 is a failure')
  t.same(inBand.json(), { code: 'upstream error', message: 'InfluxDB query failed: failed to execute query: runtime error @3:6-3:55: filter: type conflict: int != string' })
  t.equal(fake.queries.length, 3)

  fake.handler = answer(fixture('derps-total.csv'))
  const ok = await app.inject('/queries/derps-total')
  t.equal(ok.statusCode, 200)
  t.same(ok.json().rows, DERPS_ROWS)
  t.equal(fake.queries.length, 4)
})

t.test('QUERY_TIMEOUT: 504 and the upstream request is aborted', async t => {
  const { app, fake } = await start(t, { QUERY_TIMEOUT: '300ms' })
  fake.handler = () => {}
  const started = Date.now()
  const response = await app.inject('/queries/derps-total')
  t.equal(response.statusCode, 504)
  t.same(response.json(), { code: 'timeout', message: 'InfluxDB did not answer within 300 ms' })
  t.ok(Date.now() - started < 1500)
  await Promise.race([fake.queries[0].aborted, new Promise((_resolve, reject) => setTimeout(() => reject(new Error('upstream not aborted')), 1000))])
  t.ok(fake.queries[0].wasAborted)
})

t.test('an unreachable InfluxDB is a 503', async t => {
  const { app } = await start(t, { INFLUX_URL: `http://127.0.0.1:${await refusedPort()}` })
  const response = await app.inject('/queries/derps-total')
  t.equal(response.statusCode, 503)
  t.match(response.json(), { code: 'unavailable', message: /InfluxDB is unreachable: ECONNREFUSED/ })
})

t.test('no INFLUX_URL is a 503 saying so', async t => {
  const app = await buildTestApp(t, { DATABASE_URL }, { poll: false })
  const response = await app.inject('/queries/derps-total')
  t.equal(response.statusCode, 503)
  t.same(response.json(), { code: 'unavailable', message: 'INFLUX_URL is not set: the sidecar has no InfluxDB to query' })
})

t.test('named queries are open when QUERY_TOKEN guards the proxy', async t => {
  const { app } = await start(t, { QUERY_TOKEN: 'dashboard-token' })
  t.equal((await app.inject('/queries/derps-total')).statusCode, 200)
  t.equal((await app.inject({ method: 'POST', url: '/api/v2/query', payload: { query: 'x' } })).statusCode, 401)
})
