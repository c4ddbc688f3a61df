import t from 'tap'
import { execFileSync, spawn } from 'node:child_process'
import { join } from 'node:path'
import { addDerps, buildTestApp, createDatabase, freePort, sql, waitFor } from './helper'
import { TcpProxy } from './tcp-proxy'

const SERVER = join(__dirname, '..', 'dist', 'src', 'server.js')

t.test('one replica per database runs the pollers; another takes over when it is killed', async t => {
  const db = await createDatabase(t)
  await addDerps(db, { husky: 1 })
  const env = { DATABASE_URL: db, POLL_INTERVAL: '400ms', SINK_FILE: '/dev/null' }
  const port = await freePort()
  const first = spawn(process.execPath, [SERVER], { env: { PATH: process.env.PATH, ...env, PORT: String(port) }, stdio: 'ignore' })
  t.teardown(() => first.kill('SIGKILL'))
  const ready = async (): Promise<{ checks: Array<{ name: string, message?: string }> }> => await (await fetch(`http://127.0.0.1:${port}/ready`)).json() as never
  await waitFor(async () => (await ready()).checks.find(c => c.name === 'leader')?.message?.startsWith('leader'), 'the first replica to lead')

  const second = await buildTestApp(t, env)
  await new Promise(resolve => setTimeout(resolve, 1500))
  t.equal(second.leader.leading, false, 'the second replica follows')
  t.equal(second.scheduler.stats.get('derps')?.polls, 0, 'and runs no poll')
  const metrics = (await second.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, /^sidecar_leader 0$/m)
  t.match((await second.inject({ method: 'GET', url: '/ready' })).json(), { status: 'ready', checks: [{}, {}, {}, { name: 'leader', message: /^follower/ }] })
  t.equal((await second.inject({ method: 'POST', url: '/beacons', payload: { measurement: 'm', fields: { v: 1 } } })).statusCode, 204, 'a follower takes pushes')

  first.kill('SIGKILL')
  const killed = Date.now()
  await waitFor(() => second.leader.leading, 'the second replica to take over', 5000)
  const takeover = Date.now() - killed
  t.ok(takeover < 400 + 300, `took over in ${takeover} ms (interval 400 ms)`)
  await waitFor(() => (second.scheduler.stats.get('derps')?.polls ?? 0) > 0, 'polls on the new leader')
  t.match((await second.inject({ method: 'GET', url: '/metrics' })).body, /^sidecar_leader 1$/m)
})

/** iptables, to make a connection vanish without a FIN or RST: null where it cannot be used (not root, no netfilter). */
function iptables (): ((...args: string[]) => void) | null {
  try {
    execFileSync('iptables', ['-L', 'INPUT', '-n'], { stdio: 'ignore' })
    return (...args) => { execFileSync('iptables', args, { stdio: 'ignore' }) }
  } catch {
    return null
  }
}

t.test('a leader whose node vanishes (no FIN, no RST) loses the lock: another takes over in seconds, not hours', { skip: iptables() === null ? 'needs iptables (root)' : false }, async t => {
  const rule = iptables() as (...args: string[]) => void
  const db = await createDatabase(t)
  const env = { DATABASE_URL: db, POLL_INTERVAL: '2s', SINK_FILE: '/dev/null' }
  const port = await freePort()
  const first = spawn(process.execPath, [SERVER], { env: { PATH: process.env.PATH, ...env, PORT: String(port) }, stdio: 'ignore' })
  t.teardown(() => { first.kill('SIGCONT'); first.kill('SIGKILL') })
  const lockedBy = async (): Promise<number | undefined> => (await sql(db, `SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a USING (pid)
    WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()`)).rows[0]?.client_port as number | undefined
  const clientPort = await waitFor(lockedBy, 'the first replica to hold the lock')
  const second = await buildTestApp(t, env)
  await new Promise(resolve => setTimeout(resolve, 1500))
  t.equal(second.leader.leading, false, 'the second replica follows')

  // The node is gone: its process stops, and every packet of its lock connection is lost.
  const drop = [['INPUT', '-i', 'lo', '-p', 'tcp', '--sport', String(clientPort), '-j', 'DROP'], ['INPUT', '-i', 'lo', '-p', 'tcp', '--dport', String(clientPort), '-j', 'DROP']]
  for (const r of drop) rule('-I', ...r)
  t.teardown(() => { for (const r of drop) rule('-D', ...r) })
  first.kill('SIGSTOP')
  const vanished = Date.now()
  // PostgreSQL's keepalives on the lock connection give up after ~9 s; the follower checks every second.
  await waitFor(() => second.leader.leading, 'the second replica to take over', 30_000)
  const takeover = Date.now() - vanished
  t.ok(takeover < 15_000, `took over ${takeover} ms after the leader vanished`)
})

t.test('PostgreSQL outage: not ready, still alive, no log flood; recovers by itself', async t => {
  const db = await createDatabase(t)
  await addDerps(db, { husky: 1 })
  const proxy = await TcpProxy.start({ host: '127.0.0.1', port: 5432 })
  t.teardown(async () => await proxy.down())
  const url = new URL(db)
  url.port = String(proxy.port)
  const logs: Array<{ level: number }> = []
  const { Writable } = await import('node:stream')
  const stream = new Writable({ write (chunk, _e, done) { logs.push(JSON.parse(String(chunk))); done() } })
  const app = await buildTestApp(t, { DATABASE_URL: url.href, POLL_INTERVAL: '200ms', SINK_FILE: '/dev/null' }, { logger: { level: 'info', stream } })
  await waitFor(async () => (await app.inject({ method: 'GET', url: '/ready' })).statusCode === 200 && app.leader.leading, 'ready and leading')

  await proxy.down()
  const cut = Date.now()
  await waitFor(async () => (await app.inject({ method: 'GET', url: '/ready' })).statusCode === 503, '/ready to fail', 5000)
  t.ok(Date.now() - cut < 1000, `not ready within ${Date.now() - cut} ms (interval 200 ms)`)
  const notReady = (await app.inject({ method: 'GET', url: '/ready' })).json()
  t.match(notReady, { status: 'not ready', checks: [{ name: 'postgres', status: 'fail', message: /ECONNREFUSED/ }, { name: 'buffer', status: 'pass' }, { name: 'sink', status: 'pass' }] })
  t.equal((await app.inject({ method: 'GET', url: '/health' })).statusCode, 200, 'alive all the same')
  const before = logs.length
  await new Promise(resolve => setTimeout(resolve, 3000))
  t.ok(logs.length - before <= 4, `${logs.length - before} log lines in 3 s of outage (15 intervals)`)
  t.equal(app.leader.leading, false, 'no lock without a connection: pollers stopped')

  await proxy.up()
  await waitFor(async () => (await app.inject({ method: 'GET', url: '/ready' })).statusCode === 200, '/ready to recover', 5000)
  const polls = app.scheduler.stats.get('derps')?.polls ?? 0
  await waitFor(() => app.leader.leading && (app.scheduler.stats.get('derps')?.polls ?? 0) > polls, 'polling to resume', 5000)
  t.pass('polling resumed without a restart')
})
