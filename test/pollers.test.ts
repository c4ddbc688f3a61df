import t from 'tap'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { formatPoints } from '../src/line-protocol/format'
import type { PollerStats } from '../src/scheduler'
import { addDerps, buildTestApp, createDatabase, latestBy, sql, startVictoriaMetrics, waitFor } from './helper'
import { TcpProxy } from './tcp-proxy'

t.test('polled points land in a real InfluxDB-compatible store', async t => {
  const db = await createDatabase(t)
  const vm = await startVictoriaMetrics(t)
  await addDerps(db, { dog: 3, cat: 2, 'sea lion': 1 })
  await sql(db, `UPDATE auth_user SET last_login = now() - interval '2 hours'`)
  await sql(db, `INSERT INTO django_session VALUES ('live', 'x', now() + interval '1 day'), ('gone', 'x', now() - interval '1 day')`)
  const env = { DATABASE_URL: db, INFLUX_URL: vm.url, INFLUX_ORG: 'org', INFLUX_BUCKET: 'app', POLL_INTERVAL: '200ms' }
  await buildTestApp(t, env)

  const counts = await waitFor(async () => {
    const latest = latestBy(await vm.export('{__name__="derps_count"}'), 'species')
    return latest['sea lion'] === 1 ? latest : undefined
  }, 'derps counts')
  t.same(counts, { dog: 3, cat: 2, 'sea lion': 1 }, 'one series per species, tag names as in SPEC §3')

  await sql(db, `DELETE FROM derps_derp WHERE species = 'cat'`)
  await waitFor(async () => latestBy(await vm.export('{__name__="derps_count"}'), 'species').cat === 0, 'cat count to drop to 0')
  t.pass('a species whose last derp was deleted is written as count=0')

  const sessions = await vm.export('{__name__="django_sessions_active"}')
  t.equal(sessions[0].values.at(-1), 1, 'only unexpired sessions are active')
  const users = await vm.export('{__name__=~"django_users_.*"}')
  t.same(latestBy(users, '__name__'), { django_users_total: 1, django_users_logged_in_1h: 0, django_users_logged_in_24h: 1 })

  const dbName = new URL(db).pathname.slice(1)
  const commits = await vm.export(`{__name__="postgresql_xact_commit",db="${dbName}"}`)
  t.equal(commits.length, 1)
  t.match(commits[0].metric.server, /^host=127\.0\.0\.1 port=5432 dbname=sidecar_test_\w+ user=postgres$/)
  t.notMatch(commits[0].metric.server, /password/)
  for (const field of ['numbackends', 'blks_hit', 'tup_fetched', 'deadlocks', 'blk_read_time']) {
    t.equal((await vm.export(`{__name__="postgresql_${field}",db="${dbName}"}`)).length, 1, `postgresql ${field}`)
  }
  const shared = await vm.export('{__name__="postgresql_blks_hit",db="postgres_global"}')
  t.equal(shared.length, 1, 'the shared objects row, tagged as Telegraf tags it')
  t.equal((await vm.export('{__name__="postgresql_blks_hit",db=""}')).length, 0, 'no row without a db tag')
  const activity = await vm.export(`{__name__="postgresql_activity_count",db="${dbName}"}`)
  t.ok(activity.some(s => s.metric.state === 'active'), 'connections by state')
})

