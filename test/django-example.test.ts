import t, { type Test } from 'tap'
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { connect, createServer, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { promisify } from 'node:util'
import type { FastifyInstance } from 'fastify'
import { buildTestApp, freePort, refusedPort, startVictoriaMetrics, waitFor, type Series, type VictoriaMetrics } from './helper'

// examples/django/: the stdlib-only sidecar_beacons app and its demo project, run by Debian's
// Django (python3-django), which the pyenv python3 on PATH does not have.
const PYTHON = '/usr/bin/python3'
const EXAMPLES = join(__dirname, '..', 'examples', 'django')
const DEMO = join(EXAMPLES, 'demo')
const TOKEN = 'django-write-token'
const PG = 'postgresql://postgres@127.0.0.1:5432/test'

const run = promisify(execFile)
const count = (series: Series[]): number => series.reduce((n, s) => n + s.values.length, 0)
const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length
const quantile = (xs: number[], q: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]
const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

/** Environment of every Python process: no bytecode files in the source tree, output unbuffered. */
function pythonEnv (env: Record<string, string>): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    LANG: 'C.UTF-8',
    PYTHONDONTWRITEBYTECODE: '1',
    PYTHONUNBUFFERED: '1',
    PYTHONPATH: `${EXAMPLES}:${DEMO}`,
    DJANGO_SETTINGS_MODULE: 'demo.settings',
    ...env
  }
}

/** Ends a child: SIGINT first (Python runs its atexit handlers), SIGKILL if it lingers. */
async function stop (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise(resolve => child.once('exit', resolve))
  child.kill('SIGINT')
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
  await exited
  clearTimeout(timer)
}

interface Django { url: string, output: () => string }

