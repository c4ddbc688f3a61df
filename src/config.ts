import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import envSchema from 'env-schema'
import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { DURATION_PATTERN, MAX_DURATION_MS, parseDuration } from './duration'

/** Thrown for any bad setting; its message is the one line start-up prints. */
export class ConfigError extends Error {
  name = 'ConfigError'
}

const DURATION_MESSAGE = 'must be a duration like 500ms, 10s or 1m, more than 0'
const URL_PATTERN = '^https?://[^\\s]+$'
const Duration = (defaultValue: string) => Type.String({ pattern: DURATION_PATTERN, default: defaultValue })
const Optional = Type.Optional
const NonEmpty = Type.String({ minLength: 1 })

const EnvSchema = Type.Object({
  HOST: Type.String({ default: '127.0.0.1' }),
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 8186 }),
  DATABASE_URL: Optional(NonEmpty),
  INFLUX_URL: Optional(Type.String({ pattern: URL_PATTERN })),
  INFLUX_TOKEN: Optional(NonEmpty),
  INFLUX_ORG: Optional(NonEmpty),
  INFLUX_BUCKET: Optional(NonEmpty),
  SINK_FILE: Type.String({ minLength: 1, default: './metrics.lp' }),
  POLL_INTERVAL: Duration('10s'),
  SIDECAR_CONFIG: Optional(NonEmpty),
  WRITE_TOKEN: Optional(NonEmpty),
  QUERY_TOKEN: Optional(NonEmpty),
  SPOOL_DIR: Optional(NonEmpty),
  BUFFER_POINTS: Type.Integer({ minimum: 1, default: 100_000 }),
  QUERY_TIMEOUT: Duration('30s'),
  LOG_LEVEL: Type.Unsafe<string>({ type: 'string', enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info' })
})

const Identifier = Type.String({ minLength: 1, maxLength: 200 })

const ModelCountSchema = Type.Object({
  measurement: Identifier,
  table: Identifier,
  groupBy: Identifier,
  /** Group values always written, with count=0 when they have no rows. */
  values: Optional(Type.Array(Type.String({ minLength: 1 }))),
  interval: Optional(Type.String({ pattern: DURATION_PATTERN })),
  /** `exact` (count(*) … GROUP BY) or `estimate` (planner statistics; cost independent of the table size). */
  mode: Optional(Type.Union([Type.Literal('exact'), Type.Literal('estimate')]))
}, { additionalProperties: false })

const SqlMeasurementSchema = Type.Object({
  measurement: Identifier,
  sql: NonEmpty,
  /** Columns written as tags; every other column is a field. */
  tags: Optional(Type.Array(Identifier)),
  /** Columns written as fields (default: every column that is not a tag). */
  fields: Optional(Type.Array(Identifier)),
  interval: Optional(Type.String({ pattern: DURATION_PATTERN }))
}, { additionalProperties: false })

const NamedQuerySchema = Type.Object({
  /** Flux script; `{{bucket}}` stands for INFLUX_BUCKET. */
  flux: NonEmpty,
  /** How long a result is served from the cache. */
  ttl: Optional(Type.String({ pattern: DURATION_PATTERN }))
}, { additionalProperties: false })

const FileSchema = Type.Object({
  modelCounts: Optional(Type.Array(ModelCountSchema)),
  sqlMeasurements: Optional(Type.Array(SqlMeasurementSchema)),
  /** Built-in pollers to switch off, by measurement name. */
  disable: Optional(Type.Array(Type.Union(['postgresql', 'postgresql_activity', 'django_sessions', 'django_users'].map(n => Type.Literal(n))))),
  pollTimeout: Optional(Type.String({ pattern: DURATION_PATTERN })),
  batchSize: Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
  flushInterval: Optional(Type.String({ pattern: DURATION_PATTERN })),
  /** Batches sent to InfluxDB before the first of them is answered (1: strictly in order). */
  batchesInFlight: Optional(Type.Integer({ minimum: 1, maximum: 16 })),
  maxRetryDelay: Optional(Type.String({ pattern: DURATION_PATTERN })),
  bodyLimit: Optional(Type.Integer({ minimum: 1024 })),
  /** Longest a client may take to send a whole request (slow clients are cut off). */
  requestTimeout: Optional(Type.String({ pattern: DURATION_PATTERN })),
  /** Most bytes the memory buffer holds (with BUFFER_POINTS); past it pushes get 429. */
  bufferMaxBytes: Optional(Type.Integer({ minimum: 1024 * 1024 })),
  /** Largest size of SPOOL_DIR's segment files, in bytes; past it pushes get 429. */
  spoolMaxBytes: Optional(Type.Integer({ minimum: 1024 * 1024 })),
  /** Named Flux queries served at GET /queries/:name, added to (or replacing) the built-in ones. */
  queries: Optional(Type.Record(Type.String({ pattern: '^[A-Za-z0-9_-]{1,100}$' }), NamedQuerySchema))
}, { additionalProperties: false })

