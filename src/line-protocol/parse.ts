/**
 * Line-protocol scanner with the semantics of InfluxData's reference decoder
 * (github.com/influxdata/line-protocol/v2 `lineprotocol`), checked against its
 * conformance corpus by test/line-protocol-corpus.test.ts.
 *
 * One scanner works on the raw bytes and records offsets; `normalize` (the hot
 * path) forwards the original bytes, `decode` builds typed values from the same
 * offsets.
 *
 * Deliberately stricter than Go's strconv.ParseFloat (not covered by the corpus):
 * hexadecimal floats (`0x1p3`) and digit-separating underscores (`1_000`) are
 * rejected, because InfluxDB's own write parser rejects them too.
 */
import { isUtf8 } from 'node:buffer'

/** Timestamp precisions of the InfluxDB v2 write API. */
export type Precision = 'ns' | 'us' | 'ms' | 's'

export type FieldType = 'float' | 'int' | 'uint' | 'bool' | 'string'

/** float → number, int and uint → bigint, bool → boolean, string → string. */
export interface DecodedField {
  key: string
  type: FieldType
  value: number | bigint | boolean | string
}

export interface DecodedPoint {
  measurement: string
  /** In the order written (InfluxDB sorts them by key; no key appears twice). */
  tags: Array<[key: string, value: string]>
  /** In the order written; a key may repeat, as in the reference decoder. */
  fields: DecodedField[]
  /** Nanoseconds since the epoch, as canonical decimal digits. */
  timestamp: string
}

export interface ParseError { ok: false, line: number, message: string }
/** Writes a receipt timestamp in nanoseconds (at most 20 ASCII digits) at `at`; returns the offset after it. */
export type StampWriter = (out: Buffer, at: number) => number

export type NormalizeResult = { ok: true, body: Buffer, count: number } | ParseError
export type DecodeResult = { ok: true, points: DecodedPoint[] } | ParseError

const ZEROS: Record<Precision, number> = { ns: 0, us: 3, ms: 6, s: 9 }

const LF = 0x0a
const CR = 0x0d
const SP = 0x20
const QUOTE = 0x22
const HASH = 0x23
const COMMA = 0x2c
const MINUS = 0x2d
const DOT = 0x2e
const EQUALS = 0x3d
const BACKSLASH = 0x5c

// Character classes (CLASS) and the characters a backslash escapes (ESCAPES) per token kind.
const MEASUREMENT = 1 // measurement name
const KEY = 2 // tag key, field key
const TAG_VALUE = 4 // like KEY, but control characters other than CR and LF are allowed (as in the corpus)
const STRING = 8 // inside a string field value
const VALUE = 16 // other field values (validated separately)
const CLASS = new Uint8Array(256)
const ESCAPES = new Uint8Array(256)
for (let c = 0; c < 256; c++) {
  const printable = c >= 0x20 && c !== 0x7f
  if (printable && c !== COMMA && c !== SP) CLASS[c] |= MEASUREMENT
  if (printable && c !== COMMA && c !== SP && c !== EQUALS) CLASS[c] |= KEY
  if (c !== COMMA && c !== SP && c !== EQUALS && c !== CR && c !== LF) CLASS[c] |= TAG_VALUE
  if (c !== QUOTE) CLASS[c] |= STRING
  if (c !== COMMA && c !== SP && c !== CR && c !== LF) CLASS[c] |= VALUE
}
CLASS[BACKSLASH] = VALUE // take() handles backslashes in names and strings
ESCAPES[SP] = MEASUREMENT | KEY | TAG_VALUE
ESCAPES[COMMA] = MEASUREMENT | KEY | TAG_VALUE
ESCAPES[EQUALS] = KEY | TAG_VALUE
ESCAPES[QUOTE] = STRING // in strings only \" and \\ are escapes: the corpus keeps \n and \t as they are
ESCAPES[BACKSLASH] = STRING

const T_FLOAT = 0
const T_INT = 1
const T_UINT = 2
const T_BOOL = 3
const T_STRING = 4
const TYPE_NAMES: FieldType[] = ['float', 'int', 'uint', 'bool', 'string']

