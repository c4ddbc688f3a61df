import type { FastifyBaseLogger } from 'fastify'
import pg from 'pg'

/** The advisory lock every sidecar of one database competes for ('metrics-sidecar' → int8). */
const LEADER_LOCK_KEY = 7_225_461_729_115_049_318n

/** How long a lock check may take before the connection, and the lock with it, is given up. */
const LOCK_CHECK_TIMEOUT_MS = 5000

/** Server-side TCP keepalives of the lock connection: idle 4 s, then 5 probes 1 s apart. */
const SERVER_KEEPALIVES = 'SET tcp_keepalives_idle = 4; SET tcp_keepalives_interval = 1; SET tcp_keepalives_count = 5'

export interface LeaderOptions {
  /** How often a follower tries to take the lock, and the leader checks it still holds it (ms). */
  checkInterval: number
  log: FastifyBaseLogger
  onLead: () => void
  onFollow: () => Promise<void>
}

/**
 * One sidecar per database runs the pollers: the one holding a PostgreSQL advisory lock on its own
 * connection. The lock dies with that connection, so when the leader dies (even kill -9) the
 * database frees it and a follower takes it at its next check, within one check interval.
 */
export class LeaderElection {
  leading = false
  private client?: pg.Client
  private timer?: NodeJS.Timeout
  private lastError?: string
  private stopped = false

  constructor (private readonly connection: pg.ClientConfig, private readonly options: LeaderOptions) {}

  start (): void {
    this.stopped = false
    void this.check()
  }

  async stop (): Promise<void> {
    this.stopped = true
    clearTimeout(this.timer)
    if (this.leading) {
      this.leading = false
      await this.options.onFollow()
    }
    await this.client?.end().catch(() => {})
    this.client = undefined
  }

  private async check (): Promise<void> {
    try {
      const client = await this.connect()
      if (this.leading) {
        await client.query('SELECT 1') // the lock lives as long as this connection does
      } else {
        const { rows } = await client.query<{ held: boolean }>('SELECT pg_try_advisory_lock($1::int8) AS held', [String(LEADER_LOCK_KEY)])
        // stop() may have run meanwhile: its client.end() lets go of the lock, and no poller starts.
        if (rows[0].held && !this.stopped) this.lead()
      }
      this.lastError = undefined
    } catch (err) {
      // Connection lost: so is the lock. A lasting failure (database down) is logged once.
      const message = (err as Error).message
      if (message !== this.lastError) this.options.log.warn({ err }, 'leader election: cannot reach PostgreSQL')
      this.lastError = message
      this.client?.end().catch(() => {})
      this.client = undefined
      await this.follow()
    }
    if (!this.stopped) this.timer = setTimeout(() => { void this.check() }, this.options.checkInterval)
  }

  private async connect (): Promise<pg.Client> {
    if (this.client !== undefined) return this.client
    const client = new pg.Client({
      ...this.connection,
      application_name: 'metrics-sidecar leader',
      // A check that hangs (the network gone) fails instead: the connection is dropped, and with it the lock.
      query_timeout: LOCK_CHECK_TIMEOUT_MS,
      keepAlive: true
    })
    client.on('error', () => {
      this.client = undefined
      void this.follow()
    })
    await client.connect()
    this.client = client
    // A leader whose node vanished sends no FIN: PostgreSQL would hold its connection, and the lock,
    // until the OS's keepalive gives up (2 h by default). These settings make it give up in ~9 s.
    await client.query(SERVER_KEEPALIVES)
    return client
  }

  private lead (): void {
    this.leading = true
    this.options.log.info('leader: this sidecar runs the database pollers')
    this.options.onLead()
  }

  private async follow (): Promise<void> {
    if (!this.leading) return
    this.leading = false
    this.options.log.warn('leader lock lost: pollers stopped until it is taken again')
    await this.options.onFollow()
  }
}
