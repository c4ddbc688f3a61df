import { access, constants, open, type FileHandle } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { SinkError, type Encoded, type Sink } from './sink'

/** Appends line protocol to a file: the embedded default when no InfluxDB is configured. */
export class FileSink implements Sink {
  readonly description: string
  private handle?: Promise<FileHandle>

  constructor (private readonly path: string) {
    this.description = `file ${resolve(path)}`
  }

  async encode (body: Buffer): Promise<Encoded> {
    return { bytes: body, gzipped: false }
  }

  async send (batch: Encoded): Promise<void> {
    try {
      this.handle ??= open(this.path, 'a')
      await (await this.handle).appendFile(batch.bytes)
    } catch (err) {
      this.handle = undefined
      throw new SinkError(`cannot append to ${this.path}: ${(err as Error).message}`, 'retry')
    }
  }

  async check (_timeoutMs: number): Promise<void> {
    await access(this.path, constants.W_OK).catch(async () => await access(dirname(resolve(this.path)), constants.W_OK))
  }

  async close (): Promise<void> {
    const handle = this.handle
    this.handle = undefined
    if (handle !== undefined) await (await handle).close()
  }
}
