import t from 'tap'
import { decode, normalize, type NormalizeResult, type StampWriter } from '../src/line-protocol/parse'
import { formatPoint } from '../src/line-protocol/format'
import { stampNs, writeStampNs } from '../src/clock'

const noStamp: StampWriter = () => { throw new Error('stamp called for a line with a timestamp') }
/** A stamp writer that writes what `next` returns. */
const writing = (next: () => string): StampWriter => (out, at) => at + out.write(next(), at, 'latin1')

function forwarded (result: NormalizeResult): string {
  if (!result.ok) throw new Error(result.message)
  return result.body.toString()
}

/** The result with its body as text, for comparing whole results. */
const asText = (result: NormalizeResult): unknown => result.ok ? { ...result, body: result.body.toString() } : result

t.test('normalize scales timestamps to nanoseconds', async t => {
  const body = Buffer.from('m v=1 1700000000\nm v=2 -5\nm v=3 0\nm v=4 0017\n')
  t.equal(forwarded(normalize(body, 's', noStamp)), 'm v=1 1700000000000000000\nm v=2 -5000000000\nm v=3 0\nm v=4 17000000000\n')
  t.equal(forwarded(normalize(Buffer.from('m v=1 1700000000123\n'), 'ms', noStamp)), 'm v=1 1700000000123000000\n')
  t.equal(forwarded(normalize(Buffer.from('m v=1 1700000000123456\n'), 'us', noStamp)), 'm v=1 1700000000123456000\n')
  t.equal(forwarded(normalize(Buffer.from('m v=1 -9223372036\n'), 's', noStamp)), 'm v=1 -9223372036000000000\n')
})

t.test('normalize rejects timestamps beyond int64 nanoseconds', async t => {
  const tooLate = normalize(Buffer.from('m v=1 1\nm v=1 9223372037\n'), 's', noStamp)
  t.match(tooLate, { ok: false, line: 2 })
  t.match(normalize(Buffer.from('m v=1 9223372036854775808\n'), 'ns', noStamp), { ok: false, line: 1 })
  t.match(normalize(Buffer.from('m v=1 -9223372036854775808\n'), 'ns', noStamp), { ok: true })
  t.match(normalize(Buffer.from('m v=1 9223372036854776\n'), 'us', noStamp), { ok: false })
})

t.test('normalize stamps lines without a timestamp, once each', async t => {
  let next = 100n
  const stamp = (): string => String(next++)
  const result = normalize(Buffer.from('a v=1\nb v=2 555\nc v=3\n'), 'ns', writing(stamp))
  t.same(asText(result), { ok: true, body: 'a v=1 100\nb v=2 555\nc v=3 101\n', count: 3 })

  const lines = forwarded(normalize(Buffer.from('m v=1\n'.repeat(1000)), 'ms', writeStampNs)).trimEnd().split('\n')
  const stamps = lines.map(line => BigInt(line.split(' ')[2]))
  t.ok(stamps.every((s, i) => i === 0 || s > stamps[i - 1]), 'strictly increasing')
})

t.test('writeStampNs and stampNs share one clock: 19 digits, strictly increasing, now', async t => {
  const out = Buffer.alloc(20)
  const before = BigInt(Date.now()) * 1_000_000n
  const stamps = Array.from({ length: 3000 }, (_, i) => i % 2 === 0 ? stampNs() : out.toString('latin1', 0, writeStampNs(out, 0)))
  const after = BigInt(Date.now() + 1) * 1_000_000n
  t.ok(stamps.every(s => /^[0-9]{19}$/.test(s)), 'nineteen digits each')
  const values = stamps.map(s => BigInt(s))
  t.ok(values.every((v, i) => i === 0 || v > values[i - 1]), 'strictly increasing across both')
  t.ok(values[0] >= before && values[values.length - 1] < after, 'receipt time, in nanoseconds')
})

t.test('normalize reports the first failing line', async t => {
  const body = Buffer.from('# header\n\nm v=1\nm v=2 1\r\nm,t=x v=oops 3\nm v=\n')
  const result = normalize(body, 'ns', writeStampNs)
  t.match(result, { ok: false, line: 5, message: /^line 5\b.*field value/ })
  t.match(normalize(Buffer.from('m v="multi\nline" 1\nbad\n'), 'ns', writeStampNs), { ok: false, line: 3 })
  t.match(normalize(Buffer.from('m,a=1,a=2 v=1\n'), 'ns', writeStampNs), { ok: false, message: /duplicate tag key/ })
})

t.test('normalize forwards measurement, tags and fields byte for byte', async t => {
  const line = 'wè\\ ather\\,x,ta\\=g=v\\ a\\,l\\\\ue,ü=日本 f\\ k="q\\"uo\\\\te\nnewline",i=-3i,u=18446744073709551615u,b=TRUE,x=1.5e-3'
  t.equal(forwarded(normalize(Buffer.from(`${line} 1700000000\n`), 's', noStamp)), `${line} 1700000000000000000\n`)
  const bytes = Buffer.concat([Buffer.from('m,k=x\x01y s="'), Buffer.from([0xe2, 0x82, 0xac]), Buffer.from('" 1\n')])
  t.equal(forwarded(normalize(bytes, 'ns', noStamp)), bytes.toString())
})

