import { createServer } from 'node:net'

/** A loopback port nothing listens on right now (tests and benchmarks start servers on it). */
export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    }).on('error', reject)
  })
}

/**
 * Polls `probe` every 100 ms until it returns a value (not undefined or false), or throws after
 * `timeoutMs` with the last error. `giveUp` ends the wait at once with its message (a process
 * that died, say).
 */
export async function waitFor<T> (probe: () => Promise<T | undefined | false> | T | undefined | false, what: string, timeoutMs = 15_000, giveUp?: () => string | undefined): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let lastError: unknown
  for (;;) {
    const reason = giveUp?.()
    if (reason !== undefined) throw new Error(reason)
    try {
      const value = await probe()
      if (value !== undefined && value !== false) return value
    } catch (err) {
      lastError = err
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${lastError === undefined ? '' : `: ${String(lastError)}`}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}
