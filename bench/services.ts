/**
 * The services of the benchmark: VictoriaMetrics (the store both targets write to), vmagent (the
 * peer), the sidecar and the reference servers, each on a free loopback port with its own temporary
 * directory.
 */
import { execFileSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { freePort, start, stop, tempDir, waitFor, sleep, type Child } from './procs'
import type { ReferenceKind } from './reference'

export const ORG = 'bench'
export const BUCKET = 'bench'
/** Both targets take line protocol on InfluxDB's v2 write path. */
const WRITE_PATH = `/api/v2/write?org=${ORG}&bucket=${BUCKET}&precision=ns`

async function ok (url: string): Promise<boolean> {
  const response = await fetch(url)
  await response.arrayBuffer()
  return response.ok
}

export interface Store {
  child: Child
  url: string
  /** Samples of the series whose metric name matches `nameRegex`, once everything written is visible. */
  count: (nameRegex: string) => Promise<number>
  /** Samples inserted so far, all APIs (vm_rows_inserted_total): moves as soon as a write lands. */
  rowsInserted: () => Promise<number>
}

/** The write target (SPEC §9): `-retentionPeriod=100y`, no query cache and no latency offset, so counts are exact at once. */
export async function startVictoriaMetrics (cpu: string, logDir: string): Promise<Store> {
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  const child = start('victoria-metrics', cpu, 'victoria-metrics', [
    `-storageDataPath=${tempDir('vm-data')}`, `-httpListenAddr=127.0.0.1:${port}`, '-retentionPeriod=100y',
    '-loggerLevel=ERROR', '-search.latencyOffset=0s', '-search.disableCache'
  ], { logDir })
  await waitFor(async () => await ok(`${url}/health`), 'VictoriaMetrics to start', 30_000, child)
  return {
    child,
    url,
    async count (nameRegex) {
      await ok(`${url}/internal/force_flush`)
      // Series created in the last second are not searchable yet.
      await sleep(1200)
      // Everything written in the last 30 days (the line-protocol bodies go back at most a few days).
      const query = `sum(count_over_time({__name__=~"${nameRegex}"}[30d]))`
      const params = new URLSearchParams({ query, time: String(Date.now() / 1000 + 60), nocache: '1' })
      const response = await fetch(`${url}/api/v1/query`, { method: 'POST', body: params })
      const text = await response.text()
      if (!response.ok) throw new Error(`VictoriaMetrics query ${query}: ${response.status} ${text}`)
      const result = (JSON.parse(text) as { data: { result: Array<{ value: [number, string] }> } }).data.result
      return result.length === 0 ? 0 : Number(result[0].value[1])
    },
    async rowsInserted () {
      return await metricSum(`${url}/metrics`, 'vm_rows_inserted_total') ?? 0
    }
  }
}

export interface Target {
  name: 'sidecar' | 'vmagent' | ReferenceKind
  child: Child
  url: string
  /** Path (with query) that takes line protocol. */
  writePath: string
  /** Path that takes JSON beacons; without one, a beacon is sent as one line of line protocol. */
  beaconPath?: string
  /** Whether what it acknowledges should reach the store (false for the reference servers). */
  forwards: boolean
  /** Whether the target holds nothing it has not handed to the store (as far as its metrics tell). */
  drained: () => Promise<boolean>
}

/** Prometheus text → sum of the samples of one metric whose labels contain `labels` (any when ''). */
function sumOf (text: string, metric: string, labels = ''): number | undefined {
  let sum: number | undefined
  for (const line of text.split('\n')) {
    if (line.startsWith(metric) && (line[metric.length] === ' ' || line[metric.length] === '{') && line.includes(labels)) {
      sum = (sum ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1))
    }
  }
  return sum
}

async function metricSum (url: string, metric: string): Promise<number | undefined> {
  return sumOf(await (await fetch(url)).text(), metric)
}

/** Where the sidecar's memory is, from its prom-client default metrics (bytes). */
export async function sidecarMemory (target: Target): Promise<Record<string, number>> {
  const text = await (await fetch(`${target.url}/metrics`)).text()
  const space = (name: string): number => sumOf(text, 'nodejs_heap_space_size_total_bytes', `space="${name}"`) ?? 0
  return {
    heap: sumOf(text, 'nodejs_heap_size_total_bytes') ?? 0,
    new: space('new'),
    old: space('old'),
    large: space('large_object'),
    external: sumOf(text, 'nodejs_external_memory_bytes') ?? 0
  }
}