t.test('normalize drops comments and blank lines and handles CRLF and a last line without newline', async t => {
  const body = Buffer.from('# comment\r\n\r\n   \n  m v=1 1\r\n# another\nm v=2 2   \nm v=3 3')
  t.same(asText(normalize(body, 'ns', noStamp)), { ok: true, body: 'm v=1 1\nm v=2 2\nm v=3 3\n', count: 3 })
  t.same(asText(normalize(Buffer.from('m v=1\r\n'), 'ns', writing(() => '7'))), { ok: true, body: 'm v=1 7\n', count: 1 })
  t.same(asText(normalize(Buffer.from(''), 'ns', noStamp)), { ok: true, body: '', count: 0 })
  t.same(asText(normalize(Buffer.from('# only a comment'), 'ns', noStamp)), { ok: true, body: '', count: 0 })
  t.match(normalize(Buffer.from('m v=1 1\rm v=2 2\n'), 'ns', noStamp), { ok: false, line: 1 }) // a lone CR is no line break
  t.match(normalize(Buffer.from('# tab\tin comment\n'), 'ns', noStamp), { ok: false, line: 1 })
})

t.test('normalize returns a body already in ns form unchanged', async t => {
  const body = 'cpu,host=a usage=1.5,n=2i 1700000000000000000\ncpu,host=b usage=2,n=3i 1700000000000000001\n'
  t.same(asText(normalize(Buffer.from(`# c\n${body}`), 'ns', noStamp)), { ok: true, body, count: 2 })
})

t.test('number syntax InfluxDB rejects is rejected, as are NaN and infinities', async t => {
  for (const value of ['0x1p3', '1_000', '1.5i', '-1u', 'NaN', '-Inf', '1e400', '9223372036854775808i', '18446744073709551616u', '1..2', '.', '-', 'tru']) {
    t.match(normalize(Buffer.from(`m v=${value}\n`), 'ns', writeStampNs), { ok: false }, value)
  }
  for (const value of ['1.', '.5', '-.5e-3', '1E+9', '-9223372036854775808i', '0u', '007i', 't', 'False']) {
    t.match(normalize(Buffer.from(`m v=${value}\n`), 'ns', writeStampNs), { ok: true }, value)
  }
})

t.test('decode', async t => {
  const body = Buffer.from('m\\ 1,b=2,a=1\\,x f=1.5,i=-2i,u=3u,t=T,s="a\\"b\\\\c" 123\nm2 f=2\n')
  t.same(decode(body, 's', '1700000000987654321'), {
    ok: true,
    points: [
      {
        measurement: 'm 1',
        tags: [['b', '2'], ['a', '1,x']],
        fields: [
          { key: 'f', type: 'float', value: 1.5 },
          { key: 'i', type: 'int', value: -2n },
          { key: 'u', type: 'uint', value: 3n },
          { key: 't', type: 'bool', value: true },
          { key: 's', type: 'string', value: 'a"b\\c' }
        ],
        timestamp: '123000000000'
      },
      { measurement: 'm2', tags: [], fields: [{ key: 'f', type: 'float', value: 2 }], timestamp: '1700000000000000000' }
    ]
  })
  t.match(decode(Buffer.from('ok v=1\nnot ok\n'), 'ns', '0'), { ok: false, line: 2 })
})

t.test('formatPoint writes what the reference encoder writes', async t => {
  const point = (fields: Record<string, number | bigint | string>, tags?: Record<string, string>, measurement = 'm'): string | undefined =>
    formatPoint({ measurement, tags, fields, timestamp: '1' })
  t.equal(point({ a: 6632243, b: 0.0001, c: 0.00001, d: 1e21, e: -0.64, f: 123456 }), 'm a=6.632243e+06,b=0.0001,c=1e-05,d=1e+21,e=-0.64,f=123456 1')
  // Where Go switches between plain and exponent notation (1e-4 and 1e6), and the extremes.
  const floats = {
    a: -0, b: 0, c: 999999.9999999999, d: 1e6, e: -1e6, f: 9.999999999999999e-5, g: -0.0001, h: 1e-7, i: 2 ** 53,
    j: 5e-324, k: 1.7976931348623157e308, l: 123456.789, m: 1.5e-10, n: 0.1
  }
  t.equal(point(floats), 'm a=-0,b=0,c=999999.9999999999,d=1e+06,e=-1e+06,f=9.999999999999999e-05,g=-0.0001,h=1e-07,' +
    'i=9.007199254740992e+15,j=5e-324,k=1.7976931348623157e+308,l=123456.789,m=1.5e-10,n=0.1 1')
  t.equal(point({ 'k\\': 1, v: 1 }, { path: 'C:\\dir', 'a b': 'x,y=z' }), 'm,a\\ b=x\\,y\\=z,path=C:\\dir v=1 1')
  t.equal(point({ v: 1 }, { t: 'ends\\' }), undefined, 'a trailing backslash would escape the separator')
  t.equal(point({ v: 1 }, undefined, 'ends\\'), undefined)
  t.equal(point({ v: 1 }, { t: '' }), 'm v=1 1', 'empty tag values are left out')
})