type FileConfig = Static<typeof FileSchema>
/** A configured poller with its interval in milliseconds: its own, or POLL_INTERVAL. */
type Polled<T extends { interval?: string }> = Omit<T, 'interval'> & { interval: number }
export type ModelCountConfig = Polled<Static<typeof ModelCountSchema>>
export type SqlMeasurementConfig = Polled<Static<typeof SqlMeasurementSchema>>
export type BuiltinPoller = NonNullable<FileConfig['disable']>[number]

export interface NamedQuery { flux: string, /** ms */ ttl: number }

/** The seed's total derp count over the last minute (SPEC §6). */
const DERPS_TOTAL_FLUX = `from(bucket: "{{bucket}}")
  |> range(start: -60s)
  |> filter(fn: (r) => r._measurement == "derps" and r._field == "count")
  |> group(columns: ["_time"])
  |> sum()`

const DEFAULT_QUERY_TTL = '10s'

const DEFAULT_MODEL_COUNTS: NonNullable<FileConfig['modelCounts']> = [{ measurement: 'derps', table: 'derps_derp', groupBy: 'species' }]

export interface Config {
  host: string
  port: number
  databaseUrl?: string
  influx?: { url: string, token?: string, org: string, bucket: string }
  sinkFile: string
  writeToken?: string
  queryToken?: string
  spoolDir?: string
  logLevel: string
  /** Milliseconds. */
  pollInterval: number
  pollTimeout: number
  queryTimeout: number
  flushInterval: number
  maxRetryDelay: number
  bufferPoints: number
  bufferMaxBytes: number
  batchSize: number
  batchesInFlight: number
  bodyLimit: number
  requestTimeout: number
  spoolMaxBytes: number
  modelCounts: ModelCountConfig[]
  sqlMeasurements: SqlMeasurementConfig[]
  disabledPollers: BuiltinPoller[]
  namedQueries: Record<string, NamedQuery>
}

interface AjvError { instancePath: string, message?: string, params?: Record<string, unknown> }

/** Milliseconds of a duration that matched DURATION_PATTERN, or a ConfigError naming `where`. */
function duration (where: string, text: string): number {
  const ms = parseDuration(text)
  if (ms > MAX_DURATION_MS) throw new ConfigError(`${where} must be at most ${Math.floor(MAX_DURATION_MS / 3_600_000)}h (got "${text}")`)
  return ms
}

function envError (error: Error & { errors?: AjvError[] }, env: NodeJS.ProcessEnv): ConfigError {
  const first = error.errors?.[0]
  if (first === undefined) return new ConfigError(error.message)
  const name = first.instancePath.replace(/^\//, '')
  const got = env[name] === undefined ? '' : ` (got ${JSON.stringify(env[name])})`
  let message = first.params?.pattern === DURATION_PATTERN ? DURATION_MESSAGE : first.message
  if (first.params?.pattern === URL_PATTERN) message = 'must be an http:// or https:// URL'
  if (Array.isArray(first.params?.allowedValues)) message = `must be one of ${first.params.allowedValues.join(', ')}`
  return new ConfigError(`${name} ${message ?? 'is invalid'}${got}`)
}

function readFileConfig (path: string): FileConfig {
  let parsed: unknown
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'))
  } catch (err) {
    throw new ConfigError(`SIDECAR_CONFIG ${path}: ${(err as Error).message}`)
  }
  const first = Value.Errors(FileSchema, parsed).First()
  if (first !== undefined) {
    const message = (first.schema as { pattern?: string }).pattern === DURATION_PATTERN ? `${DURATION_MESSAGE} (got ${JSON.stringify(first.value)})` : first.message
    throw new ConfigError(`SIDECAR_CONFIG ${path}: ${first.path === '' ? '/' : first.path} ${message}`)
  }
  return parsed as FileConfig
}

