/**
 * InfluxData's line-protocol conformance corpus (github.com/influxdata/line-protocol-corpus),
 * whose expected outputs come from the reference Go decoder and encoder.
 *
 * Every decode case goes through `decode` (error-vs-success, and on success every point:
 * name, tags, typed fields, time) and through `normalize` (same verdict and point count,
 * and its output must decode to the same points). Every encode case goes through `formatPoint`.
 */
import { readFileSync } from 'node:fs'
import t, { type Test } from 'tap'
import { decode, normalize, type DecodedPoint, type Precision } from '../src/line-protocol/parse'
import { formatPoint } from '../src/line-protocol/format'
import type { FieldValue, Point } from '../src/line-protocol/point'
import { CORPUS_PATH } from './helper'



/** Cases where we knowingly differ from the reference, by corpus key, with the reason. */
const ALLOWED_DECODE_DIFFERENCES: Record<string, string> = {}
const ALLOWED_ENCODE_DIFFERENCES: Record<string, string> = {
  '72fe529da6084a44692fe27cc2f105d1': 'formatPoint drops a tag whose value is empty (InfluxDB treats it as absent) instead of rejecting the point'
}

type Bytes = string | { binary: string }
type CorpusValue = { int: string } | { uint: string } | { float: number } | { bool: boolean } | { string: string } | { binary: string } | { floatNonNumber: 'NaN' | 'Inf' }
interface CorpusPoint {
  time: string
  name: Bytes
  tags: Array<{ key: Bytes, value: Bytes }> | null
  fields: Array<{ key: Bytes, value: CorpusValue }> | null
}
interface Corpus {
  decode: Record<string, {
    input: { key: string, text: Bytes, defaultTime: string, precision: string }
    output: { result?: CorpusPoint[] | null, error?: string }
  }>
  encode: Record<string, {
    input: { key: string, point: CorpusPoint, precision: string }
    output: { result?: Bytes, error?: string }
  }>
}

/** JSON.parse would round integers beyond 2^53, so integer members become strings first. */
function readCorpus (): Corpus {
  const text = readFileSync(CORPUS_PATH, 'utf8')
    .replace(/([{,]\s*)"(int|uint|time|defaultTime)": (-?\d+)(?=\s*[,}])/g, '$1"$2": "$3"')
  return JSON.parse(text)
}

const bytes = (b: Bytes): Buffer => typeof b === 'string' ? Buffer.from(b, 'utf8') : Buffer.from(b.binary, 'base64')
const PRECISIONS: Record<string, Precision | undefined> = { '1ns': 'ns', '1µs': 'us', '1ms': 'ms', '1s': 's' }

/** Why `actual` differs from the reference's points, or undefined when it doesn't. */
function pointsDiffer (actual: DecodedPoint[], expected: CorpusPoint[]): string | undefined {
  if (actual.length !== expected.length) return `${actual.length} points, expected ${expected.length}`
  for (let p = 0; p < actual.length; p++) {
    const a = actual[p]
    const e = expected[p]
    const where = `point ${p}`
    if (!Buffer.from(a.measurement).equals(bytes(e.name))) return `${where}: name ${JSON.stringify(a.measurement)}`
    if (BigInt(a.timestamp) !== BigInt(e.time)) return `${where}: time ${a.timestamp}, expected ${e.time}`
    // The reference harness sorts tags by key bytes.
    const tags = a.tags.map(([k, v]) => [Buffer.from(k), Buffer.from(v)]).sort((x, y) => Buffer.compare(x[0], y[0]))
    const eTags = e.tags ?? []
    if (tags.length !== eTags.length) return `${where}: ${tags.length} tags, expected ${eTags.length}`
    for (let i = 0; i < tags.length; i++) {
      if (!tags[i][0].equals(bytes(eTags[i].key)) || !tags[i][1].equals(bytes(eTags[i].value))) return `${where}: tag ${i} ${String(tags[i][0])}=${String(tags[i][1])}`
    }
    const eFields = e.fields ?? []
    if (a.fields.length !== eFields.length) return `${where}: ${a.fields.length} fields, expected ${eFields.length}`
    for (let i = 0; i < eFields.length; i++) {
      const f = a.fields[i]
      const ev = eFields[i].value
      const bad = `${where}: field ${i} ${f.key}=${String(f.value)} (${f.type}), expected ${JSON.stringify(eFields[i])}`
      if (!Buffer.from(f.key).equals(bytes(eFields[i].key))) return bad
      const ok = 'int' in ev
        ? f.type === 'int' && f.value === BigInt(ev.int)
        : 'uint' in ev
          ? f.type === 'uint' && f.value === BigInt(ev.uint)
          : 'float' in ev
            ? f.type === 'float' && f.value === ev.float // === as the corpus JSON writes -0 as 0
            : 'bool' in ev
              ? f.type === 'bool' && f.value === ev.bool
              : 'string' in ev || 'binary' in ev
                ? f.type === 'string' && Buffer.from(f.value as string).equals(bytes('string' in ev ? ev.string : ev))
                : false
      if (!ok) return bad
    }
  }
  return undefined
}

