import { createServer, connect, type Server, type Socket } from 'node:net'
import { freePort } from './helper'

/**
 * A TCP hop between the sidecar and a real server, which a test can cut and restore: the sidecar
 * sees exactly what a server outage looks like (connections reset, then refused).
 */
export class TcpProxy {
  private server?: Server
  private readonly sockets = new Set<Socket>()

  private constructor (readonly port: number, private readonly target: { host: string, port: number }) {}

  static async start (target: { host: string, port: number }): Promise<TcpProxy> {
    const proxy = new TcpProxy(await freePort(), target)
    await proxy.up()
    return proxy
  }

  async up (): Promise<void> {
    const server = createServer(client => {
      const upstream = connect(this.target.port, this.target.host)
      for (const s of [client, upstream]) {
        this.sockets.add(s)
        s.on('close', () => this.sockets.delete(s)).on('error', () => {})
      }
      client.pipe(upstream).pipe(client)
    })
    await new Promise<void>(resolve => server.listen(this.port, '127.0.0.1', resolve))
    this.server = server
  }

  /**
   * The network goes silent: what is under way on open connections is neither delivered nor refused
   * (as when a node or a link dies), while new connections go through as before.
   */
  freeze (): void {
    for (const s of this.sockets) {
      s.unpipe()
      s.pause()
    }
  }

  async down (): Promise<void> {
    const server = this.server
    this.server = undefined
    for (const s of this.sockets) s.destroy()
    if (server !== undefined) await new Promise(resolve => server.close(resolve))
  }
}