function namedQueries (fromFile: NonNullable<FileConfig['queries']>, bucket = '', inFile: (key: string) => string): Record<string, NamedQuery> {
  const all: Record<string, { flux: string, ttl?: string }> = { 'derps-total': { flux: DERPS_TOTAL_FLUX }, ...fromFile }
  return Object.fromEntries(Object.entries(all).map(([name, q]) => [name, {
    flux: q.flux.replaceAll('{{bucket}}', bucket.replaceAll('\\', '\\\\').replaceAll('"', '\\"')),
    ttl: duration(inFile(`queries/${name}/ttl`), q.ttl ?? DEFAULT_QUERY_TTL)
  }]))
}

const isLoopback = (host: string): boolean =>
  host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'))

/** Validates the environment (and the SIDECAR_CONFIG file it names) once, into one typed object. */
export function loadConfig (env: NodeJS.ProcessEnv = process.env): Config {
  let e: Static<typeof EnvSchema>
  try {
    e = envSchema<Static<typeof EnvSchema>>({ schema: EnvSchema, data: env, env: false })
  } catch (err) {
    throw envError(err as Error, env)
  }
  if (!isLoopback(e.HOST) && e.WRITE_TOKEN === undefined) {
    throw new ConfigError(`HOST=${e.HOST} is not a loopback address: set WRITE_TOKEN so the push endpoints are not open to the network`)
  }
  if (!isLoopback(e.HOST) && e.INFLUX_URL !== undefined && e.QUERY_TOKEN === undefined) {
    throw new ConfigError(`HOST=${e.HOST} is not a loopback address: set QUERY_TOKEN so the Flux proxy does not run anyone's query with INFLUX_TOKEN`)
  }
  if (e.INFLUX_URL !== undefined) {
    for (const name of ['INFLUX_ORG', 'INFLUX_BUCKET'] as const) {
      if (e[name] === undefined) throw new ConfigError(`${name} must be set when INFLUX_URL is set`)
    }
  }
  if (e.INFLUX_URL !== undefined && !URL.canParse(e.INFLUX_URL)) throw new ConfigError(`INFLUX_URL is not a valid URL (got ${JSON.stringify(e.INFLUX_URL)})`)
  const file: FileConfig = e.SIDECAR_CONFIG === undefined ? {} : readFileConfig(e.SIDECAR_CONFIG)
  const inFile = (key: string): string => `SIDECAR_CONFIG ${e.SIDECAR_CONFIG ?? ''}: /${key}`
  const pollInterval = duration('POLL_INTERVAL', e.POLL_INTERVAL)
  const polled = <T extends { interval?: string }>(list: string, items: T[]): Array<Polled<T>> =>
    items.map((item, i) => ({ ...item, interval: item.interval === undefined ? pollInterval : duration(inFile(`${list}/${i}/interval`), item.interval) }))
  return {
    host: e.HOST,
    port: e.PORT,
    databaseUrl: e.DATABASE_URL,
    influx: e.INFLUX_URL === undefined
      ? undefined
      : { url: e.INFLUX_URL, token: e.INFLUX_TOKEN, org: e.INFLUX_ORG as string, bucket: e.INFLUX_BUCKET as string },
    sinkFile: e.SINK_FILE,
    writeToken: e.WRITE_TOKEN,
    queryToken: e.QUERY_TOKEN,
    spoolDir: e.SPOOL_DIR,
    logLevel: e.LOG_LEVEL,
    pollInterval,
    pollTimeout: duration(inFile('pollTimeout'), file.pollTimeout ?? '5s'),
    queryTimeout: duration('QUERY_TIMEOUT', e.QUERY_TIMEOUT),
    flushInterval: duration(inFile('flushInterval'), file.flushInterval ?? '1s'),
    maxRetryDelay: duration(inFile('maxRetryDelay'), file.maxRetryDelay ?? '30s'),
    bufferPoints: e.BUFFER_POINTS,
    bufferMaxBytes: file.bufferMaxBytes ?? 32 * 1024 * 1024,
    batchSize: file.batchSize ?? 5000,
    batchesInFlight: file.batchesInFlight ?? 2,
    bodyLimit: file.bodyLimit ?? 32 * 1024 * 1024,
    requestTimeout: duration(inFile('requestTimeout'), file.requestTimeout ?? '30s'),
    spoolMaxBytes: file.spoolMaxBytes ?? 1024 * 1024 * 1024,
    modelCounts: polled('modelCounts', file.modelCounts ?? DEFAULT_MODEL_COUNTS),
    sqlMeasurements: polled('sqlMeasurements', file.sqlMeasurements ?? []),
    disabledPollers: file.disable ?? [],
    namedQueries: namedQueries(file.queries ?? {}, e.INFLUX_BUCKET, inFile)
  }
}
