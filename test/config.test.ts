import t from 'tap'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigError, loadConfig } from '../src/config'

const failure = (env: Record<string, string>): string => {
  try {
    loadConfig(env)
  } catch (err) {
    if (err instanceof ConfigError) return err.message
    throw err
  }
  throw new Error('expected a ConfigError')
}

t.test('defaults are the embedded ones of SPEC §2', async t => {
  const config = loadConfig({})
  t.match(config, {
    host: '127.0.0.1',
    port: 8186,
    sinkFile: './metrics.lp',
    influx: undefined,
    pollInterval: 10_000,
    queryTimeout: 30_000,
    bufferPoints: 100_000,
    logLevel: 'info',
    modelCounts: [{ measurement: 'derps', table: 'derps_derp', groupBy: 'species' }]
  })
  t.match(config.namedQueries['derps-total'].flux, /r._measurement == "derps"/)
})

t.test('durations accept ms, s, m and h', async t => {
  t.equal(loadConfig({ POLL_INTERVAL: '500ms' }).pollInterval, 500)
  t.equal(loadConfig({ POLL_INTERVAL: '1m' }).pollInterval, 60_000)
  t.equal(loadConfig({ QUERY_TIMEOUT: '2h' }).queryTimeout, 7_200_000)
})

t.test('a bad variable is one line naming it and the value', async t => {
  t.equal(failure({ PORT: 'notaport' }), 'PORT must be integer (got "notaport")')
  t.equal(failure({ PORT: '70000' }), 'PORT must be <= 65535 (got "70000")')
  t.equal(failure({ POLL_INTERVAL: '10' }), 'POLL_INTERVAL must be a duration like 500ms, 10s or 1m, more than 0 (got "10")')
  // 0 would poll without pause; past 2^31 - 1 ms a Node.js timer fires at once, which is the same.
  t.equal(failure({ POLL_INTERVAL: '0s' }), 'POLL_INTERVAL must be a duration like 500ms, 10s or 1m, more than 0 (got "0s")')
  t.equal(failure({ POLL_INTERVAL: '600h' }), 'POLL_INTERVAL must be at most 596h (got "600h")')
  t.equal(failure({ QUERY_TIMEOUT: '0ms' }), 'QUERY_TIMEOUT must be a duration like 500ms, 10s or 1m, more than 0 (got "0ms")')
  t.equal(loadConfig({ POLL_INTERVAL: '596h' }).pollInterval, 596 * 3_600_000)
  t.equal(failure({ BUFFER_POINTS: '0' }), 'BUFFER_POINTS must be >= 1 (got "0")')
  t.match(failure({ LOG_LEVEL: 'loud' }), /^LOG_LEVEL must be one of fatal, error, warn, info, debug/)
  t.equal(failure({ INFLUX_URL: 'influx:8086' }), 'INFLUX_URL must be an http:// or https:// URL (got "influx:8086")')
  t.equal(failure({ INFLUX_URL: 'http://[bad', INFLUX_ORG: 'o', INFLUX_BUCKET: 'b' }), 'INFLUX_URL is not a valid URL (got "http://[bad")')
  t.equal(failure({ INFLUX_URL: 'http://influx:8086', INFLUX_ORG: 'o' }), 'INFLUX_BUCKET must be set when INFLUX_URL is set')
  for (const message of [failure({ PORT: 'x' }), failure({ HOST: '0.0.0.0' })]) t.notMatch(message, /\n/)
})

t.test('a non-loopback HOST needs WRITE_TOKEN, and QUERY_TOKEN when there is an InfluxDB to query', async t => {
  t.match(failure({ HOST: '0.0.0.0' }), /^HOST=0.0.0.0 is not a loopback address: set WRITE_TOKEN/)
  t.equal(loadConfig({ HOST: '0.0.0.0', WRITE_TOKEN: 'secret' }).host, '0.0.0.0')
  // With InfluxDB behind it, the raw Flux proxy would run anyone's Flux with INFLUX_TOKEN.
  const influx = { INFLUX_URL: 'http://influx:8086', INFLUX_ORG: 'o', INFLUX_BUCKET: 'b', INFLUX_TOKEN: 'all-access' }
  t.equal(failure({ HOST: '0.0.0.0', WRITE_TOKEN: 'secret', ...influx }), 'HOST=0.0.0.0 is not a loopback address: set QUERY_TOKEN so the Flux proxy does not run anyone\'s query with INFLUX_TOKEN')
  t.equal(loadConfig({ HOST: '0.0.0.0', WRITE_TOKEN: 'secret', QUERY_TOKEN: 'dashboards', ...influx }).queryToken, 'dashboards')
  t.equal(loadConfig({ HOST: '127.0.0.1', ...influx }).queryToken, undefined, 'on loopback the proxy may stay open')
  t.equal(loadConfig({ HOST: 'localhost' }).host, 'localhost')
  t.equal(loadConfig({ HOST: '::1' }).host, '::1')
})