export async function startVmagent (cpu: string, logDir: string, storeUrl: string): Promise<Target> {
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  const child = start('vmagent', cpu, 'vmagent', [
    `-httpListenAddr=127.0.0.1:${port}`, `-remoteWrite.url=${storeUrl}/api/v1/write`,
    `-remoteWrite.tmpDataPath=${tempDir('vmagent-queue')}`, '-loggerLevel=ERROR'
  ], { logDir })
  await waitFor(async () => await ok(`${url}/health`), 'vmagent to start', 30_000, child)
  return {
    name: 'vmagent',
    child,
    url,
    writePath: WRITE_PATH,
    forwards: true,
    async drained () {
      // vmagent keeps what it could not send yet in its queue (memory, then -remoteWrite.tmpDataPath);
      // samples not yet packed into a block (up to -remoteWrite.flushInterval, 1 s) do not show here.
      return (await metricSum(`${url}/metrics`, 'vmagent_remotewrite_pending_data_bytes') ?? 0) === 0
    }
  }
}

export interface SidecarOptions {
  cpu: string
  logDir: string
  storeUrl: string
  databaseUrl: string
  /** Extra node flags, e.g. --cpu-prof. */
  nodeArgs?: string[]
  /** SIDECAR_CONFIG contents. */
  fileConfig: Record<string, unknown>
  /** The entry point, relative to the project (dist/src/server.js), or absolute. */
  entry: string
  /** More environment variables (BUFFER_POINTS, MALLOC_ARENA_MAX, …). */
  extraEnv: Record<string, string>
}

/** The sidecar runs as `npm start` and the image run it (package.json, Dockerfile); the benchmark measures that. */
export const RUNTIME_NODE_ARGS = ['--max-semi-space-size=2']
export const RUNTIME_ENV = { MALLOC_ARENA_MAX: '2' }

export async function startSidecar (options: SidecarOptions): Promise<Target> {
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  const configFile = join(tempDir('sidecar-config'), 'sidecar.json')
  writeFileSync(configFile, JSON.stringify(options.fileConfig))
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    HOST: '127.0.0.1',
    PORT: String(port),
    INFLUX_URL: options.storeUrl,
    INFLUX_ORG: ORG,
    INFLUX_BUCKET: BUCKET,
    LOG_LEVEL: 'warn',
    DATABASE_URL: options.databaseUrl,
    POLL_INTERVAL: '1h',
    SIDECAR_CONFIG: configFile,
    ...RUNTIME_ENV
  }
  Object.assign(env, options.extraEnv)
  // Later flags win: BENCH_SIDECAR_NODE_ARGS can override the runtime's.
  const child = start('sidecar', options.cpu, process.execPath, [...RUNTIME_NODE_ARGS, ...(options.nodeArgs ?? []), options.entry], {
    env, cwd: join(__dirname, '..', '..'), logDir: options.logDir
  })
  await waitFor(async () => await ok(`${url}/health`), 'the sidecar to start', 30_000, child)
  return {
    name: 'sidecar',
    child,
    url,
    writePath: WRITE_PATH,
    beaconPath: '/beacons',
    forwards: true,
    async drained () {
      return (await metricSum(`${url}/metrics`, 'sidecar_buffer_points')) === 0
    }
  }
}

/**
 * A reference server (bench/reference.ts) run with the sidecar's runtime flags and, for the one that
 * delivers, the sidecar's sink settings: the same request, less around it.
 */
export async function startReference (kind: ReferenceKind, cpu: string, logDir: string, storeUrl: string): Promise<Target> {
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  const child = start(kind, cpu, process.execPath, [...RUNTIME_NODE_ARGS, join(__dirname, 'reference.js'), kind, String(port)], {
    // As clean as the sidecar's: a HOST, token or SIDECAR_CONFIG of the caller's must not reach loadConfig().
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...RUNTIME_ENV, INFLUX_URL: storeUrl, INFLUX_ORG: ORG, INFLUX_BUCKET: BUCKET, LOG_LEVEL: 'warn' }, logDir
  })
  await waitFor(async () => await ok(`${url}/health`), `the ${kind} reference server to start`, 30_000, child)
  return { name: kind, child, url, writePath: '', beaconPath: '/beacons', forwards: false, drained: async () => true }
}

/** The sidecar's own counters (GET /metrics). */
export async function sidecarCounters (target: Target): Promise<{ accepted: number, written: number, dropped: number, retries: number }> {
  const m = async (name: string): Promise<number> => await metricSum(`${target.url}/metrics`, name) ?? 0
  return {
    accepted: await m('sidecar_points_accepted_total'),
    written: await m('sidecar_points_written_total'),
    dropped: await m('sidecar_points_dropped_total'),
    retries: await m('sidecar_write_retries_total')
  }
}

export { stop }

/** vmagent's version: its vm_app_version metric, else the Debian package's. */
export async function vmagentVersion (target: Target): Promise<string> {
  const text = await (await fetch(`${target.url}/metrics`)).text()
  const version = /vm_app_version\{version="([^"]*)"/.exec(text)?.[1]
  let pkg = ''
  try {
    pkg = execFileSync('dpkg-query', ['-W', '-f=${Version}', 'victoria-metrics'], { encoding: 'utf8' })
  } catch {}
  return [version !== undefined && version !== '' ? version : undefined, pkg !== '' ? `Debian victoria-metrics ${pkg}` : undefined].filter(Boolean).join(', ') || 'unknown'
}