const ascii = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'latin1'))
const INT64_MAX = ascii('9223372036854775807')
const INT64_MIN_ABS = ascii('9223372036854775808')
const UINT64_MAX = ascii('18446744073709551615')
const BOOLS = ['t', 'T', 'true', 'True', 'TRUE', 'f', 'F', 'false', 'False', 'FALSE'].map(ascii)

const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39

const END = 0
const ENTRY = 1
const ERROR = 2

/**
 * Reads one entry per `next()` call and leaves its offsets in public fields.
 * Offsets are into `buf`; ranges are half-open.
 */
class Scanner {
  pos = 0
  // The entry just read.
  start = 0 // measurement start
  measurementEnd = 0
  tagCount = 0
  tags: Int32Array = new Int32Array(32) // keyStart, keyEnd, valueStart, valueEnd per tag
  fieldCount = 0
  fields: Int32Array = new Int32Array(40) // keyStart, keyEnd, valueStart, valueEnd, type per field
  fieldsEnd = 0 // end of the last field value
  timeStart = -1 // -1 when the entry has no timestamp
  timeEnd = -1
  timeNegative = false
  timeDigits = 0 // start of the significant digits (no leading zeros); timeEnd - timeDigits of them
  // The error, when next() returned ERROR.
  errorAt = 0
  errorMessage = ''

  private readonly checkUtf8: boolean

  constructor (readonly buf: Buffer, private readonly zeros: number) {
    // Comments may hold invalid UTF-8; everything else must be valid. When the whole
    // body is valid (the usual case) there is nothing to check per entry.
    this.checkUtf8 = !isUtf8(buf)
  }

