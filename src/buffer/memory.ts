import type { Chunk, PointBuffer } from './buffer'

/** The buffer without SPOOL_DIR: bounded by BUFFER_POINTS, lost on restart. */
export class MemoryBuffer implements PointBuffer {
  readonly durable = false
  points = 0
  private readonly chunks: Chunk[] = []
  /** How many chunks each peek not yet committed took, oldest first. */
  private readonly peeked: number[] = []
  private peekedChunks = 0

  constructor (private readonly maxPoints: number) {}

  fits (count: number): boolean {
    return this.points === 0 || this.points + count <= this.maxPoints
  }

  async append (chunk: Chunk): Promise<void> {
    this.chunks.push(chunk)
    this.points += chunk.count
  }

  async peek (maxPoints: number): Promise<Chunk | undefined> {
    const first = this.peekedChunks
    let end = first
    let count = 0
    while (end < this.chunks.length && (end === first || count + this.chunks[end].count <= maxPoints)) count += this.chunks[end++].count
    if (end === first) return undefined
    this.peeked.push(end - first)
    this.peekedChunks = end
    return { body: end - first === 1 ? this.chunks[first].body : Buffer.concat(this.chunks.slice(first, end).map(c => c.body)), count }
  }

  async commit (): Promise<void> {
    const n = this.peeked.shift()
    if (n === undefined) return
    for (const chunk of this.chunks.splice(0, n)) this.points -= chunk.count
    this.peekedChunks -= n
  }

  async close (): Promise<void> {}
}
