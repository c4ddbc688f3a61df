import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { gzipSync } from 'node:zlib'
import { InfluxDB, Point } from '@influxdata/influxdb-client'
import type { FastifyInstance } from 'fastify'
import { buildTestApp, CORPUS_PATH, latestBy, startVictoriaMetrics, waitFor, type Series, type VictoriaMetrics } from './helper'

const TOKEN = 'write-secret'


/** A sidecar on a real port, forwarding to `vm`, with fast batches. */
async function sidecar (t: Test, vm: VictoriaMetrics, env: Record<string, string> = {}): Promise<{ app: FastifyInstance, url: string }> {
  const app = await buildTestApp(t, {
    DATABASE_URL: 'postgresql://postgres@127.0.0.1:5432/test', INFLUX_URL: vm.url, INFLUX_ORG: 'org', INFLUX_BUCKET: 'app', WRITE_TOKEN: TOKEN, ...env
  }, { poll: false })
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  return { app, url }
}

const delivered = async (app: FastifyInstance, accepted: number): Promise<void> => {
  await waitFor(() => app.writer.stats.written >= accepted && app.writer.bufferedPoints === 0, `${accepted} points delivered`)
}

const count = (series: Series[]): number => series.reduce((n, s) => n + s.values.length, 0)

t.test('the official JS client (WriteApi) writes through the sidecar; every point lands', async t => {
  const vm = await startVictoriaMetrics(t)
  const { app, url } = await sidecar(t, vm)
  const writeApi = new InfluxDB({ url, token: TOKEN }).getWriteApi('org', 'app', 'ms', { batchSize: 1000, gzipThreshold: 1000, maxRetries: 0 })
  const now = Date.now()
  for (let i = 0; i < 3000; i++) {
    writeApi.writePoint(new Point('js_client').tag('worker', `w${i % 3}`).intField('seq', i).floatField('load', i / 10).timestamp(new Date(now - 3000 + i)))
  }
  for (let i = 0; i < 10; i++) writeApi.writePoint(new Point('js_client_untimed').tag('kind', 'same-series').floatField('v', i))
  await writeApi.close()
  await delivered(app, 3010)
  t.equal(count(await vm.export('{__name__="js_client_seq"}')), 3000)
  t.same(Object.keys(latestBy(await vm.export('{__name__="js_client_seq"}'), 'worker')).sort(), ['w0', 'w1', 'w2'])
  t.equal(count(await vm.export('{__name__="js_client_untimed_v"}')), 10)
})

t.test('points without a timestamp are stamped on receipt, in ns, never twice the same', async t => {
  const sinkFile = join(await mkdtemp(join(tmpdir(), 'sink-')), 'metrics.lp')
  const app = await buildTestApp(t, { DATABASE_URL: 'postgresql://postgres@127.0.0.1:5432/test', SINK_FILE: sinkFile }, { poll: false })
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  const before = BigInt(Date.now()) * 1_000_000n
  const lines = Array.from({ length: 500 }, (_, i) => `untimed,kind=same-series v=${i}`).join('\n')
  t.equal((await fetch(`${url}/api/v2/write?bucket=app`, { method: 'POST', body: lines })).status, 204)
  const response = await app.inject({ method: 'POST', url: '/beacons', payload: Array.from({ length: 500 }, (_, i) => ({ measurement: 'untimed', tags: { kind: 'same-series' }, fields: { v: 500 + i } })) })
  t.equal(response.statusCode, 204)
  await app.writer.close(Date.now() + 5000)
  const after = BigInt(Date.now()) * 1_000_000n
  const stamps = [...readFileSync(sinkFile, 'utf8').matchAll(/^untimed,kind=same-series v=(\d+) (\d+)$/gm)].map(m => ({ v: Number(m[1]), ts: BigInt(m[2]) }))
  t.equal(stamps.length, 1000)
  t.ok(stamps.every((s, i) => s.v === i && (i === 0 || s.ts > stamps[i - 1].ts)), 'strictly increasing, in the order accepted')
  t.ok(stamps[0].ts >= before && stamps[999].ts <= after, 'taken on receipt')
})

