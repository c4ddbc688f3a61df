import { Type, type Static } from '@sinclair/typebox'
import { stampNs } from './clock'
import { formatPoint } from './line-protocol/format'
import type { FieldValue } from './line-protocol/point'
import { HttpError } from './http/errors'

const Name = Type.String({ minLength: 1, maxLength: 65_535 })
/**
 * Any key. TypeBox writes a Record's string keys as `^(.*)$`, which a key holding a newline does
 * not match, so such a key would escape validation; lengths are checked in checkNames.
 */
const AnyKey = Type.String({ pattern: '^[\\s\\S]*$' })

/** `{"int": 5}` (or a string of digits, beyond 2^53) marks an integer field; a bare JSON number is a float. */
const IntegerField = Type.Object({
  int: Type.Union([Type.Integer(), Type.String({ pattern: '^-?[0-9]{1,19}$' })])
}, { additionalProperties: false })

export const Beacon = Type.Object({
  measurement: Name,
  tags: Type.Optional(Type.Record(AnyKey, Type.String({ maxLength: 65_535 }))),
  fields: Type.Record(AnyKey, Type.Union([Type.Number(), Type.Boolean(), Type.String({ maxLength: 65_535 }), IntegerField]), { minProperties: 1 }),
  /** RFC 3339 (any fraction of a second, to the nanosecond) or integer epoch milliseconds. */
  timestamp: Type.Optional(Type.Union([Type.String({ format: 'date-time' }), Type.Integer()]))
}, { additionalProperties: false })

export type Beacon = Static<typeof Beacon>

/** A `POST /beacons` body: one beacon, or a non-empty array of them. */
export const BeaconsBody = Type.Union([Beacon, Type.Array(Beacon, { minItems: 1 })])

/** Keys InfluxDB reserves: a point using one as a tag or field key is discarded by InfluxDB, so it is refused here. */
const RESERVED = new Set(['time', '_field', '_measurement'])
const INT64_MIN = -(2n ** 63n)
const INT64_MAX = 2n ** 63n - 1n
const RFC3339 = /^(\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d)(?:\.(\d{1,9})\d*)?([Zz]|[+-]\d\d:\d\d)$/

/** The JSON path of the beacon at fault, for messages: built only on failure. */
type Where = () => string

function timestampNs (value: string | number, where: Where): string {
  let ns: bigint
  if (typeof value === 'number') {
    ns = BigInt(value) * 1_000_000n
  } else {
    const match = RFC3339.exec(value)
    const seconds = match === null ? NaN : Date.parse(`${match[1].replace(' ', 'T')}${match[3]}`)
    if (match === null || Number.isNaN(seconds)) throw new HttpError(400, `${where()}/timestamp: "${value}" is not an RFC 3339 time`)
    ns = BigInt(seconds) * 1_000_000n + BigInt((match[2] ?? '').padEnd(9, '0'))
  }
  if (ns < INT64_MIN || ns > INT64_MAX) throw new HttpError(400, `${where()}/timestamp: ${value} is out of InfluxDB's range (1677-09-21 to 2262-04-11)`)
  return String(ns)
}

/** The fields as line protocol values: `{"int": …}` becomes a bigint (in a copy, made only when there is one). */
function fieldValues (fields: Beacon['fields'], where: Where): Record<string, FieldValue> {
  let values: Record<string, FieldValue> | undefined
  for (const key in fields) {
    const value = fields[key]
    if (typeof value === 'number' && !Number.isFinite(value)) throw new HttpError(400, `${where()}/fields/${key}: ${value} is not a finite number`)
    if (typeof value !== 'object') continue
    const int = BigInt(value.int)
    if (int < INT64_MIN || int > INT64_MAX) throw new HttpError(400, `${where()}/fields/${key}: ${value.int} does not fit a 64-bit integer`)
    values ??= { ...fields } as Record<string, FieldValue>
    values[key] = int
  }
  return values ?? fields as Record<string, FieldValue>
}

/**
 * Names line protocol cannot carry: empty keys, keys InfluxDB reserves, and a trailing backslash (it
 * would escape the separator). Paths for messages are only built on failure: this runs for every beacon.
 */
function checkNames (names: Record<string, unknown> | undefined, where: Where, part: 'tags' | 'fields'): void {
  for (const key in names) {
    if (key === '') throw new HttpError(400, `${where()}/${part}: an empty key cannot be written in line protocol`)
    if (key.length > 65_535) throw new HttpError(400, `${where()}/${part}: a key of ${key.length} characters is over InfluxDB's 65535`)
    if (RESERVED.has(key)) throw new HttpError(400, `${where()}/${part}/${key}: "${key}" is a key InfluxDB reserves`)
    if (key.endsWith('\\') || (part === 'tags' && String(names[key]).endsWith('\\'))) {
      throw new HttpError(400, `${where()}/${part}/${key}: names and tag values cannot end with a backslash in line protocol`)
    }
  }
}

/** One beacon as a line; `index` is its place in an array body. */
function beaconLine (beacon: Beacon, index: number | undefined): string {
  const where: Where = () => index === undefined ? 'body' : `body/${index}`
  if (beacon.measurement.startsWith('#') || beacon.measurement.endsWith('\\')) {
    throw new HttpError(400, `${where()}/measurement: a measurement cannot start with "#" or end with a backslash`)
  }
  checkNames(beacon.tags, where, 'tags')
  checkNames(beacon.fields, where, 'fields')
  const fields = fieldValues(beacon.fields, where)
  const timestamp = beacon.timestamp === undefined ? stampNs() : timestampNs(beacon.timestamp, where)
  const line = formatPoint({ measurement: beacon.measurement, tags: beacon.tags, fields, timestamp })
  if (line === undefined) throw new HttpError(400, `${where()}: cannot be written as line protocol`)
  return line
}

/**
 * Line protocol (bytes, as the writer takes them) for beacons that passed the route's schema: all or
 * nothing — the first bad beacon throws a 400 naming it, and nothing of the request is written. A
 * beacon without a timestamp is stamped now, in nanoseconds, never later on delivery.
 */
export function beaconsToLineProtocol (beacons: Beacon | Beacon[]): { body: Buffer, count: number } {
  if (!Array.isArray(beacons)) return { body: Buffer.from(beaconLine(beacons, undefined) + '\n'), count: 1 }
  let body = ''
  for (let i = 0; i < beacons.length; i++) body += beaconLine(beacons[i], i) + '\n'
  return { body: Buffer.from(body), count: beacons.length }
}