  next (): number {
    const b = this.buf
    const n = b.length
    let i = this.pos

    // Blank lines, comments and leading spaces.
    for (;;) {
      while (i < n && b[i] === SP) i++
      if (i >= n) {
        this.pos = n
        return END
      }
      const c = b[i]
      if (c === LF) {
        i++
      } else if (c === HASH) {
        while (i < n && b[i] >= 0x20 && b[i] !== 0x7f) i++
        const e = this.eol(i)
        if (e < 0) return this.fail(i, 'invalid character in comment')
        i = e
      } else if (c === CR) {
        const e = this.eol(i)
        if (e < 0) return this.fail(i, 'carriage return not followed by a newline')
        i = e
      } else {
        break
      }
    }

    this.start = i
    i = this.take(i, MEASUREMENT)
    if (i === this.start) return this.fail(i, 'expected a measurement name')
    this.measurementEnd = i

    let tagCount = 0
    if (i < n && b[i] === COMMA) {
      i++
      if (i >= n || b[i] === SP || b[i] === CR || b[i] === LF) return this.fail(i, 'expected a tag key after the comma')
    }
    while (i >= n || b[i] !== SP) {
      const keyStart = i
      i = this.take(i, KEY)
      if (i === keyStart) return this.fail(i, 'expected a tag key or a space before the fields')
      if (i >= n || b[i] !== EQUALS) return this.fail(i, "expected '=' after the tag key")
      const keyEnd = i++
      const valueStart = i
      i = this.take(i, TAG_VALUE)
      if (i === valueStart) return this.fail(i, 'expected a tag value')
      if (i >= n) return this.fail(i, 'expected fields after the tags')
      if (tagCount * 4 === this.tags.length) this.tags = grow(this.tags)
      const t = this.tags
      for (let k = 0; k < tagCount * 4; k += 4) {
        if (equalBytes(b, t[k], t[k + 1], keyStart, keyEnd)) return this.fail(keyStart, 'duplicate tag key')
      }
      const k = tagCount++ * 4
      t[k] = keyStart
      t[k + 1] = keyEnd
      t[k + 2] = valueStart
      t[k + 3] = i
      if (b[i] === COMMA) {
        i++
        if (i >= n || b[i] === SP || b[i] === CR || b[i] === LF) return this.fail(i, 'expected a tag key after the comma')
      }
    }
    this.tagCount = tagCount
    while (i < n && b[i] === SP) i++

    let fieldCount = 0
    for (;;) {
      const keyStart = i
      i = this.take(i, KEY)
      if (i === keyStart) return this.fail(i, 'expected a field key')
      if (i >= n || b[i] !== EQUALS) return this.fail(i, "expected '=' after the field key")
      const keyEnd = i++
      const valueStart = i
      let type: number
      if (i < n && b[i] === QUOTE) {
        i = this.take(i + 1, STRING)
        if (i >= n) return this.fail(valueStart, 'string field value has no closing quote')
        i++
        type = T_STRING
      } else {
        // Fast path for integers and plain decimals that are valid at a glance; the rest get the full check.
        type = -1
        let j = i < n && b[i] === MINUS ? i + 1 : i
        const digits = j
        while (j < n && isDigit(b[j])) j++
        if (j > digits && j - digits < 19) { // too few digits to be out of range
          let c = j < n ? b[j] : SP
          if (c === 0x69) type = T_INT // i
          else if (c === 0x75 && digits === i) type = T_UINT // u
          else if (c === DOT) while (++j < n && isDigit(b[j]));
          if (type !== -1) j++
          else type = T_FLOAT
          c = j < n ? b[j] : SP
          if ((CLASS[c] & VALUE) === 0) i = j // the value ends here
          else type = -1
        }
        if (type < 0) {
          while (i < n && (CLASS[b[i]] & VALUE) !== 0) i++
          type = this.fieldType(valueStart, i)
          if (type < 0) return ERROR
        }
      }
      if (fieldCount * 5 === this.fields.length) this.fields = grow(this.fields)
      const f = this.fields
      const k = fieldCount++ * 5
      f[k] = keyStart
      f[k + 1] = keyEnd
      f[k + 2] = valueStart
      f[k + 3] = i
      f[k + 4] = type
      if (i < n && b[i] === COMMA) {
        i++
        continue
      }
      if (i < n && b[i] !== SP && b[i] !== CR && b[i] !== LF) return this.fail(i, 'unexpected character after a field value')
      break
    }
    this.fieldCount = fieldCount
    this.fieldsEnd = i

    while (i < n && b[i] === SP) i++
    let e = this.eol(i)
    if (e >= 0) {
      this.timeStart = this.timeEnd = -1
    } else {
      const start = i
      while (i < n && isDigit(b[i])) i++
      // Fast path: digits only, no leading zero, and too few of them (once scaled) to overflow.
      const len = i - start + this.zeros
      if (len > this.zeros && b[start] !== 0x30 && (len < 19 || (len === 19 && b[start] !== 0x39)) && (i >= n || b[i] !== MINUS)) {
        this.timeNegative = false
        this.timeDigits = start
      } else {
        while (i < n && (isDigit(b[i]) || b[i] === MINUS)) i++
        if (!this.checkTime(start, i)) return ERROR
      }
      this.timeStart = start
      this.timeEnd = i
      if (i < n && b[i] !== SP && b[i] !== CR && b[i] !== LF) return this.fail(start, 'invalid timestamp')
      while (i < n && b[i] === SP) i++
      e = this.eol(i)
      if (e < 0) return this.fail(i, 'unexpected text after the timestamp')
    }

    if (this.checkUtf8 && !isUtf8(b.subarray(this.start, this.fieldsEnd))) return this.fail(this.start, 'invalid UTF-8')
    this.pos = e
    return ENTRY
  }

  /** The position after the line ending at i (end of input counts), or -1 when there is none. */
  private eol (i: number): number {
    const b = this.buf
    if (i >= b.length) return i
    if (b[i] === LF) return i + 1
    if (b[i] === CR) {
      if (i + 1 >= b.length) return i + 1
      if (b[i + 1] === LF) return i + 2
    }
    return -1
  }

  /** Skips characters of class `cls`, and backslash escapes; a backslash before anything else is literal. */
  private take (i: number, cls: number): number {
    const b = this.buf
    const n = b.length
    for (;;) {
      while (i < n && (CLASS[b[i]] & cls) !== 0) i++
      if (i >= n || b[i] !== BACKSLASH) return i
      i += i + 1 < n && (ESCAPES[b[i + 1]] & cls) !== 0 ? 2 : 1
    }
  }

