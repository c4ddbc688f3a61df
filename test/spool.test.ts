import t from 'tap'
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { appendFile, mkdir, mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import pino from 'pino'
import { Spool } from '../src/buffer/spool'
import { createDatabase, freePort, refusedPort, startVictoriaMetrics, waitFor } from './helper'

const SERVER = join(__dirname, '..', 'dist', 'src', 'server.js')
const log = pino({ level: 'silent' })
const lines = (name: string, from: number, n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => `${name} v=${from + i} ${1_700_000_000_000_000_000 + from + i}\n`).join(''))

t.test('the spool keeps order across segments and deletes what was delivered', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'spool-'))
  const spool = await Spool.open(dir, { maxBytes: 10_000_000, segmentBytes: 1000, log })
  for (let i = 0; i < 50; i++) await spool.append({ body: lines('m', i * 10, 10), count: 10 })
  t.equal(spool.points, 500)
  t.ok((await readdir(dir)).filter(f => f.endsWith('.seg')).length > 10, 'rotated into many segments')
  let next = 0
  for (;;) {
    const chunk = await spool.peek(35)
    if (chunk === undefined) break
    t.ok(chunk.count <= 35)
    const values = [...chunk.body.toString().matchAll(/v=(\d+)/g)].map(m => Number(m[1]))
    t.same(values, Array.from({ length: chunk.count }, (_, i) => next + i), 'in order')
    next += chunk.count
    await spool.commit()
  }
  t.equal(next, 500)
  t.equal(spool.points, 0)
  t.equal((await readdir(dir)).filter(f => f.endsWith('.seg')).length, 1, 'only the active segment is left')
  await spool.close()
})

t.test('a peek reads on after the batches peeked before it; commits go in peek order', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'spool-'))
  let spool = await Spool.open(dir, { maxBytes: 10_000_000, segmentBytes: 300, log })
  for (let i = 0; i < 10; i++) await spool.append({ body: lines('m', i * 5, 5), count: 5 })
  const values = (chunk: { body: Buffer } | undefined): number[] => [...(chunk?.body.toString() ?? '').matchAll(/v=(\d+)/g)].map(m => Number(m[1]))
  const first = await spool.peek(15)
  const second = await spool.peek(15)
  t.same(values(first), Array.from({ length: 15 }, (_, i) => i))
  t.same(values(second), Array.from({ length: 15 }, (_, i) => 15 + i), 'the second peek starts where the first ended')
  await spool.commit()
  t.equal(spool.points, 35, 'the first commit removes the first batch only')
  t.same(values(await spool.peek(100)), Array.from({ length: 20 }, (_, i) => 30 + i), 'a third peek follows the second')
  t.equal(await spool.peek(100), undefined, 'nothing is left to peek at')
  await spool.commit()
  await spool.close()
  spool = await Spool.open(dir, { maxBytes: 10_000_000, segmentBytes: 300, log })
  t.equal(spool.points, 20, 'a restart replays only what was not committed')
  await spool.close()
})

t.test('a read position that cannot be saved is logged; commits go on, and a restart replays more', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'spool-'))
  const warnings: string[] = []
  const warnLog = pino({ level: 'warn' }, { write: (line: string) => warnings.push(JSON.parse(line).msg) })
  let spool = await Spool.open(dir, { maxBytes: 10_000_000, segmentBytes: 10_000, log: warnLog })
  for (let i = 0; i < 4; i++) await spool.append({ body: lines('m', i * 5, 5), count: 5 })
  await spool.peek(5)
  await spool.commit()
  await mkdir(join(dir, 'cursor.json.tmp')) // writing the cursor now fails (EISDIR), as on a full disk
  await spool.peek(5)
  await spool.commit()
  t.equal(spool.points, 10, 'the commit went through')
  t.match(warnings, ['spool: cannot save the read position; a restart will replay more'])
  await spool.close()
  spool = await Spool.open(dir, { maxBytes: 10_000_000, segmentBytes: 10_000, log })
  t.equal(spool.points, 15, 'replayed from the last saved position: the unsaved batch again, nothing lost')
  await spool.close()
})

