import type { Measurement } from './measurement'
import { toTagValue } from './measurement'
import { ZeroFill } from './zero-fill'

const SQL = `SELECT datname AS db, coalesce(state, 'unknown') AS state, count(*) AS count
  FROM pg_stat_activity WHERE backend_type = 'client backend' AND datname IS NOT NULL GROUP BY 1, 2`

/** `postgresql_activity`: client connections per database and state; a state that empties is written as 0. */
export function pgStatActivity (interval: number): Measurement {
  const groups = new ZeroFill(tags => `${tags.db}\n${tags.state}`)
  return {
    name: 'postgresql_activity',
    interval,
    async poll ({ client, timestamp, emit }) {
      const { rows } = await client.query<{ db: string, state: string, count: bigint }>(SQL)
      const present: Array<Record<string, string>> = rows.map(row => ({ db: toTagValue(row.db), state: toTagValue(row.state) }))
      const points = rows.map((row, i) => ({ measurement: 'postgresql_activity', tags: present[i], fields: { count: row.count }, timestamp }))
      for (const tags of groups.missing(present)) {
        points.push({ measurement: 'postgresql_activity', tags, fields: { count: 0n }, timestamp })
      }
      emit(points)
    }
  }
}