  /** The type of the unquoted field value in [s, e), or -1 (with the error set) when it is invalid. */
  private fieldType (s: number, e: number): number {
    const b = this.buf
    if (s === e) return this.invalid(s, 'expected a field value')
    const c = b[s]
    if (c === 0x74 || c === 0x54 || c === 0x66 || c === 0x46) { // t T f F
      for (const word of BOOLS) if (equalTo(b, s, e, word)) return T_BOOL
      return this.invalid(s, 'invalid boolean field value')
    }
    if (!isDigit(c) && c !== MINUS && c !== DOT) return this.invalid(s, 'field value has an unrecognized type')
    const last = b[e - 1]
    if (last === 0x69) { // i
      const negative = c === MINUS
      if (!this.integer(negative ? s + 1 : s, e - 1, negative ? INT64_MIN_ABS : INT64_MAX)) return this.invalid(s, 'invalid or out-of-range integer field value')
      return T_INT
    }
    if (last === 0x75) { // u
      if (!this.integer(s, e - 1, UINT64_MAX)) return this.invalid(s, 'invalid or out-of-range unsigned integer field value')
      return T_UINT
    }
    if (!this.float(s, e)) return this.invalid(s, 'invalid float field value')
    return T_FLOAT
  }

  /** Whether [s, e) is one or more decimal digits whose value is at most `max`. */
  private integer (s: number, e: number, max: Uint8Array): boolean {
    const b = this.buf
    if (s >= e) return false
    for (let i = s; i < e; i++) if (!isDigit(b[i])) return false
    while (s < e - 1 && b[s] === 0x30) s++
    return e - s < max.length || (e - s === max.length && compareTo(b, s, max) <= 0)
  }

  /** Go's strconv.ParseFloat decimal syntax, finite values only. */
  private float (s: number, e: number): boolean {
    const b = this.buf
    let i = s
    if (b[i] === MINUS) i++
    let digits = 0
    let dot = false
    for (; i < e; i++) {
      if (isDigit(b[i])) digits++
      else if (b[i] === DOT && !dot) dot = true
      else break
    }
    if (digits === 0) return false
    let exponent = false
    if (i < e && (b[i] === 0x65 || b[i] === 0x45)) { // e E
      exponent = true
      i++
      if (i < e && (b[i] === 0x2b || b[i] === MINUS)) i++
      if (i >= e || !isDigit(b[i])) return false
      while (i < e && isDigit(b[i])) i++
    }
    if (i !== e) return false
    // Without an exponent, fewer than 309 digits cannot reach Number.MAX_VALUE.
    return (!exponent && digits < 309) || Number.isFinite(Number(b.toString('latin1', s, e)))
  }

  /** Checks the timestamp in [s, e) is an int64 that stays one when scaled to nanoseconds. */
  private checkTime (s: number, e: number): boolean {
    const b = this.buf
    const negative = b[s] === MINUS
    let i = negative ? s + 1 : s
    if (i >= e) return this.reject(s, 'invalid timestamp')
    for (let k = i; k < e; k++) if (!isDigit(b[k])) return this.reject(s, 'invalid timestamp')
    while (i < e - 1 && b[i] === 0x30) i++
    this.timeNegative = negative && !(e - i === 1 && b[i] === 0x30)
    this.timeDigits = i
    const max = negative ? INT64_MIN_ABS : INT64_MAX
    const len = e - i
    const scaled = len === 1 && b[i] === 0x30 ? 1 : len + this.zeros
    if (len > max.length || (len === max.length && compareTo(b, i, max) > 0)) return this.reject(s, 'timestamp out of range')
    // Scaled (zeros appended) to exactly the limit's length, it fits when its digits are at most the limit's first ones.
    if (scaled > max.length || (scaled === max.length && this.zeros > 0 && !fitsScaled(b, i, len, max))) {
      return this.reject(s, 'timestamp out of range after conversion to nanoseconds')
    }
    return true
  }

  private fail (at: number, message: string): number {
    this.errorAt = at
    this.errorMessage = message
    return ERROR
  }

  /** Records the error and returns -1. */
  private invalid (at: number, message: string): number {
    this.fail(at, message)
    return -1
  }

  /** Records the error and returns false. */
  private reject (at: number, message: string): false {
    this.fail(at, message)
    return false
  }
}

function grow (a: Int32Array): Int32Array {
  const b = new Int32Array(a.length * 2)
  b.set(a)
  return b
}

function equalBytes (b: Buffer, s1: number, e1: number, s2: number, e2: number): boolean {
  if (e1 - s1 !== e2 - s2) return false
  for (let i = 0; i < e1 - s1; i++) if (b[s1 + i] !== b[s2 + i]) return false
  return true
}

