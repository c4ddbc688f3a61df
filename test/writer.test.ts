import t, { type Test } from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type IncomingMessage } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gunzipSync } from 'node:zlib'
import pino from 'pino'
import { retryAfterMs } from '../src/http/retry-after'
import { InfluxSink } from '../src/sinks/influxdb'
import type { PointBuffer } from '../src/buffer/buffer'
import { MemoryBuffer } from '../src/buffer/memory'
import { Spool } from '../src/buffer/spool'
import { Writer, type WriterOptions } from '../src/writer'
import { freePort, latestBy, startVictoriaMetrics, waitFor, type VictoriaMetrics } from './helper'


interface Received { url: string, headers: IncomingMessage['headers'], body: string, at: number, answeredAt?: number }
type Answer = { status: number, headers?: Record<string, string>, body?: string, delayMs?: number } | 'forward'

/**
 * InfluxDB as the writer meets it in production: it may answer 429/5xx/4xx. `answer` decides per
 * request; 'forward' hands the request to a real VictoriaMetrics, where the test counts what landed.
 */
async function influxFront (t: Test, vm: VictoriaMetrics, answer: (request: Received, n: number) => Answer): Promise<{ url: string, received: Received[] }> {
  const received: Received[] = []
  const port = await freePort()
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', c => chunks.push(c)).on('end', () => {
      const raw = Buffer.concat(chunks)
      const body = (req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw).toString()
      const request: Received = { url: req.url ?? '', headers: req.headers, body, at: Date.now() }
      received.push(request)
      const decision = answer(request, received.length)
      const reply = (status: number, headers: Record<string, string> = {}, text = ''): void => {
        request.answeredAt = Date.now()
        res.writeHead(status, headers).end(text)
      }
      if (decision !== 'forward') {
        setTimeout(reply, decision.delayMs ?? 0, decision.status, { 'content-type': 'application/json', ...decision.headers }, decision.body)
        return
      }
      fetch(`${vm.url}${req.url ?? ''}`, { method: 'POST', body }).then(r => reply(r.status), () => reply(502))
    })
  })
  await new Promise<void>(resolve => server.listen(port, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return { url: `http://127.0.0.1:${port}`, received }
}

const options = (overrides: Partial<WriterOptions> = {}): WriterOptions => ({
  batchSize: 100, flushInterval: 50, batchesInFlight: 2, maxRetryDelay: 2000, log: pino({ level: 'silent' }), ...overrides
})

const lines = (name: string, from: number, count: number): Buffer =>
  Buffer.from(Array.from({ length: count }, (_, i) => `${name},n=${from + i} v=${from + i}i ${1_700_000_000_000_000_000 + from + i}\n`).join(''))

/** `buffer`: its size in points (a MemoryBuffer as plugins/writer.ts builds it), or the buffer itself. */
const startWriter = (t: Test, url: string, overrides: Partial<WriterOptions> = {}, buffer: number | PointBuffer = 10_000): Writer => {
  const writerOptions = options(overrides)
  // Small bodies share blocks of at most one batch.
  if (typeof buffer === 'number') buffer = new MemoryBuffer(buffer, Infinity, writerOptions.batchSize)
  const writer = new Writer(new InfluxSink({ url, token: 'server-token', org: 'org', bucket: 'app' }), buffer, writerOptions)
  t.teardown(async () => await writer.close(Date.now()))
  return writer
}

t.test('Retry-After is read in seconds (or as an HTTP date)', async t => {
  t.equal(retryAfterMs('2'), 2000)
  t.equal(retryAfterMs(' 0 '), 0)
  t.equal(retryAfterMs(new Date(61_000).toUTCString(), 1_000), 60_000)
  t.equal(retryAfterMs(undefined), undefined)
  t.equal(retryAfterMs('soon'), undefined)
})

t.test('batches are gzipped, name precision=ns, carry the token, and land in the store', async t => {
  const vm = await startVictoriaMetrics(t)
  const front = await influxFront(t, vm, () => 'forward')
  const writer = startWriter(t, front.url)
  for (let i = 0; i < 250; i += 10) t.ok(await writer.accept(lines('batched', i, 10), 10, 'test'))
  await waitFor(() => writer.stats.written === 250, 'all points written')
  t.equal(front.received.length, 3, '250 points in batches of at most 100')
  for (const request of front.received) {
    t.match(request.url, /^\/api\/v2\/write\?org=org&bucket=app&precision=ns$/)
    t.equal(request.headers.authorization, 'Token server-token')
    t.equal(request.headers['content-encoding'], 'gzip')
  }
  t.equal((await vm.export('{__name__="batched_v"}')).length, 250)
  t.same(writer.stats.accepted, { test: 250 })
  t.equal(writer.bufferedPoints, 0)
})

t.test('batchesInFlight 1: one batch in flight at a time, in order, also when one is retried', async t => {
  const vm = await startVictoriaMetrics(t)
  const front = await influxFront(t, vm, (_r, n) => n === 1 ? { status: 503, body: '{"code":"unavailable","message":"restarting"}' } : 'forward')
  const writer = startWriter(t, front.url, { maxRetryDelay: 300, batchesInFlight: 1 })
  // Accepted faster than delivered: the writer peeks at (and gzips) the next batch while one is out.
  const chunks = Array.from({ length: 50 }, (_, i) => lines('ordered', i * 10, 10))
  for (const chunk of chunks) t.ok(await writer.accept(chunk, 10, 'test'))
  await waitFor(() => writer.stats.written === 500, 'all points written')
  const [refused, ...sent] = front.received
  t.equal(sent[0].body, refused.body, 'the refused batch goes again before any other')
  t.equal(sent.map(r => r.body).join(''), Buffer.concat(chunks).toString(), 'batches arrive in the order the points were accepted')
  const overlapping = front.received.slice(1).filter((r, i) => r.at < (front.received[i].answeredAt ?? Infinity))
  t.equal(overlapping.length, 0, 'each batch is sent after the previous one was answered')
  t.equal((await vm.export('{__name__="ordered_v"}')).length, 500)
})

const UNAVAILABLE = { status: 503, body: '{"code":"unavailable","message":"restarting"}' }

t.test('two batches in flight: the next goes before the first is answered, and the buffer lets go in order', async t => {
  const vm = await startVictoriaMetrics(t)
  // The first batch is refused twice, after a while: the second is delivered meanwhile.
  let refusals = 0
  const front = await influxFront(t, vm, r => r.body.startsWith('overlap,n=0 ') && ++refusals <= 2 ? { ...UNAVAILABLE, delayMs: 200 } : 'forward')
  const writer = startWriter(t, front.url, { maxRetryDelay: 400 })
  t.ok(await writer.accept(lines('overlap', 0, 100), 100, 'test'))
  t.ok(await writer.accept(lines('overlap', 100, 100), 100, 'test'))
  await waitFor(() => writer.stats.written === 100, 'the second batch written')
  t.equal(writer.bufferedPoints, 200, 'the second batch stays held while the first is retried: a spool would not skip it')
  t.ok(await writer.accept(lines('overlap', 200, 300), 300, 'test'))
  await waitFor(() => writer.stats.written === 500, 'all points written')
  t.equal(writer.bufferedPoints, 0)
  const [first, second] = front.received
  t.ok(second.at < (first.answeredAt ?? Infinity), 'the second batch was sent before the first was answered')
  t.equal(front.received.filter(r => r.body.startsWith('overlap,n=0 ')).length, 3, 'the refused batch went again until it landed')
  t.equal((await vm.export('{__name__="overlap_v"}')).length, 500)
})

t.test('stopped while an older batch is retried: what a younger batch delivered is not counted as dropped', async t => {
  const vm = await startVictoriaMetrics(t)
  const front = await influxFront(t, vm, r => r.body.startsWith('stuck,n=0 ') ? UNAVAILABLE : 'forward')
  const writer = startWriter(t, front.url, { maxRetryDelay: 200 })
  t.ok(await writer.accept(lines('stuck', 0, 100), 100, 'test'))
  t.ok(await writer.accept(lines('stuck', 100, 100), 100, 'test'))
  await waitFor(() => writer.stats.written === 100, 'the second batch written')
  await writer.close(Date.now() + 100)
  t.equal(writer.stats.dropped.shutdown, 100, 'only the undelivered batch')
  t.equal((await vm.export('{__name__="stuck_v"}')).length, 100)
})

t.test('points accepted while a commit is under way are delivered without waiting for another push', async t => {
  const vm = await startVictoriaMetrics(t)
  // A commit that takes a while after letting go of its points, as a spool's does (it deletes files).
  class SlowCommit extends MemoryBuffer {
    async commit (): Promise<void> {
      await super.commit()
      await new Promise(resolve => setTimeout(resolve, 200))
    }
  }
  const writer = startWriter(t, vm.url, {}, new SlowCommit(10_000, 100))
  t.ok(await writer.accept(lines('gap', 0, 100), 100, 'test'))
  await waitFor(() => writer.stats.written === 100, 'the first batch written')
  t.ok(await writer.accept(lines('gap', 100, 10), 10, 'test'), 'accepted during the commit')
  await waitFor(() => writer.stats.written === 110, 'the later points written', 3000)
  t.equal((await vm.export('{__name__="gap_v"}')).length, 110)
})

t.test('429 and 5xx are retried after Retry-After seconds; nothing is lost', async t => {
  const vm = await startVictoriaMetrics(t)
  const front = await influxFront(t, vm, (_r, n) => n === 1
    ? { status: 429, headers: { 'retry-after': '1' }, body: '{"code":"too many requests","message":"slow down"}' }
    : n === 2 ? { status: 503, body: '{"code":"unavailable","message":"restarting"}' } : 'forward')
  const writer = startWriter(t, front.url)
  t.ok(await writer.accept(lines('retried', 0, 50), 50, 'test'))
  await waitFor(() => writer.stats.written === 50, 'points written after retries')
  t.equal(front.received.length, 3)
  t.ok(front.received[1].at - front.received[0].at >= 950, 'waited the Retry-After second, not a millisecond')
  t.equal(writer.stats.retries, 2)
  t.equal(front.received[2].body, front.received[0].body, 'the same batch is sent again')
  t.equal((await vm.export('{__name__="retried_v"}')).length, 50)
  t.equal(writer.failure, undefined, 'healthy again once a write succeeds')
})

t.test('network errors are retried with backoff and reported until the store is back', async t => {
  const vm = await startVictoriaMetrics(t)
  await vm.stop()
  const writer = startWriter(t, vm.url, { maxRetryDelay: 300 })
  t.ok(await writer.accept(lines('outage', 0, 20), 20, 'test'))
  await waitFor(() => writer.stats.retries >= 2, 'retries')
  t.match(writer.failure, /InfluxDB unreachable/)
  t.equal(writer.bufferedPoints, 20, 'points are kept while the store is away')
  await vm.start()
  await waitFor(() => writer.stats.written === 20, 'delivery after the outage')
  t.equal((await vm.export('{__name__="outage_v"}')).length, 20)
})

t.test('a point InfluxDB refuses (400) is isolated and dropped; its neighbours land', async t => {
  const vm = await startVictoriaMetrics(t)
  const front = await influxFront(t, vm, request => request.body.includes('poison')
    ? { status: 400, body: '{"code":"invalid","message":"field type conflict"}' }
    : 'forward')
  const writer = startWriter(t, front.url)
  // A string field may hold a raw newline: the batch is split by entries, not by lines.
  const body = Buffer.concat([lines('mixed', 0, 40), Buffer.from('mixed,n=poison v="text" 1700000000000000999\nnote,n=x s="two\nlines" 1700000000000000998\n'), lines('mixed', 40, 39)])
  t.ok(await writer.accept(body, 81, 'test'))
  await waitFor(() => writer.stats.written + writer.stats.dropped.rejected === 81, 'every point accounted for')
  t.equal(writer.stats.written, 80)
  t.equal(writer.stats.dropped.rejected, 1)
  t.equal((await vm.export('{__name__="mixed_v"}')).length, 79)
  t.ok(front.received.length < 20, `isolated by halving (${front.received.length} requests)`)
})

t.test('401, 403 and 404 (bad token, no such bucket) keep the points and report the failure until it is fixed', async t => {
  const vm = await startVictoriaMetrics(t)
  for (const [status, message] of [[401, 'unauthorized access'], [403, 'insufficient permissions'], [404, 'bucket "app" not found']] as const) {
    let fixed = false
    const front = await influxFront(t, vm, () => fixed ? 'forward' : { status, body: JSON.stringify({ code: 'x', message }) })
    const writer = startWriter(t, front.url, { maxRetryDelay: 200 })
    t.ok(await writer.accept(lines(`refused${status}`, 0, 5), 5, 'test'))
    await waitFor(() => writer.failure, 'the failure to be reported')
    t.equal(writer.failure, `InfluxDB answered ${status}: ${message}`)
    await waitFor(() => front.received.length >= 3, 'retries')
    t.equal(writer.stats.dropped.rejected, 0, `${status}: nothing dropped`)
    fixed = true
    await waitFor(() => writer.stats.written === 5, 'delivery once fixed')
    t.equal(writer.failure, undefined)
    t.equal((await vm.export(`{__name__="refused${status}_v"}`)).length, 5, 'in the store')
  }
})

t.test('a full buffer refuses new points instead of dropping them silently', async t => {
  const vm = await startVictoriaMetrics(t)
  await vm.stop()
  const writer = startWriter(t, vm.url, { maxRetryDelay: 200 }, 100)
  t.ok(await writer.accept(lines('full', 0, 60), 60, 'push'))
  t.notOk(await writer.accept(lines('full', 60, 60), 60, 'push'), 'over the limit: refused, for the caller to retry')
  writer.acceptOrDrop(lines('full', 120, 60), 60, 'poll')
  await waitFor(() => writer.stats.dropped.buffer_full === 60, 'a poller cannot retry: the drop to be counted')
  t.notOk(writer.holdNow(lines('full', 200, 41), 41, 'push'), 'holdNow refuses what does not fit, at once')
  t.equal(writer.bufferedPoints, 60, 'and holds none of it')
  t.ok(writer.holdNow(lines('full', 200, 30), 30, 'push'), 'what still fits is held at once by the memory buffer')
  t.ok(await writer.accept(lines('full', 230, 10), 10, 'push'), 'and accepted')
  t.equal(writer.bufferedPoints, 100)
  t.equal(writer.stats.accepted.push, 100, 'both ways count as accepted')
  const closed = startWriter(t, vm.url)
  await closed.close(Date.now())
  t.notOk(closed.holdNow(lines('full', 240, 1), 1, 'push'), 'nothing is held once closing, even with room')
  t.equal(closed.bufferedPoints, 0)
})

t.test('a push waits for room in a full buffer, and pushes woken together still respect the bound', async t => {
  const vm = await startVictoriaMetrics(t)
  await vm.stop()
  const writer = startWriter(t, vm.url, { maxRetryDelay: 200, batchSize: 100 }, 100)
  t.ok(await writer.accept(lines('wait', 0, 100), 100, 'push'))
  t.ok(writer.full)
  const started = Date.now()
  t.notOk(await writer.accept(lines('wait', 100, 60), 60, 'push', 300), 'no room within the wait: refused')
  t.ok(Date.now() - started >= 290, 'after waiting')
  t.notOk(await writer.waitForRoom(100), 'still full')

  const held: number[] = []
  const push = async (from: number): Promise<boolean> => {
    const accepted = await writer.accept(lines('wait', from, 60), 60, 'push', 20_000)
    held.push(writer.bufferedPoints)
    return accepted
  }
  const both = Promise.all([push(200), push(300)])
  await vm.start()
  t.same(await both, [true, true], 'both accepted once InfluxDB took what was in the way')
  t.ok(held.every(points => points <= 100), `never more than BUFFER_POINTS held (${held.join(', ')})`)
  await waitFor(() => writer.stats.written === 220, 'delivery')
  t.equal((await vm.export('{__name__="wait_v"}')).length, 220, 'every accepted point delivered')
})

t.test('close() delivers what is buffered; what cannot be delivered by the deadline is counted', async t => {
  const vm = await startVictoriaMetrics(t)
  const writer = startWriter(t, vm.url, { flushInterval: 60_000 })
  t.ok(await writer.accept(lines('closing', 0, 30), 30, 'test'))
  await writer.close(Date.now() + 5000)
  t.equal(writer.stats.written, 30, 'flushed without waiting for the interval')
  t.same(latestBy(await vm.export('{__name__="closing_v",n="7"}'), 'n'), { 7: 7 })
  t.notOk(await writer.accept(lines('closing', 30, 1), 1, 'test'), 'nothing is accepted after close')

  await vm.stop()
  const stuck = startWriter(t, vm.url)
  t.ok(await stuck.accept(lines('stuck', 0, 7), 7, 'test'))
  const started = Date.now()
  await stuck.close(Date.now() + 500)
  t.ok(Date.now() - started < 2000, 'close keeps its deadline')
  t.equal(stuck.stats.dropped.shutdown, 7, 'every undelivered point is counted')
  t.equal(stuck.stats.written, 0)
})

t.test('a buffer that cannot be read (the spool directory removed) is reported and read again; the writer does not die', async t => {
  const vm = await startVictoriaMetrics(t)
  const dir = await mkdtemp(join(tmpdir(), 'spool-'))
  const spool = await Spool.open(dir, { maxBytes: 10_000_000, segmentBytes: 1000, log: pino({ level: 'silent' }) })
  for (let i = 0; i < 5; i++) await spool.append({ body: lines('gone', i * 10, 10), count: 10 })
  await rm(dir, { recursive: true })
  const writer = startWriter(t, vm.url, { maxRetryDelay: 100 }, spool)
  await waitFor(() => writer.bufferFailure, 'the read failure to be reported')
  t.match(writer.bufferFailure, /^the buffer cannot be read: ENOENT/)
  await new Promise(resolve => setTimeout(resolve, 300))
  t.match(writer.bufferFailure, /ENOENT/, 'still reported while it lasts, and the process is still here')
})

t.test('drops of a large poll into a full buffer are all counted, and logged a line per 10 s rather than per chunk', async t => {
  const vm = await startVictoriaMetrics(t)
  await vm.stop()
  const logged: Array<{ msg: string, points: number }> = []
  const log = pino({ level: 'warn' }, { write: (line: string) => { logged.push(JSON.parse(line)) } })
  const writer = startWriter(t, vm.url, { log, maxRetryDelay: 200 }, 100)
  t.ok(await writer.accept(lines('full', 0, 100), 100, 'push'))
  for (let i = 0; i < 200; i++) writer.acceptOrDrop(lines('poll', i * 10, 10), 10, 'poll')
  await waitFor(() => writer.stats.dropped.buffer_full === 2000, 'every drop counted')
  const drops = (): typeof logged => logged.filter(l => l.msg === 'points dropped: buffer full')
  t.equal(drops().length, 1, 'one line, not 200')
  // The rest of the burst is logged when the next line is due, or at the latest on close.
  await writer.close(Date.now())
  t.equal(drops().length, 2, 'the rest of the burst in one more line')
  t.equal(drops().reduce((sum, l) => sum + l.points, 0), 2000, 'the lines account for every dropped point')
})
