import type { Chunk, PointBuffer } from './buffer'

/** The buffer without SPOOL_DIR: bounded by BUFFER_POINTS, lost on restart. */
export class MemoryBuffer implements PointBuffer {
  readonly durable = false
  points = 0
  private readonly chunks: Chunk[] = []
  private peeked = 0

  constructor (private readonly maxPoints: number) {}

  fits (count: number): boolean {
    return this.points === 0 || this.points + count <= this.maxPoints
  }

  async append (chunk: Chunk): Promise<void> {
    this.chunks.push(chunk)
    this.points += chunk.count
  }

  async peek (maxPoints: number): Promise<Chunk | undefined> {
    let count = 0
    let n = 0
    while (n < this.chunks.length && (n === 0 || count + this.chunks[n].count <= maxPoints)) count += this.chunks[n++].count
    this.peeked = n
    if (n === 0) return undefined
    return { body: n === 1 ? this.chunks[0].body : Buffer.concat(this.chunks.slice(0, n).map(c => c.body)), count }
  }

  async commit (): Promise<void> {
    for (const chunk of this.chunks.splice(0, this.peeked)) this.points -= chunk.count
    this.peeked = 0
  }

  async close (): Promise<void> {}
}
