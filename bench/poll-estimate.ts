/**
 * npm run bench:poll — what one derps poll costs PostgreSQL, exact (count(*) … GROUP BY) against
 * estimate (planner statistics), on a table of BENCH_ROWS rows (default 5,000,000). Creates a
 * throwaway database, fills it, ANALYZEs, times each mode's query over several runs, drops it.
 */
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { modelCount } from '../measurements/model-count'
import type { PollContext } from '../measurements/measurement'

const ADMIN_URL = process.env.BENCH_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres'
const ROWS = Number(process.env.BENCH_ROWS ?? 5_000_000)
const RUNS = 5

async function timed (client: pg.Client, mode: 'exact' | 'estimate'): Promise<{ ms: number[], counts: Map<string, bigint> }> {
  const measurement = modelCount({ measurement: 'derps', table: 'derps_derp', groupBy: 'species', mode, interval: 1000 })
  const ms: number[] = []
  const counts = new Map<string, bigint>()
  for (let i = 0; i < RUNS; i++) {
    const started = performance.now()
    await measurement.poll({
      client: client as unknown as PollContext['client'],
      timestamp: '0',
      signal: new AbortController().signal,
      emit: points => { for (const p of points) counts.set(p.tags?.species ?? '', BigInt(p.fields.count as bigint)) }
    })
    ms.push(performance.now() - started)
  }
  return { ms: ms.sort((a, b) => a - b), counts }
}

async function main (): Promise<void> {
  const name = `sidecar_bench_${randomBytes(4).toString('hex')}`
  const admin = new pg.Client({ connectionString: ADMIN_URL })
  await admin.connect()
  await admin.query(`CREATE DATABASE ${name}`)
  const url = new URL(ADMIN_URL)
  url.pathname = `/${name}`
  const client = new pg.Client({ connectionString: url.href, types: { getTypeParser: (oid: number) => oid === 20 ? BigInt : pg.types.getTypeParser(oid) } as pg.CustomTypesConfig })
  try {
    await client.connect()
    const fillStarted = Date.now()
    await client.query('CREATE TABLE derps_derp (id bigserial PRIMARY KEY, name varchar(100) NOT NULL, species varchar(50) NOT NULL)')
    await client.query(`INSERT INTO derps_derp (name, species)
      SELECT 'derp ' || g, (ARRAY['dog','cat','ferret','axolotl','corgi','pug','tabby','husky'])[1 + ((g::int8 * 7919) % 11) % 8] FROM generate_series(1, $1::int) g`, [ROWS])
    await client.query('ANALYZE derps_derp')
    const size = (await client.query<{ size: string }>("SELECT pg_size_pretty(pg_total_relation_size('derps_derp')) AS size")).rows[0].size
    console.log(`table derps_derp: ${ROWS.toLocaleString('en')} rows, ${size}, filled in ${((Date.now() - fillStarted) / 1000).toFixed(1)} s`)

    const exact = await timed(client, 'exact')
    const estimate = await timed(client, 'estimate')
    const median = (ms: number[]): string => ms[Math.floor(ms.length / 2)].toFixed(2)
    console.log('\nmode      median ms   min ms   max ms   (one poll, 5 runs)')
    for (const [mode, r] of [['exact', exact], ['estimate', estimate]] as const) {
      console.log(`${mode.padEnd(9)} ${median(r.ms).padStart(9)} ${r.ms[0].toFixed(2).padStart(8)} ${r.ms[r.ms.length - 1].toFixed(2).padStart(8)}`)
    }
    console.log(`speed-up: ${(Number(median(exact.ms)) / Number(median(estimate.ms))).toFixed(0)}×`)
    console.log('\nspecies   exact      estimate   error')
    for (const [species, n] of exact.counts) {
      const e = estimate.counts.get(species) ?? 0n
      console.log(`${species.padEnd(9)} ${String(n).padStart(9)} ${String(e).padStart(10)}   ${(100 * (Number(e) - Number(n)) / Number(n)).toFixed(2)}%`)
    }
  } finally {
    await client.end().catch(() => {})
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    await admin.end()
  }
}

main().catch(err => {
  console.error(err)
  process.exitCode = 1
})
