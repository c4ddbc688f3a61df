import type { FieldValue, Point } from './point'

const MEASUREMENT_SPECIAL = /[, \n\r\t\\]/g
const KEY_SPECIAL = /[,= \n\r\t\\]/g
const STRING_SPECIAL = /["\\]/g

const escapeChar = (c: string): string => {
  switch (c) {
    case '\n': return '\\n'
    case '\r': return '\\r'
    case '\t': return '\\t'
    default: return '\\' + c
  }
}

export const escapeMeasurement = (s: string): string => s.replace(MEASUREMENT_SPECIAL, escapeChar)
export const escapeKey = (s: string): string => s.replace(KEY_SPECIAL, escapeChar)

/** The field value as line protocol, or undefined when it cannot be represented (NaN, ±Infinity). */
export function formatFieldValue (value: FieldValue): string | undefined {
  switch (typeof value) {
    case 'bigint': return `${value}i`
    case 'boolean': return value ? 'true' : 'false'
    case 'string': return `"${value.replace(STRING_SPECIAL, '\\$&')}"`
    default: return Number.isFinite(value) ? String(value) : undefined
  }
}

/** One line of line protocol (without the trailing newline), or undefined when no field is representable. */
export function formatPoint (point: Point): string | undefined {
  let line = escapeMeasurement(point.measurement)
  if (point.tags !== undefined) {
    for (const key of Object.keys(point.tags).sort()) {
      const value = point.tags[key]
      if (value !== '') line += `,${escapeKey(key)}=${escapeKey(value)}`
    }
  }
  let separator = ' '
  for (const key of Object.keys(point.fields)) {
    const value = formatFieldValue(point.fields[key])
    if (value === undefined) continue
    line += `${separator}${escapeKey(key)}=${value}`
    separator = ','
  }
  if (separator === ' ') return undefined
  return `${line} ${point.timestamp}`
}