t.test('a restart replays what was not delivered; a torn tail is cut off and the rest goes on', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'spool-'))
  let spool = await Spool.open(dir, { maxBytes: 10_000_000, segmentBytes: 400, log })
  for (let i = 0; i < 10; i++) await spool.append({ body: lines('m', i * 5, 5), count: 5 })
  await spool.peek(15)
  await spool.commit()
  await spool.close()
  const segments = (await readdir(dir)).filter(f => f.endsWith('.seg')).sort()
  // A crash in the middle of an append: half a record at the end of an early segment.
  await appendFile(join(dir, segments[1]), Buffer.from([200, 0, 0, 0, 5, 0, 0, 0, 1, 2, 3, 4, 109, 32]))

  spool = await Spool.open(dir, { maxBytes: 10_000_000, segmentBytes: 400, log })
  t.ok(spool.corruptBytes > 0, `the torn record was found (${spool.corruptBytes} bytes)`)
  t.equal(spool.points, 35, 'everything after the delivered 15 points is replayed')
  const replayed: number[] = []
  for (let chunk = await spool.peek(1000); chunk !== undefined; chunk = await spool.peek(1000)) {
    replayed.push(...[...chunk.body.toString().matchAll(/v=(\d+)/g)].map(m => Number(m[1])))
    await spool.commit()
  }
  t.same(replayed, Array.from({ length: 35 }, (_, i) => 15 + i), 'the segments after the torn one are not blocked')
  await spool.append({ body: lines('m', 100, 1), count: 1 })
  t.equal(spool.points, 1, 'appends go on')
  await spool.close()
})

t.test('the spool is bounded', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'spool-'))
  const spool = await Spool.open(dir, { maxBytes: 1_200_000, segmentBytes: 100_000, log })
  const body = lines('m', 0, 1000)
  let accepted = 0
  while (spool.fits(1000, body.length)) {
    await spool.append({ body, count: 1000 })
    accepted += 1000
  }
  t.ok(spool.bytes <= 1_200_000, `${spool.bytes} bytes on disk after ${accepted} points`)
  t.ok(accepted > 0)
  await spool.close()
})

interface Sidecar { child: ChildProcess, url: string, exited: Promise<number | null> }

async function startSidecar (env: Record<string, string>): Promise<Sidecar> {
  const port = await freePort()
  const child = spawn(process.execPath, [SERVER], { env: { PATH: process.env.PATH, PORT: String(port), LOG_LEVEL: 'warn', ...env }, stdio: 'ignore' })
  const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
  const url = `http://127.0.0.1:${port}`
  await waitFor(async () => (await fetch(`${url}/health`)).ok, 'the sidecar to start')
  return { child, url, exited }
}

t.test('kill -9 with InfluxDB down: every acknowledged point arrives after the restart, with its receipt time', async t => {
  const db = await createDatabase(t, { django: false })
  const vm = await startVictoriaMetrics(t)
  await vm.stop()
  const env = { DATABASE_URL: db, INFLUX_URL: vm.url, INFLUX_ORG: 'o', INFLUX_BUCKET: 'b', SPOOL_DIR: await mkdtemp(join(tmpdir(), 'spool-')), POLL_INTERVAL: '1h' }
  let sidecar = await startSidecar(env)
  t.teardown(() => sidecar.child.kill('SIGKILL'))
  const before = Date.now()
  let acknowledged = 0
  for (let r = 0; r < 20; r++) {
    // Half with a timestamp, half stamped on receipt.
    const body = Array.from({ length: 1000 }, (_, i) => `spooled,req=${r} seq=${r * 1000 + i}i${i % 2 === 0 ? ` ${1_700_000_000_000 + r * 1000 + i}` : ''}`).join('\n')
    const response = await fetch(`${sidecar.url}/api/v2/write?bucket=b&precision=ms`, { method: 'POST', body })
    if (response.status === 204) acknowledged += 1000
  }
  const acceptedBy = Date.now()
  t.equal(acknowledged, 20_000)
  sidecar.child.kill('SIGKILL')
  await sidecar.exited

  sidecar = await startSidecar(env)
  await vm.start()
  const series = await waitFor(async () => {
    const found = await vm.export('{__name__="spooled_seq"}')
    return found.reduce((n, s) => n + s.values.length, 0) >= 20_000 ? found : undefined
  }, 'all 20,000 points in the store', 60_000)
  const seqs = new Set(series.flatMap(s => s.values))
  t.equal(seqs.size, 20_000, 'every acknowledged point arrived (at least once)')
  const stamped = series.flatMap(s => s.timestamps).filter(ts => ts >= before - 1000)
  t.ok(stamped.length >= 10_000 && stamped.every(ts => ts >= before - 1 && ts <= acceptedBy + 1), 'points without a timestamp keep the time they were accepted, not the replay time')
})

