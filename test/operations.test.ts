import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { addDerps, buildTestApp, createDatabase, startVictoriaMetrics, waitFor } from './helper'

const SERVER = join(__dirname, '..', 'dist', 'src', 'server.js')

t.test('GET /metrics is Prometheus text a real parser reads, with the counters that matter', async t => {
  const db = await createDatabase(t)
  await addDerps(db, { corgi: 2 })
  const vm = await startVictoriaMetrics(t)
  const app = await buildTestApp(t, { DATABASE_URL: db, INFLUX_URL: vm.url, INFLUX_ORG: 'o', INFLUX_BUCKET: 'b', POLL_INTERVAL: '200ms' })
  for (let i = 0; i < 5; i++) {
    const response = await app.inject({ method: 'POST', url: '/beacons', payload: [{ measurement: 'm', fields: { v: i } }, { measurement: 'm', fields: { v: i + 0.5 } }] })
    t.equal(response.statusCode, 204)
  }
  t.equal((await app.inject({ method: 'POST', url: '/api/v2/write?bucket=b', payload: 'm v=1\nm v=2\nm v=3' })).statusCode, 204)
  await waitFor(() => app.writer.stats.written >= 13 && (app.scheduler.stats.get('derps')?.polls ?? 0) >= 2, 'points written and polls run')

  const response = await app.inject({ method: 'GET', url: '/metrics' })
  t.equal(response.statusCode, 200)
  t.match(response.headers['content-type'], /^text\/plain; version=0\.0\.4/)
  // VictoriaMetrics' Prometheus importer is the parser: what it cannot read is not there afterwards.
  const imported = await fetch(`${vm.url}/api/v1/import/prometheus?extra_label=job=sidecar`, { method: 'POST', body: response.body })
  t.equal(imported.status, 204)
  const value = async (selector: string): Promise<number | undefined> => (await vm.export(selector))[0]?.values.at(-1)
  t.equal(await value('{__name__="sidecar_points_accepted_total",source="beacons",job="sidecar"}'), 10)
  t.equal(await value('{__name__="sidecar_points_accepted_total",source="api_v2_write",job="sidecar"}'), 3)
  t.ok((await value('{__name__="sidecar_points_accepted_total",source="poll",job="sidecar"}') ?? 0) > 0)
  t.ok((await value('{__name__="sidecar_points_written_total",job="sidecar"}') ?? 0) >= 13)
  t.equal(await value('{__name__="sidecar_points_dropped_total",reason="rejected",job="sidecar"}'), 0)
  t.equal(await value('{__name__="sidecar_sink_up",job="sidecar"}'), 1)
  t.equal(await value('{__name__="sidecar_buffer_limit_bytes",job="sidecar"}'), 32 * 1024 * 1024)
  t.ok((await value('{__name__="sidecar_buffer_bytes",job="sidecar"}') ?? -1) >= 0, 'memory held by the buffer')
  t.ok((await value('{__name__="sidecar_polls_total",measurement="derps",job="sidecar"}') ?? 0) >= 2)
  t.equal(await value('{__name__="sidecar_poll_errors_total",measurement="derps",job="sidecar"}'), 0)
  t.ok((await value('{__name__="sidecar_poll_duration_seconds",measurement="derps",job="sidecar"}') ?? -1) >= 0)
  t.ok((await value('{__name__="process_resident_memory_bytes",job="sidecar"}') ?? 0) > 10_000_000, 'process metrics')

  await waitFor(async () => (await vm.export('{__name__="sidecar_points_written"}')).length > 0, 'the sidecar measurement in the store')
  const own = await vm.export('{__name__="sidecar_points_accepted_beacons"}')
  t.equal(own[0].values.at(-1), 10, 'the same counters, written as the sidecar measurement')
  t.ok(own[0].metric.host, 'tagged with the host (the pod name in Kubernetes)')
})

