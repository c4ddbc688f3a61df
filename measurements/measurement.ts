import type { PoolClient } from 'pg'
import type { FieldValue, Point } from '../src/line-protocol/point'

export interface PollContext {
  /** A client inside a read-only transaction with a statement timeout. */
  client: PoolClient
  /** One receipt timestamp (ns) for every point of this poll. */
  timestamp: string
  emit: (points: Point[]) => void
  /** Aborted when the poll's connection fails or is cut: a stream over it must stop waiting. */
  signal: AbortSignal
}

/** A poller: what SQL runs against the app's database and which points it makes. */
export interface Measurement {
  /** The measurement it writes; also its name in logs and metrics. */
  name: string
  /** Milliseconds between the end of one poll and the start of the next. */
  interval: number
  poll: (ctx: PollContext) => Promise<void>
}

/**
 * A column value as a field. The pool parses PostgreSQL integers as bigint and floats/numerics
 * as number (see plugins/postgres.ts), so the JavaScript type already says the field type.
 * Dates, arrays, JSON and NULL have no line-protocol field type and are left out.
 */
export function toFieldValue (value: unknown): FieldValue | undefined {
  switch (typeof value) {
    case 'bigint': case 'number': case 'boolean': case 'string': return value
    default: return undefined
  }
}

/** Tag values cannot be empty in line protocol; NULL and '' get visible stand-ins. */
export function toTagValue (value: unknown): string {
  if (value === null || value === undefined) return '(null)'
  const text = value instanceof Date ? value.toISOString() : String(value)
  return text === '' ? '(empty)' : text
}
