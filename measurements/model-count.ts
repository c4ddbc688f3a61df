import { escapeIdentifier } from 'pg'
import type { ModelCountConfig } from '../src/config'
import type { Measurement } from './measurement'
import { toTagValue } from './measurement'
import { ZeroFill } from './zero-fill'

/** `public.derps_derp` → `"public"."derps_derp"` */
const quoteTable = (table: string): string => table.split('.').map(escapeIdentifier).join('.')

/**
 * The estimate: each most common value of the column in pg_stats, times the table's reltuples.
 * Its cost does not grow with the table; it is as fresh as the last ANALYZE (autovacuum), and
 * values too rare to be in the most-common list are not reported.
 */
const ESTIMATE_SQL = `SELECT u.v AS "group", round(u.f * greatest(c.reltuples, 0))::int8 AS "count"
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = $2 AND s.inherited = (c.relkind = 'p')
  CROSS JOIN LATERAL unnest(s.most_common_vals::text::text[], s.most_common_freqs) AS u(v, f)
  WHERE c.oid = $1::regclass`

/**
 * Rows of a model table counted per value of one column, e.g. derps by species: one GROUP BY query
 * per poll, or in `estimate` mode one look at the planner's statistics.
 */
export function modelCount (config: ModelCountConfig): Measurement {
  const tag = config.groupBy
  const estimate = config.mode === 'estimate'
  const sql = estimate ? ESTIMATE_SQL : `SELECT ${escapeIdentifier(tag)} AS "group", count(*) AS "count" FROM ${quoteTable(config.table)} GROUP BY 1`
  const params = estimate ? [quoteTable(config.table), tag] : []
  // An estimate leaves rare values out, so a missing group does not mean zero rows there.
  const groups = estimate ? undefined : new ZeroFill(tags => tags[tag], (config.values ?? []).map(value => ({ [tag]: value })))
  return {
    name: config.measurement,
    interval: config.interval,
    async poll ({ client, timestamp, emit }) {
      const { rows } = await client.query<{ group: unknown, count: bigint }>(sql, params)
      const present = rows.map(row => ({ [tag]: toTagValue(row.group) }))
      const points = rows.map((row, i) => ({ measurement: config.measurement, tags: present[i], fields: { count: row.count }, timestamp }))
      for (const tags of groups?.missing(present) ?? []) {
        points.push({ measurement: config.measurement, tags, fields: { count: 0n }, timestamp })
      }
      emit(points)
    }
  }
}
