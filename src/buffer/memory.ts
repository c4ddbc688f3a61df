import type { Chunk, PointBuffer } from './buffer'

/**
 * Bodies shorter than this (a beacon, a poll's points) are copied into a shared block; longer ones
 * (line-protocol pushes) are held as they came, without a copy.
 */
const COPY_BELOW_BYTES = 16 * 1024
const BLOCK_BYTES = 256 * 1024

/** A body as it came, or a block that small bodies are copied into until it is full or peeked. */
interface Held extends Chunk {
  /** Bytes of `body` in use: a block is allocated whole and filled as bodies arrive. */
  used: number
  /** A block still taking small bodies: the last one, not yet peeked nor followed by a large body. */
  open: boolean
}

/**
 * The buffer without SPOOL_DIR: bounded by BUFFER_POINTS, lost on restart.
 *
 * Small bodies are copied into blocks rather than kept one Buffer each: at thousands of beacons a
 * second, that many small objects held until their batch leaves set off old-generation collections
 * of 5–8 ms about once a second (measured on one pinned core: with blocks, the beacon route's p99
 * went from 5–7 ms to under 2 ms, and its requests/s up about 5 %).
 */
export class MemoryBuffer implements PointBuffer {
  readonly durable = false
  points = 0
  /** Memory held: bodies as they came, and whole blocks. */
  bytes = 0
  private readonly held: Held[] = []
  /** How many entries of `held` each peek not yet committed took, oldest first. */
  private readonly peeked: number[] = []
  private peekedCount = 0

  /**
   * `maxBytes` bounds memory as `maxPoints` cannot: 100,000 points with 10 KB string fields are 1 GB.
   * `batchPoints`: most points a block takes, so that a peek of one block is never over a batch.
   */
  constructor (private readonly maxPoints: number, private readonly maxBytes: number, private readonly batchPoints = maxPoints) {}

  /** Whether a push fits; into an empty buffer anything does (bodyLimit bounds it), or it never would. */
  fits (count: number, bytes: number): boolean {
    return this.points === 0 || (this.points + count <= this.maxPoints && this.bytes + bytes <= this.maxBytes)
  }

  async append (chunk: Chunk): Promise<void> {
    this.appendNow(chunk)
  }

  appendNow ({ body, count }: Chunk): void {
    this.points += count
    if (body.length >= COPY_BELOW_BYTES) {
      this.sealLastBlock()
      this.held.push({ body, count, used: body.length, open: false })
      this.bytes += body.length
      return
    }
    let block = this.held.at(-1)
    if (block === undefined || !block.open || block.used + body.length > block.body.length || block.count + count > this.batchPoints) {
      if (block !== undefined) block.open = false
      block = { body: Buffer.allocUnsafeSlow(BLOCK_BYTES), count: 0, used: 0, open: true }
      this.held.push(block)
      this.bytes += BLOCK_BYTES
    }
    block.used += body.copy(block.body, block.used)
    block.count += count
  }

  /**
   * A large body ends the block before it, which would otherwise hold its whole 256 KB for a few
   * small bodies: with beacons and line-protocol pushes interleaved, each a block, that adds up.
   */
  private sealLastBlock (): void {
    const last = this.held.at(-1)
    if (last === undefined || !last.open) return
    last.open = false
    if (last.used > last.body.length / 2) return
    const exact = Buffer.allocUnsafeSlow(last.used)
    last.body.copy(exact, 0, 0, last.used)
    this.bytes -= last.body.length - exact.length
    last.body = exact
  }

  async peek (maxPoints: number): Promise<Chunk | undefined> {
    const first = this.peekedCount
    let end = first
    let count = 0
    while (end < this.held.length && (end === first || count + this.held[end].count <= maxPoints)) count += this.held[end++].count
    if (end === first) return undefined
    this.held[end - 1].open = false // only the last can be open
    this.peeked.push(end - first)
    this.peekedCount = end
    const bodies = this.held.slice(first, end).map(h => h.body.subarray(0, h.used))
    return { body: bodies.length === 1 ? bodies[0] : Buffer.concat(bodies), count }
  }

  async commit (): Promise<void> {
    const n = this.peeked.shift()
    if (n === undefined) return
    for (const held of this.held.splice(0, n)) {
      this.points -= held.count
      this.bytes -= held.body.length
    }
    this.peekedCount -= n
  }

  async close (): Promise<void> {}
}
