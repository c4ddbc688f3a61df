import { mkdir, open, readdir, readFile, rename, rm, writeFile, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import type { FastifyBaseLogger } from 'fastify'
import type { Chunk, PointBuffer } from './buffer'

/** Record header: payload bytes, points in it, CRC-32 of the payload (all u32 little-endian). */
const HEADER = 12
const SEGMENT = /^(\d{12})\.seg$/
const segmentName = (id: number): string => `${String(id).padStart(12, '0')}.seg`

interface Segment { id: number, size: number }
interface Position { segment: number, offset: number }

export interface SpoolOptions {
  /** Largest total size of the segment files; past it nothing more is accepted. */
  maxBytes: number
  /** A segment is sealed, and a new one begun, once it is this large. */
  segmentBytes: number
  log: FastifyBaseLogger
}

interface Pending { header: Buffer, payload: Buffer, count: number, resolve: () => void, reject: (err: Error) => void }

/**
 * The durable buffer (SPOOL_DIR): accepted points are appended to segment files and fsynced before
 * append() resolves; concurrent appends share one fsync (group commit). The writer reads from the
 * head; a fully delivered segment is deleted, and the read position is kept in `cursor.json` so a
 * restart replays from about where delivery stopped (at least once). A torn or corrupt record at
 * the end of a segment (a crash mid-write) is reported, cut off, and does not block what follows.
 */
export class Spool implements PointBuffer {
  readonly durable = true
  points = 0
  /** Bytes in segment files, including appends in progress. */
  bytes = 0
  /** Bytes cut off as torn or corrupt since start. */
  corruptBytes = 0
  private readonly segments: Segment[] = []
  private active!: FileHandle
  private reader?: { id: number, handle: FileHandle }
  private cursor: Position = { segment: 0, offset: 0 }
  /** Where each peek not yet committed ends, oldest first. */
  private readonly peeked: Array<Position & { count: number }> = []
  private pending: Pending[] = []
  private pendingBytes = 0
  private flushing?: Promise<void>

  private constructor (private readonly dir: string, private readonly options: SpoolOptions) {}

  static async open (dir: string, options: SpoolOptions): Promise<Spool> {
    const spool = new Spool(dir, options)
    await mkdir(dir, { recursive: true })
    await spool.recover()
    return spool
  }

  fits (_count: number, bytes: number): boolean {
    return this.bytes + this.pendingBytes === 0 || this.bytes + this.pendingBytes + HEADER + bytes <= this.options.maxBytes
  }

  async append (chunk: Chunk): Promise<void> {
    const payload = chunk.body
    const header = Buffer.allocUnsafe(HEADER)
    header.writeUInt32LE(payload.length, 0)
    header.writeUInt32LE(chunk.count, 4)
    header.writeUInt32LE(crc32(payload), 8)
    this.pendingBytes += HEADER + payload.length
    const written = new Promise<void>((resolve, reject) => this.pending.push({ header, payload, count: chunk.count, resolve, reject }))
    this.flushing ??= this.flush().finally(() => { this.flushing = undefined })
    await written
  }

  async peek (maxPoints: number): Promise<Chunk | undefined> {
    let { segment: id, offset } = this.peeked.at(-1) ?? this.cursor
    const payloads: Buffer[] = []
    let count = 0
    for (;;) {
      // Looked up by id on every record: a commit running meanwhile may delete segments before it.
      const i = this.segments.findIndex(s => s.id === id)
      if (i < 0) break
      const segment = this.segments[i]
      if (offset >= segment.size) {
        if (i === this.segments.length - 1) break // the active segment: nothing more yet
        id = this.segments[i + 1].id
        offset = 0
        continue
      }
      const handle = await this.readHandle(segment.id)
      const header = Buffer.allocUnsafe(HEADER)
      await handle.read(header, 0, HEADER, offset)
      const points = header.readUInt32LE(4)
      if (count > 0 && count + points > maxPoints) break
      const payload = Buffer.allocUnsafe(header.readUInt32LE(0))
      await handle.read(payload, 0, payload.length, offset + HEADER)
      payloads.push(payload)
      count += points
      offset += HEADER + payload.length
    }
    if (count === 0) return undefined
    this.peeked.push({ segment: id, offset, count })
    return { body: payloads.length === 1 ? payloads[0] : Buffer.concat(payloads), count }
  }

  async commit (): Promise<void> {
    const peeked = this.peeked.shift()
    if (peeked === undefined) return
    const { segment, offset, count } = peeked
    this.cursor = { segment, offset }
    this.points -= count
    while (this.segments.length > 1 && this.segments[0].id < segment) await this.remove(this.segments[0])
    await this.saveCursor()
  }

  /**
   * Not fsynced, and a failure (a full disk) is only logged: losing the cursor only means replaying
   * some delivered points again after a restart (at least once), never losing any.
   */
  private async saveCursor (): Promise<void> {
    const file = join(this.dir, 'cursor.json')
    try {
      await writeFile(`${file}.tmp`, JSON.stringify(this.cursor))
      await rename(`${file}.tmp`, file)
    } catch (err) {
      this.options.log.warn({ err }, 'spool: cannot save the read position; a restart will replay more')
    }
  }

  async close (): Promise<void> {
    await this.flushing
    await this.reader?.handle.close()
    await this.active.close()
  }

  private async flush (): Promise<void> {
    while (this.pending.length > 0) {
      const batch = this.pending
      this.pending = []
      const buffers = batch.flatMap(p => [p.header, p.payload])
      const size = buffers.reduce((n, b) => n + b.length, 0)
      const segment = this.segments[this.segments.length - 1]
      try {
        const { bytesWritten } = await this.active.writev(buffers, segment.size)
        if (bytesWritten !== size) throw new Error(`short write to the spool (${bytesWritten} of ${size} bytes: is the disk full?)`)
        await this.active.datasync()
        segment.size += size
        this.bytes += size
        for (const p of batch) this.points += p.count
        for (const p of batch) p.resolve()
        if (segment.size >= this.options.segmentBytes) await this.startSegment(segment.id + 1)
      } catch (err) {
        // Anything half-written is overwritten by the next append, which starts at segment.size.
        for (const p of batch) p.reject(err as Error)
      } finally {
        this.pendingBytes -= size
      }
    }
  }

  private async recover (): Promise<void> {
    const ids = (await readdir(this.dir)).map(f => SEGMENT.exec(f)?.[1]).filter(id => id !== undefined).map(Number).sort((a, b) => a - b)
    this.cursor = await this.readCursor(ids)
    for (const id of ids) {
      if (id < this.cursor.segment) {
        await rm(join(this.dir, segmentName(id)), { force: true })
        continue
      }
      const size = await this.scan(id, id === this.cursor.segment ? this.cursor.offset : 0)
      this.segments.push({ id, size })
      this.bytes += size
    }
    const next = ids.length === 0 ? 1 : ids[ids.length - 1] + 1
    if (this.segments.length === 0) this.cursor = { segment: next, offset: 0 }
    await this.startSegment(next)
    if (this.points > 0) this.options.log.info({ points: this.points, bytes: this.bytes }, 'spool: replaying points kept from before the restart')
  }

  /** Counts the points after `from` in a segment and cuts off a torn or corrupt tail; returns the valid size. */
  private async scan (id: number, from: number): Promise<number> {
    const path = join(this.dir, segmentName(id))
    const data = await readFile(path)
    let offset = 0
    while (offset + HEADER <= data.length) {
      const length = data.readUInt32LE(offset)
      const end = offset + HEADER + length
      if (end > data.length || crc32(data.subarray(offset + HEADER, end)) !== data.readUInt32LE(offset + 8)) break
      if (offset >= from) this.points += data.readUInt32LE(offset + 4)
      offset = end
    }
    if (offset < data.length) {
      this.corruptBytes += data.length - offset
      this.options.log.error({ segment: path, at: offset, bytes: data.length - offset }, 'spool: torn or corrupt record cut off (a crash mid-write?); the records before it are kept')
      const handle = await open(path, 'r+')
      await handle.truncate(offset)
      await handle.close()
    }
    return offset
  }

  private async readCursor (ids: number[]): Promise<Position> {
    try {
      const cursor = JSON.parse(await readFile(join(this.dir, 'cursor.json'), 'utf8')) as Position
      if (ids.includes(cursor.segment) && Number.isInteger(cursor.offset)) return cursor
    } catch {}
    return { segment: ids[0] ?? 1, offset: 0 }
  }

  private async startSegment (id: number): Promise<void> {
    await this.active?.close()
    this.active = await open(join(this.dir, segmentName(id)), 'w')
    // The new file's directory entry must be durable too, before anything in it is acknowledged.
    const dir = await open(this.dir, 'r')
    await dir.sync().finally(async () => await dir.close())
    this.segments.push({ id, size: 0 })
  }

  private async readHandle (id: number): Promise<FileHandle> {
    if (this.reader?.id !== id) {
      // Detached before any await: remove(), run by a commit meanwhile, must not close it twice.
      const old = this.reader
      this.reader = undefined
      await old?.handle.close()
      this.reader = { id, handle: await open(join(this.dir, segmentName(id)), 'r') }
    }
    return this.reader.handle
  }

  private async remove (segment: Segment): Promise<void> {
    const reader = this.reader
    if (reader?.id === segment.id) {
      this.reader = undefined
      await reader.handle.close()
    }
    await rm(join(this.dir, segmentName(segment.id)), { force: true })
    this.segments.shift()
    this.bytes -= segment.size
  }
}
