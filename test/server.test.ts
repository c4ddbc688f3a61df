import t from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import { connect, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { addDerps, createDatabase, freePort, latestBy, refusedPort, sql, startVictoriaMetrics, waitFor } from './helper'

const SERVER = join(__dirname, '..', 'dist', 'src', 'server.js')

/** The compiled service as `npm start` runs it (npm test builds it first). */
function startServer (env: Record<string, string>): { exited: Promise<number | null>, stdout: () => string, stderr: () => string, kill: (signal: NodeJS.Signals) => void } {
  const child = spawn(process.execPath, [SERVER], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', chunk => { stdout += chunk })
  child.stderr.on('data', chunk => { stderr += chunk })
  const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
  return { exited, stdout: () => stdout, stderr: () => stderr, kill: signal => child.kill(signal) }
}

t.before(() => {
  if (!existsSync(SERVER)) throw new Error(`${SERVER} is missing: run npm run build (npm test does)`)
})

t.test('polls into InfluxDB, serves probes, and exits 0 on SIGTERM after flushing', async t => {
  const db = await createDatabase(t)
  const vm = await startVictoriaMetrics(t)
  await addDerps(db, { corgi: 4, tabby: 2 })
  // Nothing leaves before the shutdown but full batches: what arrives was flushed on the way out.
  const dir = await mkdtemp(join(tmpdir(), 'sidecar-'))
  await writeFile(join(dir, 'sidecar.json'), JSON.stringify({ flushInterval: '1h' }))
  const port = await freePort()
  const server = startServer({ DATABASE_URL: db, INFLUX_URL: vm.url, INFLUX_ORG: 'org', INFLUX_BUCKET: 'app', POLL_INTERVAL: '1s', PORT: String(port), SIDECAR_CONFIG: join(dir, 'sidecar.json') })
  t.teardown(() => server.kill('SIGKILL'))
  const base = `http://127.0.0.1:${port}`
  await waitFor(async () => (await fetch(`${base}/ready`)).status === 200, 'readiness')
  t.match(await (await fetch(`${base}/health`)).json(), { status: 'pass' })
  t.equal((await fetch(`${base}/ping`)).status, 204)
  t.match(server.stdout(), /points go to InfluxDB http:\/\/127\.0\.0\.1:\d+ org=org bucket=app/)

  await waitFor(async () => /^sidecar_polls_total\{measurement="derps"\} [1-9]/m.test(await (await fetch(`${base}/metrics`)).text()), 'a derps poll')
  t.equal((await fetch(`${base}/beacons`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"measurement":"last_words","fields":{"v":1}}' })).status, 204)
  t.same(await vm.export('{__name__=~"derps_count|last_words_v"}'), [], 'nothing delivered yet')
  server.kill('SIGTERM')
  const started = Date.now()
  t.equal(await server.exited, 0, 'clean exit')
  t.ok(Date.now() - started < 10_000, 'within the grace period')
  t.same(latestBy(await vm.export('{__name__="derps_count"}'), 'species'), { corgi: 4, tabby: 2 }, 'polled points flushed on the way out')
  t.equal((await vm.export('{__name__="last_words_v"}')).length, 1, 'and the last push')
})

t.test('SIGTERM during a slow poll with InfluxDB down: still exits 0 within the 10 s grace', async t => {
  const db = await createDatabase(t, { django: false })
  const dir = await mkdtemp(join(tmpdir(), 'sidecar-'))
  await writeFile(join(dir, 'sidecar.json'), JSON.stringify({
    pollTimeout: '6s',
    disable: ['postgresql', 'postgresql_activity', 'django_sessions', 'django_users'],
    modelCounts: [],
    sqlMeasurements: [{ measurement: 'slow', sql: 'SELECT 1 AS v FROM pg_sleep(5)' }]
  }))
  const port = await freePort()
  const server = startServer({ DATABASE_URL: db, INFLUX_URL: `http://127.0.0.1:${await refusedPort()}`, INFLUX_ORG: 'o', INFLUX_BUCKET: 'b', POLL_INTERVAL: '1h', PORT: String(port), SIDECAR_CONFIG: join(dir, 'sidecar.json') })
  t.teardown(() => server.kill('SIGKILL'))
  const base = `http://127.0.0.1:${port}`
  await waitFor(async () => (await sql(db, "SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE '%pg_sleep(5)%' AND state = 'active' AND pid <> pg_backend_pid()")).rows[0].n === 1, 'the slow poll under way')
  t.equal((await fetch(`${base}/beacons`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"measurement":"stuck","fields":{"v":1}}' })).status, 204)
  server.kill('SIGTERM')
  const started = Date.now()
  // The poll takes ~5 s more, then the writer tries to deliver until its deadline: 8 s after SIGTERM, not after the poll.
  t.equal(await server.exited, 0, 'clean exit, not cut off by close-with-grace')
  const took = Date.now() - started
  t.ok(took < 9_500, `exited ${took} ms after SIGTERM`)
  t.match(server.stdout(), /shutdown deadline passed: points not delivered/)
})

t.test('SIGTERM with InfluxDB hanging and a client trickling a body: exit 0 within the grace, the undelivered points counted', async t => {
  const silent = createServer(() => {}) // takes writes and never answers
  await new Promise<void>(resolve => silent.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { silent.closeAllConnections(); silent.close() })
  const influx = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`
  const port = await freePort()
  const server = startServer({ DATABASE_URL: `postgresql://postgres@127.0.0.1:${await refusedPort()}/none`, INFLUX_URL: influx, INFLUX_ORG: 'o', INFLUX_BUCKET: 'b', POLL_INTERVAL: '1h', PORT: String(port) })
  t.teardown(() => server.kill('SIGKILL'))
  const base = `http://127.0.0.1:${port}`
  await waitFor(async () => (await fetch(`${base}/health`)).ok, 'the sidecar to start')
  t.equal((await fetch(`${base}/api/v2/write?bucket=b`, { method: 'POST', body: 'hung v=1\nhung v=2\nhung v=3' })).status, 204)
  // A push whose body comes a byte at a time: closing the server would wait for it until requestTimeout (30 s).
  const trickle = connect(port, '127.0.0.1')
  trickle.on('error', () => {})
  t.teardown(() => trickle.destroy())
  trickle.write('POST /api/v2/write?bucket=b HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n')
  const drip = setInterval(() => trickle.write('m'), 200)
  t.teardown(() => clearInterval(drip))
  await new Promise(resolve => setTimeout(resolve, 1500)) // the batch is in flight to the silent InfluxDB
  const asked = Date.now()
  const ready = await fetch(`${base}/ready`)
  t.equal(ready.status, 503, 'not ready, and the probe is answered')
  t.ok(Date.now() - asked < 3000, `within ${Date.now() - asked} ms`)
  t.match(await ready.json(), { checks: [{ name: 'postgres', status: 'fail' }, { name: 'buffer', status: 'pass' }, { name: 'sink', status: 'fail', message: /no answer/ }] })
  server.kill('SIGTERM')
  const started = Date.now()
  t.equal(await server.exited, 0, 'clean exit, not cut off by close-with-grace')
  const took = Date.now() - started
  t.ok(took < 9_500, `exited ${took} ms after SIGTERM`)
  t.match(server.stdout(), /"points":3,"msg":"shutdown deadline passed: points not delivered"/, 'nothing acknowledged disappears silently')
})

t.test('without INFLUX_URL the points go to SINK_FILE as line protocol', async t => {
  const db = await createDatabase(t)
  await addDerps(db, { pug: 3 })
  const sinkFile = join(await mkdtemp(join(tmpdir(), 'sink-')), 'metrics.lp')
  const server = startServer({ DATABASE_URL: db, SINK_FILE: sinkFile, POLL_INTERVAL: '500ms', PORT: String(await freePort()) })
  t.teardown(() => server.kill('SIGKILL'))
  await waitFor(() => existsSync(sinkFile) && /^derps,species=pug count=3i \d{19}$/m.test(readFileSync(sinkFile, 'utf8')), 'derps lines in the file')
  t.match(server.stdout(), new RegExp(`points go to file ${sinkFile}`))
  server.kill('SIGTERM')
  t.equal(await server.exited, 0)
  t.match(readFileSync(sinkFile, 'utf8'), /^postgresql,db=sidecar_test_\w+,server=host\\=127\.0\.0\.1\\ port\\=5432\\ dbname\\=sidecar_test_\w+\\ user\\=postgres .*xact_commit=\d+i/m)
})

t.test('a bad variable stops start-up with one clear line', async t => {
  const server = startServer({ PORT: 'notaport' })
  t.equal(await server.exited, 2)
  t.equal(server.stderr(), 'metrics-sidecar: invalid configuration: PORT must be integer (got "notaport")\n')
  const open = startServer({ HOST: '0.0.0.0' })
  t.equal(await open.exited, 2)
  t.match(open.stderr(), /^metrics-sidecar: invalid configuration: HOST=0\.0\.0\.0 is not a loopback address: set WRITE_TOKEN/)
})
