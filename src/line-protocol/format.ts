import type { FieldValue, Point } from './point'

// InfluxDB unescapes only these characters outside strings; a backslash before anything
// else is kept as it is, so backslashes are not escaped (that would double them).
const MEASUREMENT_SPECIAL = /[, \n\r\t]/g
const KEY_SPECIAL = /[,= \n\r\t]/g
// Most names need no escaping: testing first is cheaper than replace() with a callback.
const HAS_MEASUREMENT_SPECIAL = /[, \n\r\t]/
const HAS_KEY_SPECIAL = /[,= \n\r\t]/
const STRING_SPECIAL = /["\\]/g

const escapeChar = (c: string): string => {
  switch (c) {
    case '\n': return '\\n'
    case '\r': return '\\r'
    case '\t': return '\\t'
    default: return '\\' + c
  }
}

const escapeMeasurement = (s: string): string => HAS_MEASUREMENT_SPECIAL.test(s) ? s.replace(MEASUREMENT_SPECIAL, escapeChar) : s
const escapeKey = (s: string): string => HAS_KEY_SPECIAL.test(s) ? s.replace(KEY_SPECIAL, escapeChar) : s

/** The field value as line protocol, or undefined when it cannot be represented (NaN, ±Infinity). */
function formatFieldValue (value: FieldValue): string | undefined {
  switch (typeof value) {
    case 'bigint': return `${value}i`
    case 'boolean': return value ? 'true' : 'false'
    case 'string': return `"${value.replace(STRING_SPECIAL, '\\$&')}"`
    default: return Number.isFinite(value) ? formatFloat(value) : undefined
  }
}

const ONE_DIGIT_EXPONENT = /e([+-])(\d)$/

/** As Go's strconv.FormatFloat(x, 'g', -1, 64), which InfluxData's encoder uses: 1e+06, 0.0001, 1e-05. */
function formatFloat (x: number): string {
  // Go and JavaScript both print the shortest round-trip digits; between 1e-4 and 1e6 both write
  // them without an exponent, so String() is Go's output there.
  const abs = Math.abs(x)
  if (abs >= 1e-4 && abs < 1e6) return String(x)
  if (x === 0) return Object.is(x, -0) ? '-0' : '0'
  // Go writes at least two exponent digits: 1e+06, where JavaScript writes 1e+6.
  return x.toExponential().replace(ONE_DIGIT_EXPONENT, 'e$10$2')
}

/** A trailing backslash would escape the separator after it, so such names cannot be written. */
const writable = (s: string): boolean => s !== '' && !s.endsWith('\\')

/**
 * One line of line protocol (without the trailing newline), or undefined when no field is
 * representable or the measurement or a tag cannot be written (empty, or ending in a backslash).
 * Tags with an empty value are left out.
 */
export function formatPoint (point: Point): string | undefined {
  if (!writable(point.measurement)) return undefined
  let line = escapeMeasurement(point.measurement)
  if (point.tags !== undefined) {
    for (const key of Object.keys(point.tags).sort()) {
      const value = point.tags[key]
      if (value === '') continue
      if (!writable(key) || !writable(value)) return undefined
      line += `,${escapeKey(key)}=${escapeKey(value)}`
    }
  }
  let separator = ' '
  for (const key of Object.keys(point.fields)) {
    const value = formatFieldValue(point.fields[key])
    if (value === undefined || !writable(key)) continue
    line += `${separator}${escapeKey(key)}=${value}`
    separator = ','
  }
  if (separator === ' ') return undefined
  return `${line} ${point.timestamp}`
}

/** Points as newline-terminated line protocol (bytes, as the writer takes them), and how many were representable. */
export function formatPoints (points: Point[]): { body: Buffer, count: number } {
  let body = ''
  let count = 0
  for (const point of points) {
    const line = formatPoint(point)
    if (line === undefined) continue
    body += line + '\n'
    count++
  }
  return { body: Buffer.from(body), count }
}
