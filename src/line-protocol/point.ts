/**
 * A field value: `number` is written as a float, `bigint` as an integer (`…i`),
 * `boolean` and `string` as themselves. Integers are never guessed from a number,
 * so `1` and `1.5` can never cause a field-type conflict in InfluxDB.
 */
export type FieldValue = number | bigint | boolean | string

export interface Point {
  measurement: string
  tags?: Record<string, string>
  fields: Record<string, FieldValue>
  /** Nanoseconds since the epoch, as decimal digits. */
  timestamp: string
}
