import type { Measurement } from './measurement'

/** `django_sessions active`: sessions that have not expired. */
export function djangoSessions (interval: number): Measurement {
  return {
    name: 'django_sessions',
    interval,
    async poll ({ client, timestamp, emit }) {
      const { rows } = await client.query<{ active: bigint }>('SELECT count(*) AS active FROM django_session WHERE expire_date > now()')
      emit([{ measurement: 'django_sessions', fields: { active: rows[0].active }, timestamp }])
    }
  }
}
