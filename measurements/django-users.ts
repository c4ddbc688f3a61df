import type { Measurement } from './measurement'

const SQL = `SELECT count(*) AS total,
  count(*) FILTER (WHERE last_login > now() - interval '1 hour') AS logged_in_1h,
  count(*) FILTER (WHERE last_login > now() - interval '24 hours') AS logged_in_24h
  FROM auth_user`

/** `django_users`: all users, and those who logged in within the last hour and day. */
export function djangoUsers (interval: number): Measurement {
  return {
    name: 'django_users',
    interval,
    async poll ({ client, timestamp, emit }) {
      const { rows: [row] } = await client.query<{ total: bigint, logged_in_1h: bigint, logged_in_24h: bigint }>(SQL)
      emit([{ measurement: 'django_users', fields: { total: row.total, logged_in_1h: row.logged_in_1h, logged_in_24h: row.logged_in_24h }, timestamp }])
    }
  }
}
