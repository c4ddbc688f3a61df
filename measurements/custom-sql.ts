import { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import QueryStream from 'pg-query-stream'
import type { SqlMeasurementConfig } from '../src/config'
import type { FieldValue, Point } from '../src/line-protocol/point'
import type { Measurement } from './measurement'
import { toFieldValue, toTagValue } from './measurement'

/** Rows fetched from the cursor at a time, and points handed to the writer at a time. */
const BATCH_ROWS = 500

/**
 * A measurement defined by SQL in the config (Telegraf `postgresql_extensible` style): each row is
 * a point, the `tags` columns its tags, the `fields` columns (default: all others) its fields.
 * Rows stream through a cursor, so a large result never sits in memory at once.
 */
export function customSql (config: SqlMeasurementConfig): Measurement {
  const tagColumns = config.tags ?? []
  const isField = config.fields === undefined
    ? (column: string) => !tagColumns.includes(column)
    : (column: string) => (config.fields as string[]).includes(column)

  return {
    name: config.measurement,
    interval: config.interval,
    async poll ({ client, timestamp, emit, signal }) {
      let points: Point[] = []
      const toPoint = (row: Record<string, unknown>): Point => {
        const tags: Record<string, string> = {}
        for (const column of tagColumns) tags[column] = toTagValue(row[column])
        const fields: Record<string, FieldValue> = {}
        for (const column of Object.keys(row)) {
          const value = isField(column) ? toFieldValue(row[column]) : undefined
          if (value !== undefined) fields[column] = value
        }
        return { measurement: config.measurement, tags, fields, timestamp }
      }
      const flush = (): void => {
        emit(points)
        points = []
      }
      // pipeline() settles only once the cursor is closed, so the caller may release the client after it.
      // The signal ends it when the connection dies: the cursor's stream would wait forever.
      await pipeline(
        client.query(new QueryStream(config.sql, [], { batchSize: BATCH_ROWS })),
        new Writable({
          objectMode: true,
          highWaterMark: BATCH_ROWS,
          write (row: Record<string, unknown>, _encoding, done) {
            points.push(toPoint(row))
            if (points.length >= BATCH_ROWS) flush()
            done()
          },
          final (done) {
            flush()
            done()
          }
        }),
        { signal }
      )
    }
  }
}