function equalTo (b: Buffer, s: number, e: number, word: Uint8Array): boolean {
  if (e - s !== word.length) return false
  for (let i = 0; i < word.length; i++) if (b[s + i] !== word[i]) return false
  return true
}

/** Compares max.length digits at b[s] with max. */
function compareTo (b: Buffer, s: number, max: Uint8Array): number {
  for (let i = 0; i < max.length; i++) if (b[s + i] !== max[i]) return b[s + i] - max[i]
  return 0
}

/** Whether len digits at b[s] followed by zeros (max.length digits in all) are at most max. */
function fitsScaled (b: Buffer, s: number, len: number, max: Uint8Array): boolean {
  for (let i = 0; i < len; i++) if (b[s + i] !== max[i]) return b[s + i] < max[i]
  return true // the appended zeros are never above the limit's digits
}

function failure (sc: Scanner): ParseError {
  const b = sc.buf
  let line = 1
  let lineStart = 0
  for (let i = 0; i < sc.errorAt; i++) {
    if (b[i] === LF) {
      line++
      lineStart = i + 1
    }
  }
  let lineEnd = b.indexOf(LF, lineStart)
  if (lineEnd < 0) lineEnd = b.length
  const text = JSON.stringify(b.toString('utf8', lineStart, Math.min(lineEnd, lineStart + 100)))
  return { ok: false, line, message: `line ${line}, column ${sc.errorAt - lineStart + 1}: ${sc.errorMessage}: ${text}` }
}

/**
 * Validates every entry and returns them for forwarding at precision=ns: the original
 * bytes of measurement, tags and fields, a space, the timestamp in nanoseconds (the
 * entry's own, scaled from `precision`, or written by `stamp` for an entry without one), and `\n`.
 * Comments and blank lines are dropped. On the first invalid entry nothing is returned
 * but where and what the problem is.
 */
export function normalize (body: Buffer, precision: Precision, stamp: StampWriter): NormalizeResult {
  const zeros = ZEROS[precision]
  if (zeros === undefined) throw new TypeError(`unknown precision ${String(precision)}`)
  const sc = new Scanner(body, zeros)
  const out = new Output()
  let count = 0
  // Entries already in output form are not copied one by one but as a run, [runStart, runEnd) of body.
  let runStart = 0
  let runEnd = 0
  for (;;) {
    const r = sc.next()
    if (r === END) break
    if (r === ERROR) return failure(sc)
    count++
    const t = sc.timeStart
    if (zeros === 0 && t === sc.fieldsEnd + 1 && body[sc.fieldsEnd] === SP && body[sc.timeEnd] === LF) {
      if (sc.start !== runEnd) {
        out.copy(body, runStart, runEnd)
        runStart = sc.start
      }
      runEnd = sc.timeEnd + 1
      continue
    }
    out.copy(body, runStart, runEnd)
    runStart = runEnd = 0
    // Room for the entry, a space, up to 20 timestamp characters and the zeros, and a newline.
    const b = out.reserve(sc.fieldsEnd - sc.start + 22 + zeros)
    let o = out.length + body.copy(b, out.length, sc.start, sc.fieldsEnd)
    b[o++] = SP
    if (t < 0) {
      o = stamp(b, o)
    } else if (zeros === 0) {
      for (let i = t; i < sc.timeEnd; i++) b[o++] = body[i] // a loop beats copy() for a few bytes
    } else if (sc.timeEnd - sc.timeDigits === 1 && body[sc.timeDigits] === 0x30) {
      b[o++] = 0x30
    } else {
      if (sc.timeNegative) b[o++] = MINUS
      for (let i = sc.timeDigits; i < sc.timeEnd; i++) b[o++] = body[i]
      for (let i = 0; i < zeros; i++) b[o++] = 0x30
    }
    b[o++] = LF
    out.length = o
  }
  // Nothing rewritten (the usual case for clients that send ns timestamps): the request's own bytes.
  if (out.length === 0) return { ok: true, body: body.subarray(runStart, runEnd), count }
  out.copy(body, runStart, runEnd)
  return { ok: true, body: out.bytes(), count }
}