t.test('SIGTERM with InfluxDB down exits cleanly and leaves the points on disk for the next start', async t => {
  const db = await createDatabase(t, { django: false })
  const vm = await startVictoriaMetrics(t)
  await vm.stop()
  const spoolDir = await mkdtemp(join(tmpdir(), 'spool-'))
  const env = { DATABASE_URL: db, INFLUX_URL: vm.url, INFLUX_ORG: 'o', INFLUX_BUCKET: 'b', SPOOL_DIR: spoolDir, POLL_INTERVAL: '1h' }
  let sidecar = await startSidecar(env)
  t.teardown(() => sidecar.child.kill('SIGKILL'))
  t.equal((await fetch(`${sidecar.url}/beacons`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(Array.from({ length: 300 }, (_, i) => ({ measurement: 'kept', fields: { n: { int: i } } }))) })).status, 204)
  const started = Date.now()
  sidecar.child.kill('SIGTERM')
  t.equal(await sidecar.exited, 0, 'clean exit')
  t.ok(Date.now() - started < 10_000, 'within the grace period')
  t.ok((await readdir(spoolDir)).some(f => f.endsWith('.seg')))

  await vm.start()
  sidecar = await startSidecar(env)
  const series = await waitFor(async () => {
    const found = await vm.export('{__name__="kept_n"}')
    return found[0]?.values.length === 300 ? found : undefined
  }, '300 points delivered on the next start', 30_000)
  t.equal(series[0].values.length, 300)
  const metrics = await (await fetch(`${sidecar.url}/metrics`)).text()
  t.match(metrics, /^sidecar_spool_bytes \d+$/m, 'the spool size is reported')
  t.notMatch(metrics, /sidecar_buffer_limit_points/, 'BUFFER_POINTS does not bound a spool: not reported as its limit')
})

t.test('--once beside a live sidecar leaves its spool alone: the points it acknowledged survive kill -9', async t => {
  const db = await createDatabase(t)
  const vm = await startVictoriaMetrics(t)
  const spoolDir = await mkdtemp(join(tmpdir(), 'spool-'))
  const influx = { INFLUX_ORG: 'o', INFLUX_BUCKET: 'b' }
  // The live sidecar cannot reach InfluxDB, so what it acknowledges waits in the spool; nor its
  // database, so it adds no poll of its own to the spool while the test compares it.
  const nowhere = `http://127.0.0.1:${await refusedPort()}`
  let sidecar = await startSidecar({ DATABASE_URL: nowhere.replace('http', 'postgresql'), INFLUX_URL: nowhere, ...influx, SPOOL_DIR: spoolDir, POLL_INTERVAL: '1h' })
  t.teardown(() => sidecar.child.kill('SIGKILL'))
  t.equal((await fetch(`${sidecar.url}/api/v2/write?bucket=b`, { method: 'POST', body: lines('live', 0, 100) })).status, 204)
  const snapshot = async (): Promise<Record<string, string>> => Object.fromEntries(await Promise.all((await readdir(spoolDir)).map(async f => [f, (await readFile(join(spoolDir, f))).toString('base64')])))
  const before = await snapshot()

  // The check, run as an operator would (kubectl exec) with the pod's environment but a reachable InfluxDB.
  const { stdout } = await promisify(execFile)(process.execPath, [SERVER, '--once'], { env: { PATH: process.env.PATH, DATABASE_URL: db, INFLUX_URL: vm.url, ...influx, SPOOL_DIR: spoolDir } })
  t.match(stdout, /^postgresql,db=/m, 'it polled')
  t.same(await snapshot(), before, 'the spool is as the live sidecar left it')
  t.same(await vm.export('{__name__="live_v"}'), [], 'nothing of it was delivered by --once')

  sidecar.child.kill('SIGKILL')
  await sidecar.exited
  sidecar = await startSidecar({ DATABASE_URL: db, INFLUX_URL: vm.url, ...influx, SPOOL_DIR: spoolDir, POLL_INTERVAL: '1h' })
  const series = await waitFor(async () => {
    const found = await vm.export('{__name__="live_v"}')
    return found[0]?.values.length === 100 ? found : undefined
  }, 'the 100 acknowledged points delivered after the restart', 30_000)
  t.equal(series[0].values.length, 100)
})