const corpus = readCorpus()

t.test('decode corpus', async t => {
  let agree = 0
  let skipped = 0
  const cases = Object.values(corpus.decode)
  for (const { input, output } of cases) {
    const precision = PRECISIONS[input.precision]
    if (precision === undefined) { // '1m' and '1h' are not precisions of the write API
      skipped++
      t.comment(`skipped ${input.key}: precision ${input.precision} is not supported`)
      continue
    }
    const body = bytes(input.text)
    const decoded = decode(body, precision, input.defaultTime)
    let problem: string | undefined
    if (output.error !== undefined) {
      if (decoded.ok) problem = `decoded ${decoded.points.length} points; the reference fails: ${output.error}`
    } else if (!decoded.ok) {
      problem = `failed (${decoded.message}); the reference decodes ${output.result?.length ?? 0} points`
    } else {
      problem = pointsDiffer(decoded.points, output.result ?? [])
    }
    // normalize must agree, and what it forwards must decode to the same points (stamping
    // lines without a timestamp as decode does: the default time truncated to the precision).
    const unit = 10n ** BigInt({ ns: 0, us: 3, ms: 6, s: 9 }[precision])
    const defaultTime = BigInt(input.defaultTime)
    const stamp = String(defaultTime - (((defaultTime % unit) + unit) % unit))
    const normalized = normalize(body, precision, (out, at) => at + out.write(stamp, at, 'latin1'))
    if (problem === undefined) {
      if (normalized.ok !== decoded.ok) {
        problem = `normalize ${normalized.ok ? 'accepts' : `rejects (${(normalized as { message: string }).message})`} what decode ${decoded.ok ? 'accepts' : 'rejects'}`
      } else if (normalized.ok && decoded.ok) {
        const again = decode(Buffer.from(normalized.body), 'ns', '0')
        if (normalized.count !== decoded.points.length) problem = `normalize counts ${normalized.count} points`
        else if (!again.ok) problem = `normalized body does not decode: ${again.message}`
        else if (JSON.stringify(again.points, jsonable) !== JSON.stringify(decoded.points, jsonable)) problem = `normalized body decodes differently: ${JSON.stringify(normalized.body)}`
      }
    }
    if (verdict(t, input.key, problem, ALLOWED_DECODE_DIFFERENCES[input.key], { text: body.toString('latin1'), precision: input.precision })) agree++
  }
  t.comment(`decode: ${agree}/${cases.length} agree (${skipped} skipped, ${Object.keys(ALLOWED_DECODE_DIFFERENCES).length} allowed differences)`)
})

/**
 * One case's assertion: it agrees, or it differs exactly as the allow-list says (a listed case
 * that agrees now fails, so the list stays true). Returns whether the case agrees.
 */
function verdict (t: Test, key: string, problem: string | undefined, allowed: string | undefined, extra: object = {}): boolean {
  if (problem === undefined && allowed === undefined) {
    t.pass(key)
    return true
  }
  if (problem !== undefined && allowed !== undefined) t.pass(`${key}: known difference: ${allowed}`)
  else t.fail(`${key}: ${problem ?? 'agrees now; remove it from the allow-list'}`, extra)
  return false
}

t.test('encode corpus', async t => {
  let agree = 0
  let skipped = 0
  const cases = Object.values(corpus.encode)
  for (const { input, output } of cases) {
    const p = input.point
    if (input.precision !== '1ns' || p.fields?.some(f => 'uint' in f.value || 'binary' in f.value) === true) {
      skipped++ // formatPoint writes nanoseconds, and FieldValue has no unsigned integers
      t.comment(`skipped ${input.key}: precision ${input.precision} or a uint/binary field`)
      continue
    }
    const point: Point = { measurement: bytes(p.name).toString(), tags: {}, fields: {}, timestamp: p.time }
    for (const tag of p.tags ?? []) point.tags![bytes(tag.key).toString()] = bytes(tag.value).toString()
    for (const field of p.fields ?? []) {
      const v = field.value
      const value: FieldValue = 'int' in v
        ? BigInt(v.int)
        : 'float' in v ? v.float : 'floatNonNumber' in v ? (v.floatNonNumber === 'NaN' ? NaN : Infinity) : 'bool' in v ? v.bool : (v as { string: string }).string
      point.fields[bytes(field.key).toString()] = value
    }
    const line = formatPoint(point)
    const expected = output.result === undefined ? undefined : bytes(output.result).toString()
    const problem = line === expected ? undefined : `wrote ${JSON.stringify(line)}, expected ${expected === undefined ? `an error (${output.error})` : JSON.stringify(expected)}`
    if (verdict(t, input.key, problem, ALLOWED_ENCODE_DIFFERENCES[input.key])) agree++
  }
  t.comment(`encode: ${agree}/${cases.length} agree (${skipped} skipped, ${Object.keys(ALLOWED_ENCODE_DIFFERENCES).length} allowed differences)`)
})

function jsonable (_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? `${value}n` : typeof value === 'number' && Object.is(value, -0) ? '-0' : value
}
