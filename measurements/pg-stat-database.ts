import type { Measurement } from './measurement'
import { toFieldValue } from './measurement'
import type { FieldValue } from '../src/line-protocol/point'

/**
 * `postgresql`: every row of pg_stat_database, its numeric columns as fields under their own
 * names and `datname` as the `db` tag — the same shape as Telegraf's `inputs.postgresql`, so its
 * community dashboards work. `server` describes the connection without its password.
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
        const tags: Record<string, string> = { server }
        if (typeof row.datname === 'string') tags.db = row.datname
        return { measurement: 'postgresql', tags, fields, timestamp }
      }))
    }
  }
}
