import { connect, createServer } from 'node:net'

/**
 * A loopback port that refuses connections, for tests of a peer that is down. freePort() will not
 * do for that: once closed, its port is back among those listen(0) hands out, and a test file running
 * alongside may be listening on it a moment later. Ports below 1024 are never handed out that way,
 * so one refused now stays refused.
 */
export async function refusedPort (): Promise<number> {
  for (const port of [1, 3, 5, 7, 11, 13, 17]) {
    const refused = await new Promise<boolean>(resolve => {
      const socket = connect(port, '127.0.0.1')
      socket.once('connect', () => { socket.destroy(); resolve(false) })
      socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'))
    })
    if (refused) return port
  }
  throw new Error('every candidate port below 1024 accepts connections on 127.0.0.1')
}

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
