import type { Measurement } from './measurement'
import { toFieldValue } from './measurement'
import type { FieldValue } from '../src/line-protocol/point'

/**
 * `postgresql`: every row of pg_stat_database, its numeric columns as fields under their own
 * names and `datname` as the `db` tag — the same shape as Telegraf's `inputs.postgresql`, so its
 * community dashboards work. `server` describes the connection without its password.
 * The row of shared objects (datid 0, no datname, PostgreSQL 12+) is tagged `postgres_global`, as
 * Telegraf tags it: untagged, it would be a series no per-database query selects.
 */
export function pgStatDatabase (server: string, interval: number): Measurement {
  return {
    name: 'postgresql',
    interval,
    async poll ({ client, timestamp, emit }) {
      const { rows } = await client.query<Record<string, unknown>>('SELECT * FROM pg_stat_database')
      emit(rows.map(row => {
        const fields: Record<string, FieldValue> = {}
        for (const [column, value] of Object.entries(row)) {
          const field = column === 'datname' ? undefined : toFieldValue(value)
          if (field !== undefined) fields[column] = field
        }
        const db = typeof row.datname === 'string' ? row.datname : 'postgres_global'
        return { measurement: 'postgresql', tags: { db, server }, fields, timestamp }
      }))
    }
  }
}