t.test('a full disk under the spool: pushes get 503 with Retry-After and /ready says why, nothing is acknowledged', { skip: process.getuid?.() === 0 ? false : 'needs root to mount a small tmpfs' }, async t => {
  const dir = await mkdtemp(join(tmpdir(), 'full-disk-'))
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir])
  t.teardown(() => { execFileSync('umount', ['-l', dir]) })
  const vm = await startVictoriaMetrics(t)
  await vm.stop()
  const sidecar = await startSidecar({ DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/none', INFLUX_URL: vm.url, INFLUX_ORG: 'o', INFLUX_BUCKET: 'b', SPOOL_DIR: join(dir, 'spool'), POLL_INTERVAL: '1h' })
  t.teardown(() => sidecar.child.kill('SIGKILL'))
  const statuses: number[] = []
  let refused: Response | undefined
  for (let i = 0; i < 20 && refused === undefined; i++) {
    const response = await fetch(`${sidecar.url}/api/v2/write?bucket=b`, { method: 'POST', body: lines('disk', i * 2000, 2000) })
    statuses.push(response.status)
    if (response.status === 503) refused = response
  }
  t.ok(refused, `accepted until the disk was full, then 503 (${statuses.join(' ')})`)
  t.equal(refused?.headers.get('retry-after'), '1')
  const body = await refused?.json() as { message: string }
  t.match(body, { code: 'unavailable', message: /the buffer cannot hold points: .*(ENOSPC|disk full)/ }, body.message)
  const ready = await (await fetch(`${sidecar.url}/ready`)).json()
  t.match(ready, { status: 'not ready', checks: [{}, { name: 'buffer', status: 'fail', message: /ENOSPC|disk full/ }] })
})

t.test('a full spool answers 429, never a silent drop', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'sidecar-'))
  const config = join(dir, 'sidecar.json')
  await writeFile(config, JSON.stringify({ spoolMaxBytes: 1024 * 1024 }))
  const vm = await startVictoriaMetrics(t)
  await vm.stop()
  const sidecar = await startSidecar({ DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/none', INFLUX_URL: vm.url, INFLUX_ORG: 'o', INFLUX_BUCKET: 'b', SPOOL_DIR: join(dir, 'spool'), SIDECAR_CONFIG: config, POLL_INTERVAL: '1h' })
  t.teardown(() => sidecar.child.kill('SIGKILL'))
  const body = lines('full', 0, 2000)
  const statuses: number[] = []
  let retryAfter: string | null = null
  for (let i = 0; i < 30; i++) {
    const response = await fetch(`${sidecar.url}/api/v2/write?bucket=b`, { method: 'POST', body })
    statuses.push(response.status)
    if (response.status === 429) retryAfter = response.headers.get('retry-after')
  }
  t.ok(statuses.includes(204) && statuses.includes(429), `accepted until full, then refused (${statuses.join(' ')})`)
  t.equal(retryAfter, '1')
  const spooled = (await Promise.all((await readdir(join(dir, 'spool'))).filter(f => f.endsWith('.seg')).map(async f => (await readFile(join(dir, 'spool', f))).length))).reduce((a, b) => a + b, 0)
  t.ok(spooled <= 1024 * 1024, `${spooled} bytes on disk`)
})
