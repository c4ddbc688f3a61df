import { escapeIdentifier } from 'pg'
import type { ModelCountConfig } from '../src/config'
import type { Measurement } from './measurement'
import { toTagValue } from './measurement'
import { ZeroFill } from './zero-fill'

/** `public.derps_derp` → `"public"."derps_derp"` */
const quoteTable = (table: string): string => table.split('.').map(escapeIdentifier).join('.')

/** Rows of a model table counted per value of one column, e.g. derps by species: one GROUP BY query per poll. */
export function modelCount (config: ModelCountConfig, interval: number): Measurement {
  const tag = config.groupBy
  const sql = `SELECT ${escapeIdentifier(tag)} AS "group", count(*) AS "count" FROM ${quoteTable(config.table)} GROUP BY 1`
  const groups = new ZeroFill(tags => tags[tag], (config.values ?? []).map(value => ({ [tag]: value })))
  return {
    name: config.measurement,
    interval,
    async poll ({ client, timestamp, emit }) {
      const { rows } = await client.query<{ group: unknown, count: bigint }>(sql)
      const present = rows.map(row => ({ [tag]: toTagValue(row.group) }))
      const points = rows.map((row, i) => ({ measurement: config.measurement, tags: present[i], fields: { count: row.count }, timestamp }))
      for (const tags of groups.missing(present)) {
        points.push({ measurement: config.measurement, tags, fields: { count: 0n }, timestamp })
      }
      emit(points)
    }
  }
}