t.test('points are typed: counts are integers in line protocol', async t => {
  const db = await createDatabase(t)
  await addDerps(db, { dog: 2 })
  const sinkFile = join(await mkdtemp(join(tmpdir(), 'sink-')), 'metrics.lp')
  const app = await buildTestApp(t, { DATABASE_URL: db, SINK_FILE: sinkFile }, { poll: false })
  const lines: string[] = []
  for (const m of app.scheduler.measurements) {
    await app.scheduler.pollOnce(m, points => lines.push(...points.map(p => `${p.measurement} ${JSON.stringify(p.fields, (_k, v) => typeof v === 'bigint' ? `${v}i` : v)}`)))
  }
  t.ok(lines.includes('derps {"count":"2i"}'))
  t.ok(lines.some(l => /^postgresql \{.*"xact_commit":"\d+i".*"blk_read_time":\d/.test(l)), 'int8 columns as integers, float8 as floats')
})

t.test('missing Django tables: reported once, polled again, the other pollers go on', async t => {
  const db = await createDatabase(t, { django: false })
  const vm = await startVictoriaMetrics(t)
  const logs: Array<{ level: number, msg: string, poller?: string }> = []
  const { Writable } = await import('node:stream')
  const stream = new Writable({ write (chunk, _e, done) { logs.push(JSON.parse(String(chunk))); done() } })
  const app = await buildTestApp(t, { DATABASE_URL: db, INFLUX_URL: vm.url, INFLUX_ORG: 'o', INFLUX_BUCKET: 'b', POLL_INTERVAL: '100ms' },
    { logger: { level: 'debug', stream } })

  await waitFor(() => (app.scheduler.stats.get('derps')?.errors ?? 0) >= 4, 'several failed derps polls')
  const warnings = logs.filter(l => l.level === 40 && l.poller === 'derps')
  t.equal(warnings.length, 1, 'the missing table is reported once')
  t.ok(logs.some(l => l.level === 20 && l.poller === 'derps'), 'later failures only at debug level')
  await waitFor(async () => (await vm.export('{__name__="postgresql_numbackends"}')).length > 0, 'postgresql points')
  t.pass('pg_stat_database is still polled')

  await sql(db, 'CREATE TABLE derps_derp (id serial PRIMARY KEY, species text NOT NULL)')
  await sql(db, `INSERT INTO derps_derp (species) VALUES ('axolotl')`)
  await waitFor(async () => latestBy(await vm.export('{__name__="derps_count"}'), 'species').axolotl === 1, 'derps once the table exists')
  t.ok(logs.some(l => l.level === 30 && l.poller === 'derps' && /works again/.test(l.msg)), 'recovery is logged')
})

t.test('custom SQL measurements stream through a cursor, read-only, with a statement timeout', async t => {
  const db = await createDatabase(t)
  const vm = await startVictoriaMetrics(t)
  await sql(db, 'CREATE TABLE orders (id serial PRIMARY KEY, shop text NOT NULL, total numeric NOT NULL, paid boolean NOT NULL, note text)')
  await sql(db, `INSERT INTO orders (shop, total, paid, note) SELECT 'shop' || (g % 1500), g * 1.5, g % 2 = 0, 'n' || g FROM generate_series(1, 3000) g`)
  const dir = await mkdtemp(join(tmpdir(), 'sidecar-'))
  const configFile = join(dir, 'sidecar.json')
  await writeFile(configFile, JSON.stringify({
    pollTimeout: '300ms',
    disable: ['postgresql', 'postgresql_activity', 'django_sessions', 'django_users'],
    sqlMeasurements: [
      { measurement: 'shop_orders', sql: 'SELECT shop, count(*) AS orders, sum(total) AS revenue, bool_and(paid) AS all_paid FROM orders GROUP BY shop', tags: ['shop'] },
      { measurement: 'slow', sql: 'SELECT pg_sleep(5) IS NULL AS slept' },
      { measurement: 'sneaky', sql: 'INSERT INTO orders (shop, total, paid) VALUES (\'x\', 1, true) RETURNING id' }
    ]
  }))
  const app = await buildTestApp(t, { DATABASE_URL: db, INFLUX_URL: vm.url, INFLUX_ORG: 'o', INFLUX_BUCKET: 'b', POLL_INTERVAL: '200ms', SIDECAR_CONFIG: configFile })

  const orders = await waitFor(async () => {
    const series = await vm.export('{__name__="shop_orders_orders"}')
    return series.length === 1500 ? series : undefined
  }, '1500 shop series')
  t.equal(orders.length, 1500, 'every row of a result larger than one cursor batch is a point')
  const revenue = latestBy(await vm.export('{__name__="shop_orders_revenue",shop="shop7"}'), 'shop')
  t.equal(revenue.shop7, 1.5 * (7 + 1507), 'numeric as float')
  t.equal((await vm.export('{__name__="shop_orders_all_paid",shop="shop0"}'))[0].values[0], 1, 'boolean field')

  await waitFor(() => (app.scheduler.stats.get('slow')?.errors ?? 0) > 0 && (app.scheduler.stats.get('sneaky')?.errors ?? 0) > 0, 'failures')
  t.match(app.scheduler.stats.get('slow')?.lastError, /statement timeout/)
  t.match(app.scheduler.stats.get('sneaky')?.lastError, /read-only transaction/)
  t.equal((await sql(db, 'SELECT count(*)::int AS n FROM orders')).rows[0].n, 3000, 'nothing was written to the app database')
  t.ok((app.scheduler.stats.get('derps')?.polls ?? 0) > 0, 'other pollers keep running')
})

t.test('config: listed values are written as 0, a fields list picks the fields, a measurement interval overrides POLL_INTERVAL', async t => {
  const db = await createDatabase(t)
  await addDerps(db, { dog: 2 })
  const dir = await mkdtemp(join(tmpdir(), 'sidecar-'))
  const configFile = join(dir, 'sidecar.json')
  await writeFile(configFile, JSON.stringify({
    disable: ['postgresql', 'postgresql_activity', 'django_sessions', 'django_users'],
    modelCounts: [{ measurement: 'derps', table: 'derps_derp', groupBy: 'species', values: ['dog', 'axolotl'], interval: '100ms' }],
    sqlMeasurements: [{ measurement: 'picked', sql: "SELECT 'a' AS k, 1 AS one, 2 AS two, 3 AS three", tags: ['k'], fields: ['two'] }]
  }))
  const app = await buildTestApp(t, { DATABASE_URL: db, SINK_FILE: join(dir, 'm.lp'), POLL_INTERVAL: '1h', SIDECAR_CONFIG: configFile })
  await waitFor(() => (app.scheduler.stats.get('derps')?.polls ?? 0) >= 5, 'derps polled every 100 ms')
  t.equal(app.scheduler.stats.get('picked')?.polls, 1, 'the other measurement keeps POLL_INTERVAL')
  const lines: string[] = []
  for (const m of app.scheduler.measurements) await app.scheduler.pollOnce(m, points => lines.push(...formatPoints(points).body.toString().trimEnd().split('\n')))
  t.same(lines.map(l => l.replace(/ \d{19}$/, '')).sort(), ['derps,species=axolotl count=0i', 'derps,species=dog count=2i', 'picked,k=a two=2i'])
})

t.test('a poll whose connection dies or goes silent fails, is counted, and the poller goes on', async t => {
  const db = await createDatabase(t, { django: false })
  const proxy = await TcpProxy.start({ host: '127.0.0.1', port: 5432 })
  t.teardown(async () => await proxy.down())
  const url = new URL(db)
  url.port = String(proxy.port)
  const dir = await mkdtemp(join(tmpdir(), 'sidecar-'))
  const configFile = join(dir, 'sidecar.json')
  await writeFile(configFile, JSON.stringify({
    pollTimeout: '1s',
    disable: ['postgresql', 'postgresql_activity', 'django_sessions', 'django_users'],
    modelCounts: [],
    sqlMeasurements: [{ measurement: 'sleepy', sql: 'SELECT pg_sleep(0.5) IS NULL AS s, 1 AS v' }]
  }))
  const app = await buildTestApp(t, { DATABASE_URL: url.href, SINK_FILE: join(dir, 'm.lp'), POLL_INTERVAL: '500ms', SIDECAR_CONFIG: configFile })
  const stats = (): PollerStats => app.scheduler.stats.get('sleepy') as PollerStats
  const sleeping = async (): Promise<number> => (await sql(db, "SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE '%pg_sleep(0.5)%' AND state = 'active' AND pid <> pg_backend_pid()")).rows[0].n as number

  // The backend is terminated mid-stream (a PostgreSQL restart or failover): the cursor's stream never ended.
  await waitFor(async () => await sleeping() === 1, 'a poll under way')
  await sql(db, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(0.5)%' AND state = 'active' AND pid <> pg_backend_pid()")
  await waitFor(() => stats().errors >= 1, 'the terminated poll to fail', 5000)
  // Usually at once; when the connection ends without a word to the query, the watchdog cuts it.
  t.match(stats().lastError, /Connection terminated|ECONNRESET|did not finish within 1500 ms/, String(stats().lastError))
  const afterTermination = stats().polls
  await waitFor(() => stats().polls >= afterTermination + 2 && stats().lastError === undefined, 'polls after it')

  // The network goes silent mid-poll: statement_timeout cannot help, the poll is cut at its next turn.
  await waitFor(async () => await sleeping() === 1, 'a poll under way')
  proxy.freeze()
  await waitFor(() => stats().lastError?.includes('did not finish within 1500 ms'), 'the silent poll to be cut', 5000)
  const afterSilence = stats().polls
  await waitFor(() => stats().polls >= afterSilence + 2 && stats().lastError === undefined, 'polls over new connections')
  t.ok(stats().polls >= afterSilence + 2, 'the poller went on over new connections')
})

t.test('a poller never overlaps itself, also when stopped and started again while a poll is under way', async t => {
  const db = await createDatabase(t)
  const dir = await mkdtemp(join(tmpdir(), 'sidecar-'))
  const configFile = join(dir, 'sidecar.json')
  await writeFile(configFile, JSON.stringify({
    disable: ['postgresql', 'postgresql_activity', 'django_sessions', 'django_users'],
    sqlMeasurements: [{ measurement: 'sleepy', sql: 'SELECT count(*) AS n FROM pg_stat_activity, pg_sleep(0.3) WHERE query LIKE \'%pg_sleep(0.3)%\' AND state = \'active\'' }]
  }))
  const app = await buildTestApp(t, { DATABASE_URL: db, SINK_FILE: join(dir, 'm.lp'), POLL_INTERVAL: '10ms', SIDECAR_CONFIG: configFile })
  const seen: bigint[] = []
  const measurement = app.scheduler.measurements.find(m => m.name === 'sleepy')
  t.ok(measurement)
  await waitFor(() => (app.scheduler.stats.get('sleepy')?.polls ?? 0) >= 4, 'four polls')
  // The leader loses the lock and takes it again before the stop is done: no second loop beside the first.
  for (let i = 0; i < 3; i++) {
    void app.scheduler.stop()
    app.scheduler.start()
    app.scheduler.start()
    await new Promise(resolve => setTimeout(resolve, 150))
  }
  await waitFor(() => (app.scheduler.stats.get('sleepy')?.polls ?? 0) >= 8, 'polls after the restarts')
  await app.scheduler.stop()
  await app.writer.close(Date.now() + 1000)
  const lines = (await import('node:fs')).readFileSync(join(dir, 'm.lp'), 'utf8')
  for (const match of lines.matchAll(/^sleepy n=(\d+)i/gm)) seen.push(BigInt(match[1]))
  t.ok(seen.length >= 4, 'every poll was written')
  t.ok(seen.every(n => n === 1n), `at most one sleepy poll runs at a time (${seen.join(',')})`)
  t.ok((app.scheduler.stats.get('sleepy')?.lastDurationMs ?? 0) >= 300)
})

t.test('estimate mode counts from planner statistics, close to the exact count', async t => {
  const db = await createDatabase(t)
  await addDerps(db, { dog: 3000, cat: 2000, axolotl: 500 })
  await sql(db, 'ANALYZE derps_derp')
  const dir = await mkdtemp(join(tmpdir(), 'sidecar-'))
  const configFile = join(dir, 'sidecar.json')
  await writeFile(configFile, JSON.stringify({
    disable: ['postgresql', 'postgresql_activity', 'django_sessions', 'django_users'],
    modelCounts: [
      { measurement: 'derps', table: 'derps_derp', groupBy: 'species' },
      { measurement: 'derps_estimated', table: 'public.derps_derp', groupBy: 'species', mode: 'estimate' }
    ]
  }))
  const app = await buildTestApp(t, { DATABASE_URL: db, SINK_FILE: join(dir, 'm.lp'), SIDECAR_CONFIG: configFile }, { poll: false })
  const counts: Record<string, Record<string, bigint>> = {}
  for (const m of app.scheduler.measurements) {
    await app.scheduler.pollOnce(m, points => {
      for (const p of points) (counts[p.measurement] ??= {})[p.tags?.species ?? ''] = p.fields.count as bigint
    })
  }
  t.same(counts.derps, { dog: 3000n, cat: 2000n, axolotl: 500n })
  for (const [species, exact] of Object.entries(counts.derps)) {
    const estimated = Number(counts.derps_estimated[species])
    t.ok(Math.abs(estimated - Number(exact)) <= Number(exact) * 0.05, `${species}: estimated ${estimated}, exact ${exact}`)
  }
})
