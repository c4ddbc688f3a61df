import t from 'tap'
import { MemoryBuffer } from '../src/buffer/memory'

const text = (i: number): string => `m v=${i} ${1_700_000_000_000_000_000 + i}\n`
const line = (i: number): { body: Buffer, count: number } => ({ body: Buffer.from(text(i)), count: 1 })
const values = (body: Buffer | undefined): number[] => [...(body?.toString() ?? '').matchAll(/v=(\d+)/g)].map(m => Number(m[1]))
const range = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i)

t.test('small bodies are copied into blocks and come back in order, batch by batch', async t => {
  const buffer = new MemoryBuffer(100_000, Infinity, 1000)
  for (let i = 0; i < 2500; i++) buffer.appendNow(line(i))
  t.equal(buffer.points, 2500)
  let next = 0
  for (;;) {
    const chunk = await buffer.peek(1000)
    if (chunk === undefined) break
    t.ok(chunk.count <= 1000, 'no batch over batchPoints')
    t.same(values(chunk.body), range(next, chunk.count), 'in order, nothing lost or repeated')
    next += chunk.count
    await buffer.commit()
  }
  t.equal(next, 2500)
  t.equal(buffer.points, 0)
})

t.test('a block peeked takes no more bodies: what comes after waits for the next batch', async t => {
  const buffer = new MemoryBuffer(100_000, Infinity, 1000)
  buffer.appendNow(line(0))
  buffer.appendNow(line(1))
  const first = await buffer.peek(1000)
  buffer.appendNow(line(2))
  t.same(values(first?.body), [0, 1], 'the peeked batch is unchanged by a later append')
  const second = await buffer.peek(1000)
  t.same(values(second?.body), [2])
  await buffer.commit()
  t.equal(buffer.points, 1, 'commits go in peek order: the first batch is gone')
  await buffer.commit()
  t.equal(buffer.points, 0)
  t.equal(await buffer.peek(1000), undefined)
})

t.test('a large body is held as it came, without a copy, between blocks of small ones', async t => {
  const buffer = new MemoryBuffer(100_000, Infinity, 10_000)
  const large = Buffer.from(range(10, 2000).map(text).join(''))
  buffer.appendNow(line(0))
  buffer.appendNow({ body: large, count: 2000 })
  buffer.appendNow(line(2010))
  const before = await buffer.peek(1)
  t.same(values(before?.body), [0])
  t.equal(before?.body.buffer.byteLength, before?.body.length, 'the block it ended keeps only the bytes it holds')
  const chunk = await buffer.peek(2000)
  t.ok(chunk?.body.buffer === large.buffer && chunk.body.byteOffset === large.byteOffset, 'the same memory')
  t.same(values((await buffer.peek(1))?.body), [2010])
})

t.test('a full block starts another; both fit in one peek when under the batch', async t => {
  const buffer = new MemoryBuffer(100_000, Infinity, 10_000)
  const body = Buffer.alloc(10_000, 'x')
  body.write('\n', body.length - 1)
  for (let i = 0; i < 40; i++) buffer.appendNow({ body, count: 1 }) // 400 KB: over one 256 KB block
  const chunk = await buffer.peek(10_000)
  t.equal(chunk?.count, 40)
  t.equal(chunk?.body.length, 400_000, 'every byte of both blocks, none of their unused room')
})

t.test('BUFFER_POINTS bounds what fits; one body always fits an empty buffer', async t => {
  const buffer = new MemoryBuffer(10, Infinity, 5)
  t.ok(buffer.fits(50, 0), 'an empty buffer takes one body of any size')
  for (let i = 0; i < 10; i++) buffer.appendNow(line(i))
  t.notOk(buffer.fits(1, 0))
  await buffer.peek(5)
  await buffer.commit()
  t.ok(buffer.fits(5, 0))
  t.notOk(buffer.fits(6, 0))
})

t.test('bufferMaxBytes bounds the memory held, whatever the points carry', async t => {
  const buffer = new MemoryBuffer(100_000, 1024 * 1024)
  const big = (i: number): { body: Buffer, count: number } => ({ body: Buffer.from(`m s="${'x'.repeat(10_000)}",i=${i}i\n`.repeat(10)), count: 10 })
  let held = 0
  while (buffer.fits(10, big(held).body.length)) {
    buffer.appendNow(big(held))
    held += 10
  }
  t.ok(held < 1000, `${held} points of 10 KB strings fit in 1 MiB, far from BUFFER_POINTS`)
  t.ok(buffer.bytes <= 1024 * 1024, `${buffer.bytes} bytes held`)
  t.ok(buffer.bytes >= 1024 * 1024 - 101_000, 'and the room was used')
  while (await buffer.peek(1000) !== undefined) await buffer.commit()
  t.equal(buffer.bytes, 0, 'all of it let go once delivered')
  t.ok(buffer.fits(10, 1024 * 1024))

  // Small bodies are copied into 256 KB blocks: a block counts whole while it is held.
  buffer.appendNow(line(1))
  t.equal(buffer.bytes, 256 * 1024)
  await buffer.peek(10)
  await buffer.commit()
  t.equal(buffer.bytes, 0)
})