/** The demo project under `manage.py runserver` (threaded, as in development) on a free port. */
async function startDjango (t: Test, env: Record<string, string>): Promise<Django> {
  const port = await freePort()
  const child = spawn(PYTHON, ['manage.py', 'runserver', '--noreload', `127.0.0.1:${port}`], {
    cwd: DEMO, env: pythonEnv(env), stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout?.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr?.on('data', (chunk: Buffer) => { output += chunk.toString() })
  t.teardown(async () => await stop(child))
  // Ready once it accepts connections: a bare connect sends no request, so it makes no beacon.
  await waitFor(async () => await new Promise<boolean>(resolve => {
    if (child.exitCode !== null) throw new Error(`runserver exited ${child.exitCode}: ${output}`)
    const socket = connect(port, '127.0.0.1', () => { socket.destroy(); resolve(true) }).on('error', () => resolve(false))
  }), `Django on port ${port}`)
  return { url: `http://127.0.0.1:${port}`, output: () => output }
}

async function sidecar (t: Test, env: Record<string, string>): Promise<{ app: FastifyInstance, url: string }> {
  const app = await buildTestApp(t, { DATABASE_URL: PG, WRITE_TOKEN: TOKEN, ...env }, { poll: false })
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  return { app, url }
}

async function request (url: string, method = 'GET'): Promise<{ status: number, ms: number }> {
  const started = performance.now()
  const response = await fetch(url, { method, ...(method === 'POST' ? { body: new URLSearchParams({ name: 'rex' }) } : {}) })
  await response.arrayBuffer()
  return { status: response.status, ms: performance.now() - started }
}

const django = spawnSync(PYTHON, ['-c', 'import django; print(django.get_version())'], { encoding: 'utf8' })
if (django.status !== 0) {
  t.plan(0, `${PYTHON} cannot import django: install Debian's python3-django to run the Django example's test`)
} else {
  t.comment(`Django ${django.stdout.trim()} (${PYTHON})`)
  suite()
}

function suite (): void {
  let vm: VictoriaMetrics
  let app: FastifyInstance
  let sidecarUrl: string
  let db: string
  /** Django with the middleware sending to a live sidecar, without it, and with the sidecar down or hung. */
  let live: Django, plain: Django, down: Django, hung: Django

  t.before(async () => {
    const dir = await mkdtemp(join(tmpdir(), 'django-example-'))
    t.teardown(async () => await rm(dir, { recursive: true, force: true }))
    db = join(dir, 'demo.sqlite3')
    await run(PYTHON, ['manage.py', 'migrate', '-v0'], { cwd: DEMO, env: pythonEnv({ DEMO_DB: db }) })
    vm = await startVictoriaMetrics(t)
    ;({ app, url: sidecarUrl } = await sidecar(t, { INFLUX_URL: vm.url, INFLUX_ORG: 'org', INFLUX_BUCKET: 'app' }))
    // A port nothing listens on, and a "sidecar" that accepts connections and never answers.
    const closedPort = await refusedPort()
    const sockets = new Set<Socket>()
    const blackHole = createServer(socket => { sockets.add(socket); socket.on('error', () => {}) })
    await new Promise<void>(resolve => blackHole.listen(0, '127.0.0.1', resolve))
    t.teardown(async () => {
      for (const socket of sockets) socket.destroy()
      await new Promise(resolve => blackHole.close(resolve))
    })
    const hungUrl = `http://127.0.0.1:${(blackHole.address() as { port: number }).port}`
    ;[live, plain, down, hung] = await Promise.all([
      startDjango(t, { DEMO_DB: db, SIDECAR_URL: sidecarUrl, SIDECAR_TOKEN: TOKEN }),
      startDjango(t, { DEMO_DB: db, DEMO_BEACONS: '0' }),
      // Batches of 10: the sending thread holds at most 10 while it retries, so the 220 requests of
      // the timing test overflow the 50-beacon queue however fast the machine serves them.
      startDjango(t, { DEMO_DB: db, SIDECAR_URL: `http://127.0.0.1:${closedPort}`, SIDECAR_QUEUE_SIZE: '50', SIDECAR_BATCH_SIZE: '10' }),
      startDjango(t, { DEMO_DB: db, SIDECAR_URL: hungUrl })
    ])
  })

  t.test('every request becomes exactly one django_requests point, tagged view/method/status', async t => {
    const plan: Array<[method: string, path: (i: number) => string, times: number, view: string, status: number]> = [
      ['GET', () => '/', 70, 'home', 200],
      ['POST', () => '/', 20, 'home', 200],
      ['PURGE', () => '/', 5, 'home', 200], // an unusual method is tagged "other"
      ['GET', i => `/derps/${i + 1}/`, 40, 'derp-detail', 200],
      ['GET', i => `/derps/${5000 + i}/`, 10, 'derp-detail', 404], // Http404 in a resolved view
      ['GET', () => '/about/', 20, 'about/', 200], // no URL name: the route
      ['GET', i => `/no/such/page/${i}`, 20, 'unresolved', 404],
      ['GET', () => '/slow/', 10, 'slow', 200],
      ['GET', () => '/boom/', 5, 'boom', 500]
    ]
    const requests = plan.flatMap(([method, path, times, view, status]) =>
      Array.from({ length: times }, (_, i) => ({ method, path: path(i), view, status })))
    const expected: Record<string, number> = {}
    for (const r of requests) {
      const key = `${r.view} ${r.method === 'PURGE' ? 'other' : r.method} ${r.status}`
      expected[key] = (expected[key] ?? 0) + 1
    }
    const N = requests.length
    t.equal(N, 200)

    const started = Date.now()
    const statuses: string[] = []
    let next = 0
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < requests.length) {
        const r = requests[next++]
        const { status } = await request(live.url + r.path, r.method)
        if (status !== r.status) statuses.push(`${r.method} ${r.path}: ${status}`)
      }
    }))
    const ended = Date.now()
    t.same(statuses, [], 'every view answered as planned')

    await waitFor(() => (app.writer.stats.accepted.beacons ?? 0) >= N && app.writer.bufferedPoints === 0, `${N} beacons accepted and written`)
    const series = await vm.export('{__name__="django_requests_duration_ms"}')
    t.equal(app.writer.stats.accepted.beacons, N, 'no more beacons than requests')
    t.equal(count(series), N, `exactly ${N} points in VictoriaMetrics`)
    const got: Record<string, number> = {}
    for (const s of series) got[`${s.metric.view} ${s.metric.method} ${s.metric.status}`] = s.values.length
    t.same(got, expected, 'one series per view/method/status with one point per request')
    const stamps = series.flatMap(s => s.timestamps)
    t.ok(stamps.every(ts => ts >= started - 5 && ts <= ended), 'timestamps are when the requests started')
    const slow = series.find(s => s.metric.view === 'slow')?.values ?? []
    t.ok(slow.length === 10 && slow.every(v => v >= 50 && v < 5000), `slow view durations ≥ 50 ms (${Math.min(...slow).toFixed(1)}–${Math.max(...slow).toFixed(1)})`)
    const fast = series.find(s => s.metric.view === 'home' && s.metric.method === 'GET')?.values ?? []
    t.comment(`duration_ms of GET home as Django measured it: median ${quantile(fast, 0.5).toFixed(3)} ms, p95 ${quantile(fast, 0.95).toFixed(3)} ms`)

    const stats = await (await fetch(`${live.url}/beacon-stats/`)).json() as { sent: number, dropped: Record<string, number> }
    t.equal(stats.sent, N, "the client's own count")
    t.same(stats.dropped, { queue_full: 0, rejected: 0, exit: 0 })
  })

  t.test('the middleware costs microseconds; a down or hung sidecar does not slow or break the app', async t => {
    const variants = { plain, live, down, hung }
    const times: Record<string, number[]> = { plain: [], live: [], down: [], hung: [] }
    const failures: string[] = []
    for (const django of Object.values(variants)) for (let i = 0; i < 20; i++) await request(`${django.url}/`) // warm-up
    // Interleaved rounds in rotating order, so that a slow moment of the machine hits every variant alike.
    const entries = Object.entries(variants)
    for (let round = 0; round < 10; round++) {
      for (const [name, django] of [...entries.slice(round % 4), ...entries.slice(0, round % 4)]) {
        for (let i = 0; i < 20; i++) {
          const { status, ms } = await request(`${django.url}/`)
          if (status !== 200) failures.push(`${name}: ${status}`)
          times[name].push(ms)
        }
      }
    }
    t.same(failures, [], 'every request answered 200, whatever the sidecar does')
    const line = (name: string): string => `${name.padEnd(5)} mean ${mean(times[name]).toFixed(3)} ms, median ${quantile(times[name], 0.5).toFixed(3)} ms, p95 ${quantile(times[name], 0.95).toFixed(3)} ms`
    t.comment('200 sequential GET / per variant (runserver, end to end from Node):')
    for (const name of Object.keys(times)) t.comment(line(name))
    t.comment(`middleware overhead with a live sidecar: ${(mean(times.live) - mean(times.plain)).toFixed(3)} ms per request (mean), ${(quantile(times.live, 0.5) - quantile(times.plain, 0.5)).toFixed(3)} ms (median)`)
    const bound = 2 * mean(times.plain) + 5
    for (const name of ['live', 'down', 'hung']) {
      t.ok(mean(times[name]) < bound, `${name}: mean ${mean(times[name]).toFixed(3)} ms < 2 × ${mean(times.plain).toFixed(3)} + 5 ms`)
    }

    // The request thread's share, measured in-process: the middleware around a trivial view.
    const { stdout } = await run(PYTHON, ['-c', `
import json, sys, time
from django.conf import settings
settings.configure(SIDECAR_URL=sys.argv[1], SIDECAR_TOKEN=sys.argv[2], SIDECAR_BEACONS={'MEASUREMENT': 'django_bench'})
import django
django.setup()
from django.http import HttpResponse
from django.test import RequestFactory
import sidecar_beacons
from sidecar_beacons.middleware import BeaconMiddleware
view = lambda request: HttpResponse('ok')
wrapped = BeaconMiddleware(view)
request = RequestFactory().get('/')
def per_call(fn, n=2000):
    started = time.perf_counter()
    for _ in range(n):
        fn(request)
    return (time.perf_counter() - started) / n * 1e6
plain, wrapped_us = min(per_call(view) for _ in range(5)), min(per_call(wrapped) for _ in range(5))
sidecar_beacons.flush(10)
print(json.dumps({'plain_us': plain, 'middleware_us': wrapped_us, 'stats': sidecar_beacons.stats()}))
`, sidecarUrl, TOKEN], { env: pythonEnv({}) })
    const micro = JSON.parse(stdout) as { plain_us: number, middleware_us: number, stats: { sent: number, dropped: Record<string, number> } }
    const overhead = micro.middleware_us - micro.plain_us
    t.comment(`in-process: view ${micro.plain_us.toFixed(2)} µs, with BeaconMiddleware ${micro.middleware_us.toFixed(2)} µs: ${overhead.toFixed(2)} µs per request (sending thread included)`)
    t.ok(overhead < 200, 'well under a millisecond per request')
    t.equal(micro.stats.sent, 10_000, 'and every one of those beacons was sent')

    // What the app says while its sidecar is away: one line per kind of trouble per minute, counters.
    const stats = await (await fetch(`${down.url}/beacon-stats/`)).json() as { sent: number, dropped: Record<string, number> }
    t.equal(stats.sent, 0)
    t.ok(stats.dropped.queue_full > 0, `down: ${stats.dropped.queue_full} beacons dropped past the 50-beacon queue, counted`)
    const logLines = (django: Django, pattern: RegExp): number => django.output().split('\n').filter(l => pattern.test(l)).length
    t.equal(logLines(down, /sidecar beacons: .* not taking beacons: .*Connection refused/), 1, 'down: "not taking beacons" logged once')
    t.equal(logLines(down, /sidecar beacons: queue full/), 1, 'down: "queue full" logged once')
    await waitFor(() => logLines(hung, /sidecar beacons: .* not taking beacons: .*timed out/) === 1, 'hung: the timeout logged', 5000)
    t.pass('hung: "timed out" logged once')
  })

  t.test('send() and Int: custom beacons (derp uploads via post_save) arrive with integer fields, flushed at exit', async t => {
    const sinkFile = join(await mkdtemp(join(tmpdir(), 'django-sink-')), 'metrics.lp')
    t.teardown(async () => await rm(join(sinkFile, '..'), { recursive: true, force: true }))
    const { url } = await sidecar(t, { SINK_FILE: sinkFile })
    const started = Date.now()
    const { stderr } = await run(PYTHON, ['-c', `
import django
django.setup()
from django.db import transaction
import sidecar_beacons
from sidecar_beacons import Int
from derps.models import Derp
Derp.objects.create(name='rex', species='corgi')  # autocommit: the on_commit beacon goes now
with transaction.atomic():  # rolled back: no beacon
    Derp.objects.create(name='ghost', species='ghost')
    transaction.set_rollback(True)
sidecar_beacons.send('custom', tags={'kind': 'types'}, timestamp=1700000000123, fields={
    'big': Int(2 ** 53 + 1), 'negative': Int(-7), 'marked': {'int': 42}, 'bare_int': 3, 'ratio': 0.25, 'ok': True, 'note': 'hi'})
# The sidecar refuses a whole request for one bad beacon (a tag value line protocol cannot end with):
# the client halves the batch until that one stands alone, and only it is lost.
sidecar_beacons.send('custom', tags={'kind': 'bad' + chr(92)}, fields={'v': 1})
sidecar_beacons.send('custom', tags={'kind': 'after'}, fields={'v': 2})
# no flush: the atexit handler delivers
`], { env: pythonEnv({ DEMO_DB: db, SIDECAR_URL: url, SIDECAR_TOKEN: TOKEN }) })
    t.match(stderr, /^sidecar beacons: http:\S+ refused 1 beacon\(s\): HTTP 400 .*tags\/kind: .*backslash.*\n$/, 'only the bad beacon refused, and logged')
    t.ok(Date.now() - started < 5000, 'the script exits promptly')
    const lines = await waitFor(() => {
      const text = (() => { try { return readFileSync(sinkFile, 'utf8') } catch { return '' } })()
      const found = text.split('\n').filter(l => /^(derp_uploads|custom)[, ]/.test(l))
      return found.length >= 3 ? found : undefined
    }, 'the custom beacons in the sink file')
    t.match(lines.find(l => l.startsWith('custom,kind=after ')), /^custom,kind=after v=2 \d{19}$/, 'the bad beacon\'s neighbour arrived')
    t.equal(lines.length, 3, 'upload, custom, after')
    const upload = lines.find(l => l.startsWith('derp_uploads,')) ?? ''
    t.match(upload, /^derp_uploads,species=corgi \S+ (\d{19})$/, 'the committed upload, tagged with its species')
    t.match(upload, /[ ,]uploads=1i[, ]/, 'uploads is an integer')
    t.match(upload, /[ ,]name_length=3i[, ]/)
    t.equal(lines.filter(l => l.startsWith('derp_uploads')).length, 1, 'the rolled-back upload sent nothing')
    const custom = lines.find(l => l.startsWith('custom,')) ?? ''
    t.match(custom, / 1700000000123000000$/, 'epoch-millisecond timestamp')
    // A wrong token: refused, dropped, and the log says what to check.
    const wrong = await run(PYTHON, ['-c', 'import django; django.setup(); import sidecar_beacons; sidecar_beacons.send("custom", fields={"v": 1})'],
      { env: pythonEnv({ DEMO_DB: db, SIDECAR_URL: url, SIDECAR_TOKEN: 'not-the-token' }) })
    t.match(wrong.stderr, /refused 1 beacon\(s\): HTTP 401 .*\(check SIDECAR_TOKEN\)/)
    for (const field of ['big=9007199254740993i', 'negative=-7i', 'marked=42i', 'bare_int=3', 'ratio=0.25', 'ok=true', 'note="hi"']) {
      t.match(custom, new RegExp(`[ ,]${field.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}[, ]`), field)
    }
  })

  t.test('a busy sidecar (429): the client waits Retry-After and delivers everything once it drains', async t => {
    const store = await startVictoriaMetrics(t)
    const { app: busy, url } = await sidecar(t, { INFLUX_URL: store.url, INFLUX_ORG: 'org', INFLUX_BUCKET: 'app', BUFFER_POINTS: '10' })
    await store.stop() // the sidecar holds what it accepts; its 10-point buffer fills
    const child = spawn(PYTHON, ['-c', `
import json, sys
from django.conf import settings
settings.configure(SIDECAR_URL=sys.argv[1], SIDECAR_TOKEN=sys.argv[2], SIDECAR_BEACONS={'BATCH_SIZE': 10, 'FLUSH_INTERVAL': 0.05})
import django
django.setup()
import sidecar_beacons
from sidecar_beacons import Int
for batch in range(3):
    for i in range(10):
        sidecar_beacons.send('busy', tags={'batch': str(batch)}, fields={'i': Int(i)})
    assert sidecar_beacons.flush(30), 'not delivered'
print(json.dumps(sidecar_beacons.stats()))
`, url, TOKEN], { env: pythonEnv({}), stdio: ['ignore', 'pipe', 'pipe'] })
    t.teardown(async () => await stop(child))
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
    const exited = new Promise(resolve => child.once('exit', resolve))
    await waitFor(() => /busy \(HTTP 429\); retrying in 1\.0 s/.test(stderr), 'the client to be told 429')
    t.pass('429 with Retry-After: 1 → the client waits 1.0 s (its own first backoff would be 0.5 s)')
    await sleep(1500)
    await store.start()
    t.equal(await exited, 0, stderr)
    const stats = JSON.parse(stdout) as { sent: number, retries: number, dropped: Record<string, number> }
    t.equal(stats.sent, 30)
    t.ok(stats.retries >= 1)
    t.same(stats.dropped, { queue_full: 0, rejected: 0, exit: 0 })
    await waitFor(() => busy.writer.stats.written >= 30, 'the sidecar to deliver')
    t.equal(count(await store.export('{__name__="busy_i"}')), 30, 'all 30 beacons in the store')
  })
}