t.test('SIDECAR_CONFIG adds model counts, SQL measurements and named queries', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'sidecar-config-'))
  const path = join(dir, 'sidecar.json')
  await writeFile(path, JSON.stringify({
    modelCounts: [{ measurement: 'derps', table: 'derps_derp', groupBy: 'species', values: ['dog', 'cat'] }],
    sqlMeasurements: [{ measurement: 'orders', sql: 'SELECT 1 AS n', interval: '1m' }],
    queries: { species: { flux: 'from(bucket: "{{bucket}}") |> range(start: -1h)', ttl: '5s' } }
  }))
  const config = loadConfig({ SIDECAR_CONFIG: path, INFLUX_URL: 'http://influx:8086', INFLUX_ORG: 'o', INFLUX_BUCKET: 'app' })
  t.same(config.modelCounts[0].values, ['dog', 'cat'])
  t.equal(config.sqlMeasurements[0].sql, 'SELECT 1 AS n')
  t.same(config.namedQueries.species, { flux: 'from(bucket: "app") |> range(start: -1h)', ttl: 5000 })
  t.ok(config.namedQueries['derps-total'], 'the built-in query stays')

  await writeFile(path, JSON.stringify({ modelCounts: [{ measurement: 'derps', table: 42 }] }))
  t.match(failure({ SIDECAR_CONFIG: path }), new RegExp(`^SIDECAR_CONFIG ${path}: /modelCounts/0/`))
  await writeFile(path, JSON.stringify({ batchesInFlight: 3 }))
  t.equal(loadConfig({ SIDECAR_CONFIG: path }).batchesInFlight, 3)
  t.equal(loadConfig({}).batchesInFlight, 2, 'two batches in flight by default')
  await writeFile(path, JSON.stringify({ batchesInFlight: 0 }))
  t.match(failure({ SIDECAR_CONFIG: path }), new RegExp(`^SIDECAR_CONFIG ${path}: /batchesInFlight Expected integer to be greater or equal to 1`))
  for (const [key, value, message] of [
    ['pollTimeout', '0s', 'must be a duration like 500ms, 10s or 1m, more than 0 (got "0s")'],
    ['requestTimeout', '1000h', 'must be at most 596h (got "1000h")']
  ]) {
    await writeFile(path, JSON.stringify({ [key]: value }))
    t.equal(failure({ SIDECAR_CONFIG: path }), `SIDECAR_CONFIG ${path}: /${key} ${message}`, 'statement_timeout 0 would switch the timeout off')
  }
  await writeFile(path, JSON.stringify({ modelCounts: [{ measurement: 'm', table: 't', groupBy: 'g', interval: '700h' }], queries: { q: { flux: 'x', ttl: '0s' } } }))
  t.equal(failure({ SIDECAR_CONFIG: path }), `SIDECAR_CONFIG ${path}: /queries/q/ttl must be a duration like 500ms, 10s or 1m, more than 0 (got "0s")`)
  await writeFile(path, JSON.stringify({ modelCounts: [{ measurement: 'm', table: 't', groupBy: 'g', interval: '700h' }] }))
  t.equal(failure({ SIDECAR_CONFIG: path }), `SIDECAR_CONFIG ${path}: /modelCounts/0/interval must be at most 596h (got "700h")`)
  await writeFile(path, '{ not json')
  t.match(failure({ SIDECAR_CONFIG: path }), /^SIDECAR_CONFIG .*JSON/)
  t.match(failure({ SIDECAR_CONFIG: join(dir, 'missing.json') }), /ENOENT/)
})