t.test("Debian's python3-influxdb (the v1 client) writes through /write; every point lands", async t => {
  const vm = await startVictoriaMetrics(t)
  const { app, url } = await sidecar(t, vm)
  const { port } = new URL(url)
  const script = `
import sys, time
from influxdb import InfluxDBClient
client = InfluxDBClient(host='127.0.0.1', port=${port}, username='django', password='${TOKEN}', database='app')
now = int(time.time() * 1000)
points = [{'measurement': 'py_client', 'tags': {'view': 'derp-detail', 'n': str(i % 7)}, 'fields': {'duration_ms': i * 0.5, 'status': 200}, 'time': now - 5000 + i} for i in range(2000)]
assert client.write_points(points, time_precision='ms', batch_size=500)
`
  await promisify(execFile)('/usr/bin/python3', ['-c', script])
  await delivered(app, 2000)
  t.equal(count(await vm.export('{__name__="py_client_duration_ms"}')), 2000)
  t.equal(app.writer.stats.accepted.write, 2000)
})

t.test('corpus cases sent straight to a store and through the sidecar leave both stores identical', async t => {
  const direct = await startVictoriaMetrics(t)
  const forwarded = await startVictoriaMetrics(t)
  const { app, url } = await sidecar(t, forwarded)
  const corpus = JSON.parse(readFileSync(CORPUS_PATH, 'utf8')) as { decode: Record<string, { input: { text: string | { binary: string }, precision: string }, output: { result?: unknown[] } }> }
  const apiPrecision: Record<string, string> = { '1ns': 'ns', '1µs': 'us', '1ms': 'ms', '1s': 's' }
  const bodies = new Map<string, Buffer[]>()
  for (const { input, output } of Object.values(corpus.decode)) {
    if (output.result === undefined || output.result.length === 0) continue
    const text = typeof input.text === 'string' ? Buffer.from(input.text) : Buffer.from(input.text.binary, 'base64')
    // VictoriaMetrics misreads lines whose parts are separated by several spaces or that end in
    // spaces (it loses the timestamp); the sidecar forwards them with one space, as InfluxDB reads
    // them. It also reads a field key `"` differently once a timestamp follows. Those cases are
    // checked against the corpus itself (line-protocol-corpus.test.ts).
    if (/[^ \\] {2,}[^ ]|[^\\ ] +(\r?\n|$)| "=/.test(text.toString('latin1'))) continue
    const list = bodies.get(input.precision) ?? []
    list.push(text, Buffer.from('\n'))
    bodies.set(input.precision, list)
  }
  let lines = 0
  for (const [precision, parts] of bodies) {
    const body = Buffer.concat(parts)
    const query = `bucket=app&precision=${apiPrecision[precision]}`
    t.equal((await fetch(`${direct.url}/api/v2/write?${query}`, { method: 'POST', body })).status, 204)
    const response = await fetch(`${url}/api/v2/write?${query}`, { method: 'POST', body, headers: { authorization: `Token ${TOKEN}` } })
    t.equal(response.status, 204, `${precision}: accepted by the sidecar`)
    lines += parts.length / 2
  }
  await delivered(app, 1)
  // Receipt times differ between the two stores, and VictoriaMetrics (millisecond resolution) does
  // not keep the values of many samples of one series within one millisecond reliably: for
  // points stamped on receipt only their number is compared.
  const samples = (s: Series): string[] => s.values.map((v, i) => Math.abs(s.timestamps[i] - Date.now()) < 120_000 ? 'now' : `${s.timestamps[i]}=${v}`).sort()
  const normalise = (series: Series[]): string[] => series.map(s => `${JSON.stringify(s.metric)} ${samples(s).join(' ')}`).sort()
  const a = normalise(await direct.export('{__name__!=""}'))
  const b = normalise(await forwarded.export('{__name__!=""}'))
  t.ok(a.length > 100, `${a.length} series from ${lines} corpus cases`)
  t.same(b, a, 'same series, values and timestamps (receipt times aside)')
})

t.test('invalid corpus cases are refused whole with an InfluxDB-shaped error', async t => {
  const vm = await startVictoriaMetrics(t)
  const { app } = await sidecar(t, vm)
  const corpus = JSON.parse(readFileSync(CORPUS_PATH, 'utf8')) as { decode: Record<string, { input: { text: string | { binary: string } }, output: { error?: string } }> }
  let refused = 0
  let cases = 0
  for (const { input, output } of Object.values(corpus.decode)) {
    if (output.error === undefined) continue
    cases++
    const text = typeof input.text === 'string' ? Buffer.from(input.text) : Buffer.from(input.text.binary, 'base64')
    const response = await app.inject({ method: 'POST', url: '/api/v2/write?bucket=app', payload: Buffer.concat([Buffer.from('good v=1\n'), text]), headers: { authorization: `Token ${TOKEN}` } })
    const body = response.json() as { code: string, message: string }
    if (response.statusCode === 400 && body.code === 'invalid' && /^line \d+/.test(body.message)) refused++
  }
  t.equal(refused, cases, `${refused}/${cases} invalid cases answered 400 {code: invalid, message: line …}`)
  t.same(app.writer.stats.accepted, {}, 'not even the good line before the bad one was accepted')
})

t.test('JSON beacons, one or an array, land in the store with their types', async t => {
  const vm = await startVictoriaMetrics(t)
  const { app } = await sidecar(t, vm)
  const headers = { authorization: `Bearer ${TOKEN}` }
  let response = await app.inject({ method: 'POST', url: '/beacons', headers, payload: { measurement: 'django_requests', tags: { view: 'derp-list', method: 'GET', status: '200' }, fields: { duration_ms: 12.5 } } })
  t.equal(response.statusCode, 204)
  t.equal(response.body, '')
  response = await app.inject({
    method: 'POST',
    url: '/beacons',
    headers,
    payload: [
      { measurement: 'signups', fields: { count: { int: 3 }, ok: true, plan: 'free' }, timestamp: '2024-05-01T12:00:00.5Z' },
      { measurement: 'signups', fields: { count: { int: '9007199254740993' } }, timestamp: 1714564801000 }
    ]
  })
  t.equal(response.statusCode, 204)
  await delivered(app, 3)
  t.same(latestBy(await vm.export('{__name__="django_requests_duration_ms"}'), 'view'), { 'derp-list': 12.5 })
  const signups = (await vm.export('{__name__="signups_count"}'))[0]
  t.same(signups.timestamps, [Date.parse('2024-05-01T12:00:00.5Z'), 1714564801000])
  t.same(signups.values, [3, 9007199254740992], 'integers (VictoriaMetrics stores float64)')
  t.equal((await vm.export('{__name__="signups_ok"}'))[0].values[0], 1)
})

t.test('bad beacons get 400 naming the fault, and nothing of the request is written', async t => {
  const vm = await startVictoriaMetrics(t)
  const { app } = await sidecar(t, vm)
  const post = async (payload: unknown, contentType = 'application/json'): Promise<{ status: number, message: string }> => {
    const response = await app.inject({ method: 'POST', url: '/beacons', headers: { authorization: `Token ${TOKEN}`, 'content-type': contentType }, payload: typeof payload === 'string' ? payload : JSON.stringify(payload) })
    return { status: response.statusCode, message: (response.json() as { message: string }).message }
  }
  const good = { measurement: 'm', fields: { v: 1 } }
  t.match(await post([good, { measurement: 'm', fields: { v: [1] } }]), { status: 400, message: /^body\/1\/fields\/v / })
  t.match(await post([good, { measurement: 'm', fields: {} }]), { status: 400, message: 'body/1/fields must NOT have fewer than 1 properties' })
  t.match(await post({ fields: { v: 1 } }), { status: 400, message: /measurement/ })
  t.match(await post({ measurement: 'm', fields: { v: '1' }, tags: { t: 5 } }), { status: 400, message: /^body\/tags\/t must be string/ })
  // Keys holding a newline are validated like any other (TypeBox's default key pattern skips them).
  t.match(await post({ measurement: 'm', fields: { v: 1 }, tags: { 'a\nb': 5 } }), { status: 400, message: /must be string/ })
  t.match(await post({ measurement: 'm', fields: { 'v\n': [1] } }), { status: 400, message: /^body\/fields\/v\n / })
  t.match(await post('{"measurement":"m","fields":{"v":1e400}}'), { status: 400, message: /^body\/fields\/v / })
  t.match(await post({ ...good, timestamp: 'yesterday' }), { status: 400, message: /timestamp/ })
  t.match(await post({ ...good, timestamp: 1e300 }), { status: 400, message: /timestamp/ })
  t.match(await post({ measurement: 'm', fields: { v: { int: 1.5 } } }), { status: 400, message: /fields\/v/ })
  t.match(await post({ measurement: 'm', fields: { v: { int: '99999999999999999999' } } }), { status: 400, message: /fields\/v/ })
  t.match(await post({ measurement: 'm', fields: { time: 1 } }), { status: 400, message: /reserves/ })
  t.match(await post({ measurement: 'm', fields: { '': 1, v: 2 } }), { status: 400, message: /^body\/fields: an empty key/ }, 'refused, not written without it')
  t.match(await post([{ measurement: 'm', fields: { v: 1 } }, { measurement: 'm', tags: { '': 'x' }, fields: { v: 1 } }]), { status: 400, message: /^body\/1\/tags: an empty key/ })
  t.match(await post({ measurement: 'm\\', fields: { v: 1 } }), { status: 400, message: /^body\/measurement/ })
  t.match(await post({ measurement: 'm', tags: { host: 'a\\' }, fields: { v: 1 } }), { status: 400, message: /^body\/tags\/host/ })
  t.match(await post({ measurement: '#m', fields: { v: 1 } }), { status: 400, message: /^body\/measurement/ })
  t.match(await post('{"measurement":'), { status: 400, message: /JSON/ })
  t.match(await post('m v=1', 'text/plain'), { status: 415 })
  t.match(await post([]), { status: 400, message: 'body must NOT have fewer than 1 items' })
  t.match(await post({ ...good, tag: { host: 'a' } }), { status: 400, message: 'body has "tag", which is not one of its properties' })
  t.match(await post({ measurement: 'm', fields: { v: { int: 5, unit: 'ms' } } }), { status: 400, message: /^body\/fields\/v/ })
  t.match(await post(5), { status: 400, message: 'body must be object' })
  t.same(app.writer.stats.accepted, {}, 'nothing accepted')
})

t.test('tokens: 401 without WRITE_TOKEN on every push endpoint; v1 u/p and Basic work', async t => {
  const vm = await startVictoriaMetrics(t)
  const { app } = await sidecar(t, vm)
  const push = [
    { url: '/beacons', payload: { measurement: 'm', fields: { v: 1 } } },
    { url: '/api/v2/write?bucket=app', payload: 'm v=1' },
    { url: '/write?db=app', payload: 'm v=1' }
  ]
  for (const { url, payload } of push) {
    for (const authorization of [undefined, 'Token wrong', `Basic ${Buffer.from(`u:wrong`).toString('base64')}`]) {
      const response = await app.inject({ method: 'POST', url, payload, headers: authorization === undefined ? {} : { authorization } })
      t.equal(response.statusCode, 401, `${url} with ${authorization ?? 'no token'}`)
      t.equal(response.json().code, 'unauthorized')
    }
  }
  const ok = async (url: string, headers: Record<string, string> = {}): Promise<number> => (await app.inject({ method: 'POST', url, payload: 'm v=1', headers })).statusCode
  t.equal(await ok(`/write?db=app&u=django&p=${TOKEN}`), 204, 'v1 u/p')
  t.equal(await ok('/write?db=app', { authorization: `Basic ${Buffer.from(`django:${TOKEN}`).toString('base64')}` }), 204, 'v1 Basic auth')
  t.equal(await ok('/write?db=app', { authorization: `Token ${TOKEN}` }), 204, 'v1 with a v2 token header')
  t.equal(await ok('/api/v2/write?bucket=app', { authorization: `Bearer ${TOKEN}` }), 204)
  t.equal((await app.inject({ method: 'GET', url: '/health' })).statusCode, 200, 'probes need no token')
})

t.test('write parameters, gzip, limits and a full buffer', async t => {
  const vm = await startVictoriaMetrics(t)
  const { app } = await sidecar(t, vm, { BUFFER_POINTS: '10' })
  const write = async (url: string, payload: string | Buffer, headers: Record<string, string> = {}): Promise<{ status: number, body: string, retryAfter?: string }> => {
    const response = await app.inject({ method: 'POST', url, payload, headers: { authorization: `Token ${TOKEN}`, ...headers } })
    const body = response.body === '' ? '' : (response.json() as { message: string }).message
    return { status: response.statusCode, body, retryAfter: response.headers['retry-after'] as string | undefined }
  }
  t.match(await write('/api/v2/write?bucket=app&precision=h', 'm v=1'), { status: 400, body: /precision must be one of ns, us, ms, s/ })
  t.match(await write('/api/v2/write?precision=s', 'm v=1'), { status: 400, body: /bucket/ })
  t.match(await write('/api/v2/write?bucket=other', 'm v=1'), { status: 400, body: /bucket "other" is not the one this sidecar writes to/ })
  t.match(await write('/write?db=app&precision=h', 'm v=1'), { status: 400, body: /precision "h" is not supported/ })
  t.match(await write('/write?db=app&rp=autogen&precision=s', 'v1s v=1 1700000000'), { status: 204 })
  t.match(await write('/api/v2/write?bucket=app&precision=ms', gzipSync('gz v=1 1700000000000\n'), { 'content-encoding': 'gzip' }), { status: 204 })
  t.match(await write('/api/v2/write?bucket=app', 'not gzip', { 'content-encoding': 'gzip' }), { status: 400, body: /gzip/ })
  t.match(await write('/api/v2/write?bucket=app', 'm v=1', { 'content-encoding': 'br' }), { status: 415 })
  const bomb = gzipSync(Buffer.alloc(64 * 1024 * 1024, 'a'))
  t.ok(bomb.length < 100_000, `a ${bomb.length}-byte gzip bomb`)
  t.match(await write('/api/v2/write?bucket=app', bomb, { 'content-encoding': 'gzip' }), { status: 413, body: /after decompression/ })
  await delivered(app, 2)
  t.equal((await vm.export('{__name__="v1s_v"}'))[0].timestamps[0], 1_700_000_000_000, 'v1 precision=s scaled')
  t.equal((await vm.export('{__name__="gz_v"}'))[0].timestamps[0], 1_700_000_000_000, 'gzip body, precision=ms')

  await vm.stop()
  const lines = (from: number, n: number): string => Array.from({ length: n }, (_, i) => `full v=${from + i}`).join('\n')
  t.match(await write('/api/v2/write?bucket=app', lines(0, 8)), { status: 204 })
  const full = await write('/api/v2/write?bucket=app', lines(8, 5))
  t.match(full, { status: 429, retryAfter: '1', body: /buffer is full/ })
  t.match(await write('/beacons', JSON.stringify({ measurement: 'full', fields: { v: 1 } }), { 'content-type': 'application/json' }), { status: 204 }, 'what fits is still accepted')
  t.match(await write('/api/v2/write?bucket=app', 'full v=100'), { status: 204 })
  t.match(await write('/api/v2/write?bucket=app', 'full v=101'), { status: 429, retryAfter: '1', body: "the sidecar's buffer is full; retry after 1 s" }, 'refused before the body is read')
  t.match(await write('/beacons', JSON.stringify({ measurement: 'full', fields: { v: 1 } }), { 'content-type': 'application/json' }), { status: 429 })
  await vm.start()
  await delivered(app, 12)
  t.equal(count(await vm.export('{__name__="full_v"}')), 10, 'every acknowledged point was delivered, none of the refused')
})