/** Output bytes in a buffer that is reused across calls (normalize is synchronous) unless it grew large. */
class Output {
  private static spare = Buffer.allocUnsafe(1 << 16)
  private buf = Output.spare
  length = 0

  /** The buffer, with room for n more bytes after `length`. */
  reserve (n: number): Buffer {
    if (this.length + n > this.buf.length) {
      const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.length + n))
      this.buf.copy(bigger, 0, 0, this.length)
      this.buf = bigger
    }
    return this.buf
  }

  copy (src: Buffer, start: number, end: number): void {
    if (end > start) this.length += src.copy(this.reserve(end - start), this.length, start, end)
  }

  /** A copy of the output, so the buffer can serve the next call. */
  bytes (): Buffer {
    if (this.buf.length <= 1 << 24) Output.spare = this.buf
    return Buffer.from(this.buf.subarray(0, this.length))
  }
}

/**
 * Decodes every entry into typed points. Entries without a timestamp get `defaultTimeNs`
 * truncated to `precision` (as the reference decoder does).
 */
export function decode (body: Buffer, precision: Precision, defaultTimeNs: string): DecodeResult {
  const zeros = ZEROS[precision]
  if (zeros === undefined) throw new TypeError(`unknown precision ${String(precision)}`)
  const sc = new Scanner(body, zeros)
  const unit = 10n ** BigInt(zeros)
  const defaultTime = BigInt(defaultTimeNs)
  // Floor to a multiple of the precision (Go truncates towards the year 1, i.e. down).
  const truncated = defaultTime - (((defaultTime % unit) + unit) % unit)
  const points: DecodedPoint[] = []
  for (;;) {
    const r = sc.next()
    if (r === END) return { ok: true, points }
    if (r === ERROR) return failure(sc)
    const tags: Array<[string, string]> = []
    for (let k = 0; k < sc.tagCount * 4; k += 4) {
      tags.push([unescape(body, sc.tags[k], sc.tags[k + 1], KEY), unescape(body, sc.tags[k + 2], sc.tags[k + 3], TAG_VALUE)])
    }
    const fields: DecodedField[] = []
    for (let k = 0; k < sc.fieldCount * 5; k += 5) {
      const f = sc.fields
      const type = f[k + 4]
      const raw = body.toString('latin1', f[k + 2], f[k + 3])
      let value: DecodedField['value']
      switch (type) {
        case T_FLOAT: value = Number(raw); break
        case T_INT: value = BigInt(raw.slice(0, -1)); break
        case T_UINT: value = BigInt(raw.slice(0, -1)); break
        case T_BOOL: value = raw[0] === 't' || raw[0] === 'T'; break
        default: value = unescape(body, f[k + 2] + 1, f[k + 3] - 1, STRING)
      }
      fields.push({ key: unescape(body, f[k], f[k + 1], KEY), type: TYPE_NAMES[type], value })
    }
    let timestamp = String(truncated)
    if (sc.timeStart >= 0) {
      timestamp = String(BigInt(body.toString('latin1', sc.timeStart, sc.timeEnd)) * unit)
    }
    points.push({ measurement: unescape(body, sc.start, sc.measurementEnd, MEASUREMENT), tags, fields, timestamp })
  }
}

/** The text of the token in [s, e) with the backslash escapes of class `cls` removed. */
function unescape (b: Buffer, s: number, e: number, cls: number): string {
  let first = s
  while (first < e && b[first] !== BACKSLASH) first++
  if (first === e) return b.toString('utf8', s, e)
  const out = Buffer.allocUnsafe(e - s)
  let o = 0
  for (let i = s; i < e; i++) {
    if (b[i] === BACKSLASH && i + 1 < e && (ESCAPES[b[i + 1]] & cls) !== 0) i++
    out[o++] = b[i]
  }
  return out.toString('utf8', 0, o)
}

/**
 * The entries of a body `normalize` produced, each with its newline. A string field may hold a raw
 * newline, so entries are found by scanning, not by splitting on '\n'.
 */
export function splitEntries (body: Buffer): Buffer[] {
  const sc = new Scanner(body, 0)
  const entries: Buffer[] = []
  while (sc.next() === ENTRY) entries.push(body.subarray(sc.start, sc.timeEnd + 1))
  return entries
}