t.test('metrics-sidecar --once prints one poll as line protocol and says whether every poller worked', async t => {
  const db = await createDatabase(t)
  await addDerps(db, { beagle: 5 })
  const run = async (env: Record<string, string>): Promise<{ code: number, stdout: string, stderr: string }> => {
    try {
      const { stdout, stderr } = await promisify(execFile)(process.execPath, [SERVER, '--once'], { env: { PATH: process.env.PATH, ...env } })
      return { code: 0, stdout, stderr }
    } catch (err) {
      const e = err as { code: number, stdout: string, stderr: string }
      return { code: e.code, stdout: e.stdout, stderr: e.stderr }
    }
  }
  const good = await run({ DATABASE_URL: db })
  t.equal(good.code, 0, good.stderr)
  t.match(good.stdout, /^derps,species=beagle count=5i \d{19}$/m)
  t.match(good.stdout, /^django_users total=1i,logged_in_1h=0i,logged_in_24h=0i \d{19}$/m)
  t.match(good.stdout, /^postgresql,db=sidecar_test_\w+,server=/m)
  t.equal(good.stderr, '')

  const down = await run({ DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/nowhere' })
  t.equal(down.code, 1)
  t.equal(down.stdout, '')
  t.match(down.stderr, /^metrics-sidecar: poller derps failed: connect ECONNREFUSED 127\.0\.0\.1:1$/m)
})

t.test('the command line: --help, and a mistyped option refused rather than starting a second live sidecar', async t => {
  const run = async (args: string[]): Promise<{ code: number, stdout: string, stderr: string }> => {
    try {
      // DATABASE_URL is unreachable: a sidecar started by mistake would still listen and be found by the timeout.
      const { stdout, stderr } = await promisify(execFile)(process.execPath, [SERVER, ...args], { env: { PATH: process.env.PATH, DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/nowhere', PORT: '0' }, timeout: 10_000 })
      return { code: 0, stdout, stderr }
    } catch (err) {
      const e = err as { code: number, stdout: string, stderr: string }
      return { code: e.code, stdout: e.stdout, stderr: e.stderr }
    }
  }
  const help = await run(['--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, /^Usage: metrics-sidecar \[--once\]$/m)
  t.equal(help.stderr, '')
  t.equal((await run(['-h'])).stdout, help.stdout)
  for (const args of [['--onec'], ['--once=true'], ['once']]) {
    const wrong = await run(args)
    t.equal(wrong.code, 2, args.join(' '))
    t.equal(wrong.stdout, '')
    t.match(wrong.stderr, /^metrics-sidecar: .*(once|onec)/)
    t.match(wrong.stderr, /Usage: metrics-sidecar/)
  }
})

t.test('start-up failures are one line, not a stack: an unusable SPOOL_DIR exits 2, a port in use 1', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'sidecar-'))
  const file = join(dir, 'not-a-directory')
  await writeFile(file, '')
  const run = async (env: Record<string, string>): Promise<{ code: number, stderr: string }> => {
    try {
      await promisify(execFile)(process.execPath, [SERVER], { env: { PATH: process.env.PATH, DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/nowhere', SINK_FILE: '/dev/null', ...env }, timeout: 10_000 })
      return { code: 0, stderr: '' }
    } catch (err) {
      const e = err as { code: number, stderr: string }
      return { code: e.code, stderr: e.stderr }
    }
  }
  const spool = await run({ SPOOL_DIR: file, PORT: '0' })
  t.equal(spool.code, 2)
  t.match(spool.stderr, new RegExp(`^metrics-sidecar: invalid configuration: SPOOL_DIR ${file} cannot be used: EEXIST[^\\n]*\\n$`))

  const taken = createServer()
  await new Promise<void>(resolve => taken.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { taken.close() })
  const port = String((taken.address() as AddressInfo).port)
  const inUse = await run({ PORT: port, LOG_LEVEL: 'error' })
  t.equal(inUse.code, 1)
  t.equal(inUse.stderr, `metrics-sidecar: cannot start: listen EADDRINUSE: address already in use 127.0.0.1:${port}\n`)
})

t.test('/ready is 503 naming the sink while InfluxDB is down, and 200 again once it is back', async t => {
  const db = await createDatabase(t)
  const vm = await startVictoriaMetrics(t)
  const app = await buildTestApp(t, { DATABASE_URL: db, INFLUX_URL: vm.url, INFLUX_ORG: 'o', INFLUX_BUCKET: 'b', POLL_INTERVAL: '1h' }, { poll: false })
  const ready = async (): Promise<{ statusCode: number, body: { status: string, checks: Array<{ name: string, status: string, message?: string }> } }> => {
    const response = await app.inject('/ready')
    return { statusCode: response.statusCode, body: response.json() }
  }
  t.equal((await ready()).statusCode, 200)
  await vm.stop()
  t.equal((await app.inject({ method: 'POST', url: '/beacons', payload: { measurement: 'waiting', fields: { v: 1 } } })).statusCode, 204)
  const down = await waitFor(async () => { const r = await ready(); return r.statusCode === 503 ? r : undefined }, 'not ready')
  t.match(down.body, { status: 'not ready', checks: [{ name: 'postgres', status: 'pass' }, { name: 'buffer', status: 'pass' }, { name: 'sink', status: 'fail', message: /ECONNREFUSED/ }] })
  await vm.start()
  await waitFor(async () => (await ready()).statusCode === 200, 'ready again', 30_000)
  await waitFor(async () => (await vm.export('{__name__="waiting_v"}')).length === 1, 'the point held meanwhile delivered')
  t.equal(app.writer.stats.dropped.rejected + app.writer.stats.dropped.buffer_full, 0)
})
