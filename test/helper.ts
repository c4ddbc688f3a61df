import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import type { FastifyInstance } from 'fastify'
import { buildApp, type AppOptions } from '../src/app'
import { loadConfig } from '../src/config'
import { freePort, refusedPort, waitFor } from './wait'

export { freePort, refusedPort, waitFor }

type Test = { teardown: (fn: () => unknown) => void }

/** InfluxData's line-protocol conformance corpus, in the shared folder beside the repository. */
export const CORPUS_PATH = process.env.LP_CORPUS ?? join(__dirname, '..', '..', 'shared', 'conformance', 'line-protocol-corpus', 'corpus.json')

/** A superuser connection to the machine's PostgreSQL, used to create one database per test file. */
export const PG_ADMIN_URL = process.env.TEST_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres'

/** Runs SQL on a database (by URL) and closes the connection. */
export async function sql (url: string, text: string, values: unknown[] = []): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return await client.query(text, values)
  } finally {
    await client.end()
  }
}

/** A fresh database with the Django tables (auth_user, django_session, derps_derp), dropped after the test. */
export async function createDatabase (t: Test, { django = true } = {}): Promise<string> {
  const name = `sidecar_test_${randomBytes(6).toString('hex')}`
  await sql(PG_ADMIN_URL, `CREATE DATABASE ${name}`)
  t.teardown(async () => await sql(PG_ADMIN_URL, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
  const url = new URL(PG_ADMIN_URL)
  url.pathname = `/${name}`
  if (django) await sql(url.href, readFileSync(join(__dirname, 'fixtures', 'django-schema.sql'), 'utf8'))
  return url.href
}

/** Adds derps (and the owning user) the way the Django app would. */
export async function addDerps (url: string, species: Record<string, number>): Promise<void> {
  await sql(url, `INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, is_active, date_joined)
    VALUES ('!', false, 'owner', '', '', '', false, true, now()) ON CONFLICT (username) DO NOTHING`)
  for (const [name, count] of Object.entries(species)) {
    await sql(url, `INSERT INTO derps_derp (name, species, photo, created_at, owner_id)
      SELECT 'derp ' || g, $1, 'derps/' || g || '.jpg', now(), (SELECT id FROM auth_user WHERE username = 'owner')
      FROM generate_series(1, $2::int) g`, [name, count])
  }
}

export interface Series { metric: Record<string, string>, values: number[], timestamps: number[] }

export interface VictoriaMetrics {
  url: string
  /** Every sample of the series matching a selector, e.g. `{__name__="derps_count"}`, once what was written is visible. */
  export: (selector: string) => Promise<Series[]>
  stop: () => Promise<void>
  start: () => Promise<void>
}

/** A real InfluxDB-write-compatible store (SPEC §9) on a free port with its own data directory. */
export async function startVictoriaMetrics (t: Test): Promise<VictoriaMetrics> {
  const dir = await mkdtemp(join(tmpdir(), 'vm-'))
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  let child: ChildProcess | undefined
  const vm: VictoriaMetrics = {
    url,
    async start () {
      child = spawn('victoria-metrics', [
        `-storageDataPath=${dir}`, `-httpListenAddr=127.0.0.1:${port}`, '-retentionPeriod=100y', '-loggerLevel=ERROR'
      ], { stdio: 'ignore' })
      await waitFor(async () => (await fetch(`${url}/health`)).ok, 'VictoriaMetrics to start')
    },
    async stop () {
      const running = child
      child = undefined
      if (running === undefined || running.exitCode !== null) return
      await new Promise(resolve => running.once('exit', resolve).kill('SIGTERM'))
    },
    async export (selector) {
      await fetch(`${url}/internal/force_flush`)
      // A series VictoriaMetrics has just created shows in exports only about a second later.
      await new Promise(resolve => setTimeout(resolve, 1100))
      const response = await fetch(`${url}/api/v1/export`, { method: 'POST', body: new URLSearchParams({ 'match[]': selector }) })
      const text = await response.text()
      if (!response.ok) throw new Error(`export ${selector}: ${response.status} ${text}`)
      return text.split('\n').filter(line => line !== '').map(line => JSON.parse(line) as Series)
    }
  }
  t.teardown(async () => {
    await vm.stop()
    await rm(dir, { recursive: true, force: true })
  })
  await vm.start()
  return vm
}

/** The app as `npm start` builds it, from environment variables, closed after the test. */
export async function buildTestApp (t: Test, env: Record<string, string>, options: AppOptions = {}): Promise<FastifyInstance> {
  const app = await buildApp(loadConfig({ LOG_LEVEL: 'silent', ...env }), { logger: false, ...options })
  t.teardown(async () => await app.close())
  await app.ready()
  return app
}

/** The latest value of each series, keyed by one label's value. */
export function latestBy (series: Series[], label: string): Record<string, number> {
  return Object.fromEntries(series.map(s => [s.metric[label], s.values[s.values.length - 1]]))
}
