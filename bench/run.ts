/**
 * `npm run bench`: the sidecar against vmagent, side by side (SPEC §7).
 *
 * Starts VictoriaMetrics (the store both write to, pinned with the load generator), vmagent and
 * the sidecar (each pinned to the other core), then for each scenario runs wrk against the two
 * targets in the order A B B A (sidecar, vmagent, vmagent, sidecar) to cancel drift, waits after
 * each phase until the target has delivered everything, and counts what reached the store. The
 * beacon scenario ends with the same load, A B C C B A, against three reference servers
 * (bench/reference.ts): bare Fastify with the same schema and node:http, which do no work, and
 * node:http doing the sidecar's beacon work without Fastify. The table shows what this core allows
 * a Node.js server before the sidecar does anything, and what the work costs without the framework.
 * Every process it starts is ended when it stops, also on errors and Ctrl-C.
 *
 * Environment:
 *   BENCH_SECONDS=10          length of each measured phase
 *   BENCH_WARMUP_SECONDS=3    unmeasured load on each target before a scenario's phases
 *   BENCH_PARSE_SECONDS=2     in-process parser measurement, per case
 *   BENCH_SINK_SECONDS=3      delivery alone (bench/sink.ts), per variant; 0 skips it
 *   BENCH_SCENARIOS=lp,lp-spool,beacons   lp-spool: line protocol against a second sidecar with
 *                            SPOOL_DIR set (a disk queue, as vmagent's -remoteWrite.tmpDataPath)
 *   BENCH_PROFILE=lp|lp-spool|beacons  also run that scenario once more against a sidecar under
 *                             node --cpu-prof, and summarise where its main thread spends time
 *   BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test
 *   BENCH_SETTLE_SECONDS=120  longest wait for a target to deliver what it acknowledged
 *   BENCH_KEEP_LOGS=1         keep every process's log (e.g. with --trace-deopt in BENCH_SIDECAR_NODE_ARGS);
 *                            they are kept anyway when the run fails
 *   BENCH_BACKOFF_MS=0        line protocol: after a 429 a connection waits this long before its
 *                            next request (0: retries at once, as wrk does; the sidecar answers
 *                            Retry-After: 1)
 *
 * To try a change to the sidecar against the same load (A/B), without touching the defaults:
 *   BENCH_SIDECAR_ENTRY=dist/src/server.js      another build's entry point
 *   BENCH_SIDECAR_NODE_ARGS="--max-semi-space-size=4"
 *   BENCH_SIDECAR_ENV="BUFFER_POINTS=200000 MALLOC_ARENA_MAX=2"
 *   BENCH_SIDECAR_CONFIG='{"batchSize":10000}'  merged into SIDECAR_CONFIG
 */
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { join } from 'node:path'
import { formatSummary, summarise } from './cpuprofile'
import { entries, formatFigure, LINES, ONE_FIELD_PER_ENTRY, type ParseFigure } from './parse'
import { cleanup, coreBusySeconds, diffThreads, installSignalHandlers, isInterrupted, keepDir, logTail, rssBytes, Sampler, sleep, start, tempDir, threadCpu, type Child } from './procs'
import type { ReferenceKind } from './reference'
import { BUCKET, ORG, RUNTIME_ENV, RUNTIME_NODE_ARGS, sidecarCounters, sidecarMemory, startReference, startSidecar, startVictoriaMetrics, startVmagent, stop, vmagentVersion, type Store, type Target } from './services'
import type { SinkFigure } from './sink'
import { lineProtocolScript, runWrk, staticScript, type WrkResult } from './wrk'

const LOAD_CPU = '0' // wrk and VictoriaMetrics
const TARGET_CPU = '1' // the sidecar and vmagent
const LP_CONNECTIONS = 4
const BEACON_CONNECTIONS = 8
const REFERENCE_KINDS: ReferenceKind[] = ['fastify', 'node-http', 'node-http-work']
const REFERENCE_NAMES: Record<ReferenceKind, string> = {
  fastify: 'with no work: a bare Fastify route with the sidecar\'s beacon schema',
  'node-http': 'with no work: node:http, JSON.parse of the body',
  'node-http-work': 'the sidecar\'s beacon work without Fastify: node:http, the schema, line protocol, the Writer delivering to the store'
}

const env = (name: string, fallback: string): string => process.env[name] ?? fallback
const SECONDS = Number(env('BENCH_SECONDS', '10'))
const WARMUP_SECONDS = Number(env('BENCH_WARMUP_SECONDS', '3'))
const PARSE_SECONDS = Number(env('BENCH_PARSE_SECONDS', '2'))
const SINK_SECONDS = Number(env('BENCH_SINK_SECONDS', '3'))
const SETTLE_MS = Number(env('BENCH_SETTLE_SECONDS', '120')) * 1000
const BACKOFF_MS = Number(env('BENCH_BACKOFF_MS', '0'))
const SCENARIOS = env('BENCH_SCENARIOS', 'lp,lp-spool,beacons').split(',').map(s => s.trim()).filter(s => s !== '') as Scenario[]
const PROFILE = env('BENCH_PROFILE', '') as Scenario | ''
const DATABASE_URL = env('BENCH_DATABASE_URL', 'postgresql://postgres@127.0.0.1:5432/test')
/** The sidecar's defaults, written out so the report says what was measured. */
const SIDECAR_FILE_CONFIG = { batchSize: 5000, flushInterval: '1s', ...JSON.parse(env('BENCH_SIDECAR_CONFIG', '{}')) as Record<string, unknown> }
const SIDECAR_ENTRY = env('BENCH_SIDECAR_ENTRY', 'dist/src/server.js')
const SIDECAR_NODE_ARGS = env('BENCH_SIDECAR_NODE_ARGS', '').split(' ').filter(a => a !== '')
const SIDECAR_ENV = Object.fromEntries(env('BENCH_SIDECAR_ENV', '').split(' ').filter(a => a.includes('=')).map(a => [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]))
const sidecarOptions = (store: Store, spool: boolean, nodeArgs: string[] = []): Parameters<typeof startSidecar>[0] => ({
  cpu: TARGET_CPU,
  logDir,
  storeUrl: store.url,
  databaseUrl: DATABASE_URL,
  fileConfig: SIDECAR_FILE_CONFIG,
  entry: SIDECAR_ENTRY,
  extraEnv: spool ? { ...SIDECAR_ENV, SPOOL_DIR: tempDir('spool') } : SIDECAR_ENV,
  nodeArgs: [...SIDECAR_NODE_ARGS, ...nodeArgs]
})

type Scenario = 'lp' | 'lp-spool' | 'beacons'
const SCENARIO_NAMES: Scenario[] = ['lp', 'lp-spool', 'beacons']
const isLineProtocol = (s: Scenario): boolean => s !== 'beacons'

interface Phase {
  scenario: Scenario
  target: Target['name']
  /** False for the reference servers: nothing of theirs is expected in the store. */
  forwards: boolean
  label: string
  wrk: WrkResult
  /** Lines (lp) or beacons the target answered 2xx to. */
  acknowledged: number
  /** Upper bound: also the requests still in flight when wrk stopped. */
  maxDelivered: number
  delivered: number
  /** From the start of the load until the store stopped receiving samples. */
  deliverySeconds: number
  /** The sidecar's own accepted counter over the phase. */
  sidecarAccepted?: number
  sidecarDropped?: number
  peakRss: number
  rssAfter: number
  cpuSeconds: number
  wrkCpuSeconds: number
  storeCpuSeconds: number
  /** CPU the machine's other processes took on each core meanwhile (this runner included), in seconds. */
  foreignCpuSeconds: number[]
  threads: Map<string, number>
  /** The sidecar's V8 heap and external memory right after the load (bytes). */
  memory?: Record<string, number>
}

/** The pids of both targets, so the idle one's CPU is not counted as foreign load. */
const targetPids: number[] = []

const runId = randomBytes(3).toString('hex')
const logDir = tempDir('logs')
const scriptDir = tempDir('wrk')

const fmt = (x: number, digits = 0): string => x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
const mb = (bytes: number): string => `${fmt(bytes / 2 ** 20)} MB`
const say = (text: string): void => { process.stderr.write(`${text}\n`) }

function machine (): string[] {
  const model = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown'
  const kernel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()
  let wrk = ''
  try { wrk = execFileSync('wrk', ['-v'], { encoding: 'utf8' }) } catch (err) { wrk = String((err as { stdout?: string }).stdout ?? '') }
  return [
    `CPU: ${model}, ${cpus().length} cores (Linux ${kernel})`,
    `Node ${process.version}; ${wrk.split('\n')[0].split(' Copyright')[0].trim()}`
  ]
}

/** A bench/*.js script in a child pinned to the targets' core; its result is the JSON array it prints. */
async function pinnedScript<T> (script: string, args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<T[]> {
  const child = start(script, TARGET_CPU, process.execPath, [join(__dirname, `${script}.js`), ...args], { env: { ...process.env, ...extraEnv }, logDir })
  const code = await child.exited
  const line = readFileSync(child.logFile, 'utf8').split('\n').find(l => l.startsWith('['))
  if (code !== 0 || line === undefined) throw new Error(`bench/${script}.js failed:\n${logTail(child)}`)
  return JSON.parse(line) as T[]
}

function lpScript (target: Target, prefix: string): string {
  return lineProtocolScript(scriptDir, target.writePath, entries(LINES, prefix), Date.now(), BACKOFF_MS)
}

function beaconScript (target: Target, measurement: string): { script: string, path: string } {
  if (target.beaconPath !== undefined) {
    const body = JSON.stringify({ measurement, tags: { view: 'home' }, fields: { duration_ms: 12.5 } })
    return { script: staticScript(scriptDir, `beacon-${measurement}`, 'application/json', body), path: target.beaconPath }
  }
  return { script: staticScript(scriptDir, `beacon-${measurement}`, 'text/plain; charset=utf-8', `${measurement},view=home duration_ms=12.5`), path: target.writePath }
}

function assertRunning (child: Child): void {
  if (child.process.exitCode === null && child.process.signalCode === null) return
  throw new Error(`${child.name} (pid ${child.pid}) ended: ${child.process.exitCode ?? child.process.signalCode}; last lines of its log:\n${logTail(child)}`)
}

/**
 * Waits until the target says it holds nothing and the store has received no sample for 2 s
 * (vmagent packs samples for up to 1 s before its queue shows them); returns when the store last
 * received one (epoch ms).
 */
async function quiet (store: Store, target: Target, deadline: number): Promise<number> {
  let rows = await store.rowsInserted()
  let lastChange = Date.now()
  for (;;) {
    await sleep(100)
    const now = await store.rowsInserted()
    if (now !== rows) {
      rows = now
      lastChange = Date.now()
    } else if (Date.now() - lastChange >= 2000 && await target.drained()) {
      return lastChange
    }
    assertRunning(target.child)
    if (Date.now() > deadline) throw new Error(`${target.name} still delivering after ${SETTLE_MS / 1000} s`)
  }
}

/** Counts until two reads agree and reach `atLeast`, or the deadline passes (then the last count). */
async function settledCount (store: Store, regex: string, atLeast: number, deadline: number): Promise<number> {
  let last = -1
  for (;;) {
    const now = await store.count(regex)
    if (now === last && now >= atLeast) return now
    if (Date.now() > deadline) return now
    last = now
    await sleep(500)
  }
}

async function runPhase (store: Store, target: Target, scenario: Scenario, label: string, seconds: number): Promise<Phase> {
  const measured = !label.startsWith('warm')
  const name = `b${runId}_${label}_${target.name}`
  let script: string
  let path: string
  let regex: string
  let perRequest: number
  if (isLineProtocol(scenario)) {
    script = lpScript(target, `${name}_`)
    path = target.writePath
    regex = `${name}_(${ONE_FIELD_PER_ENTRY.join('|')})`
    perRequest = LINES
  } else {
    ({ script, path } = beaconScript(target, name))
    regex = `${name}_duration_ms`
    perRequest = 1
  }
  const connections = isLineProtocol(scenario) ? LP_CONNECTIONS : BEACON_CONNECTIONS
  const before = target.name === 'sidecar' ? await sidecarCounters(target) : undefined
  const threadsBefore = threadCpu(target.child.pid)
  const wrk = runWrk({ cpu: LOAD_CPU, connections, seconds, script, url: `${target.url}${path}`, logDir, name: `wrk-${name}` })
  const others = targetPids.filter(pid => pid !== target.child.pid)
  const sampler = new Sampler([target.child.pid, wrk.child.pid, store.child.pid, ...others])
  const busyBefore = coreBusySeconds()
  let result: WrkResult
  try {
    result = await wrk.result
  } finally {
    sampler.stop()
  }
  const busy = coreBusySeconds().map((s, i) => s - busyBefore[i])
  const load = sampler.cpu(wrk.child.pid) + sampler.cpu(store.child.pid)
  const targets = sampler.cpu(target.child.pid) + others.reduce((s, pid) => s + sampler.cpu(pid), 0)
  const foreignCpuSeconds = busy.map((s, core) => Math.max(0, s - (String(core) === LOAD_CPU ? load : String(core) === TARGET_CPU ? targets : 0)))
  const threads = diffThreads(threadsBefore, threadCpu(target.child.pid))
  assertRunning(target.child)
  const memory = target.name === 'sidecar' ? await sidecarMemory(target) : undefined
  const settleStart = Date.now()
  const acknowledged = (result.requests - result.non2xx) * perRequest
  const maxDelivered = (result.requests + connections) * perRequest
  const lastWrite = target.forwards ? await quiet(store, target, settleStart + SETTLE_MS) : settleStart
  const delivered = measured && target.forwards ? await settledCount(store, regex, acknowledged, settleStart + SETTLE_MS) : 0
  const after = before === undefined ? undefined : await sidecarCounters(target)
  const phase: Phase = {
    scenario,
    target: target.name,
    forwards: target.forwards,
    label,
    wrk: result,
    acknowledged,
    maxDelivered,
    delivered,
    sidecarAccepted: after === undefined || before === undefined ? undefined : after.accepted - before.accepted,
    sidecarDropped: after === undefined || before === undefined ? undefined : after.dropped - before.dropped,
    deliverySeconds: result.seconds + Math.max(0, lastWrite - settleStart) / 1000,
    peakRss: sampler.peakRss.get(target.child.pid) ?? 0,
    rssAfter: rssBytes(target.child.pid) ?? 0,
    cpuSeconds: sampler.cpu(target.child.pid),
    wrkCpuSeconds: sampler.cpu(wrk.child.pid),
    storeCpuSeconds: sampler.cpu(store.child.pid),
    foreignCpuSeconds,
    threads,
    memory
  }
  if (measured) say(`  ${describe(phase)}`)
  return phase
}

function rate (p: Phase): number {
  return p.acknowledged / p.wrk.seconds
}

function describe (p: Phase): string {
  if (!p.forwards) return describeReference(p)
  const unit = isLineProtocol(p.scenario) ? 'lines' : 'req'
  const errors = p.wrk.non2xx + p.wrk.socketErrors > 0 ? `, ${fmt(p.wrk.non2xx)} non-2xx, ${fmt(p.wrk.socketErrors)} socket errors` : ''
  const pct = (seconds: number): string => `${fmt(100 * seconds / p.wrk.seconds)}%`
  return `${p.label} ${p.target.padEnd(7)} ${fmt(rate(p)).padStart(9)} ${unit}/s, p99 ${fmt(p.wrk.latencyMs.p99, 2)} ms${errors}; ` +
    `CPU ${pct(p.cpuSeconds)} (${threadSummary(p)}), wrk ${pct(p.wrkCpuSeconds)}, VictoriaMetrics ${pct(p.storeCpuSeconds)}, ` +
    `other processes ${p.foreignCpuSeconds.map((s, core) => `core ${core} ${pct(s)}`).join(' ')}; ` +
    `RSS peak ${mb(p.peakRss)}, after ${mb(p.rssAfter)}${p.memory === undefined ? '' : ` (at the end of the load: V8 heap ${mb(p.memory.heap)} of which new space ${mb(p.memory.new)}, old ${mb(p.memory.old)}, large objects ${mb(p.memory.large)}; external ${mb(p.memory.external)})`}; delivered ${fmt(p.delivered)} of ${fmt(p.acknowledged)} acknowledged, the last of them ${fmt(p.deliverySeconds - p.wrk.seconds, 1)} s after the load`
}

function describeReference (p: Phase): string {
  return `${p.label} ${p.target.padEnd(14)} ${fmt(rate(p)).padStart(9)} req/s, p99 ${fmt(p.wrk.latencyMs.p99, 2)} ms, ${fmt(p.wrk.non2xx)} non-2xx; CPU ${fmt(100 * p.cpuSeconds / p.wrk.seconds)}%, wrk ${fmt(100 * p.wrkCpuSeconds / p.wrk.seconds)}%; RSS peak ${mb(p.peakRss)}`
}

/** The target's CPU by thread kind, e.g. `main (node) 80%, libuv-worker 15%`. */
function threadSummary (p: Phase): string {
  return [...p.threads].filter(([, s]) => s >= 0.01 * p.wrk.seconds).sort((a, b) => b[1] - a[1])
    .map(([name, s]) => `${name} ${fmt(100 * s / p.wrk.seconds)}%`).join(', ')
}

function deliveryLine (p: Phase): string {
  const unit = isLineProtocol(p.scenario) ? 'lines' : 'beacons'
  const verdict = p.delivered < p.acknowledged
    ? `MISSING ${fmt(p.acknowledged - p.delivered)}`
    : p.delivered > p.maxDelivered ? 'MORE THAN SENT' : 'ok'
  const sidecar = p.sidecarAccepted === undefined ? '' : `; sidecar counted ${fmt(p.sidecarAccepted)} accepted, ${fmt(p.sidecarDropped ?? 0)} dropped`
  const extra = p.delivered > p.acknowledged && p.delivered <= p.maxDelivered ? ` (+${fmt(p.delivered - p.acknowledged)} from requests in flight when wrk stopped)` : ''
  return `${p.label} ${p.target.padEnd(7)} acknowledged ${fmt(p.acknowledged).padStart(11)} ${unit}, delivered ${fmt(p.delivered).padStart(11)}${extra}${sidecar}: ${verdict}`
}

interface Combined { rate: number, deliveredRate: number, p99: number, peakRss: number, rssAfter: number, cpu: number, non2xx: number }

function combine (phases: Phase[]): Combined {
  const seconds = phases.reduce((s, p) => s + p.wrk.seconds, 0)
  return {
    rate: phases.reduce((s, p) => s + p.acknowledged, 0) / seconds,
    deliveredRate: phases.reduce((s, p) => s + p.delivered, 0) / phases.reduce((s, p) => s + p.deliverySeconds, 0),
    p99: phases.reduce((s, p) => s + p.wrk.latencyMs.p99, 0) / phases.length,
    peakRss: Math.max(...phases.map(p => p.peakRss)),
    rssAfter: phases[phases.length - 1].rssAfter,
    cpu: phases.reduce((s, p) => s + p.cpuSeconds, 0) / seconds,
    non2xx: phases.reduce((s, p) => s + p.wrk.non2xx, 0)
  }
}

async function scenario (store: Store, sidecar: Target, vmagent: Target, which: Scenario): Promise<Phase[]> {
  say(`\n${which}: warm-up ${WARMUP_SECONDS} s each, then A B B A, ${SECONDS} s each`)
  const phases = await abba(store, [sidecar, vmagent], which, which)
  if (!isLineProtocol(which)) phases.push(...await references(store, which))
  return phases
}

/** A warm-up of each target, then measured phases in the order a, b, b, a (or a, b, c, c, b, a; labels `${label}1`…). */
async function abba (store: Store, targets: Target[], which: Scenario, label: string): Promise<Phase[]> {
  if (WARMUP_SECONDS > 0) {
    for (const target of targets) await runPhase(store, target, which, `warm_${which}`, WARMUP_SECONDS)
  }
  const phases: Phase[] = []
  const order = [...targets, ...[...targets].reverse()]
  for (let i = 0; i < order.length; i++) phases.push(await runPhase(store, order[i], which, `${label}${i + 1}`, SECONDS))
  return phases
}

/**
 * The same beacon load against the reference servers (bench/reference.ts), also A B C C B A: what
 * this core allows a Node.js server with no work, with and without Fastify, and the sidecar's
 * beacon work without Fastify.
 */
async function references (store: Store, which: Scenario): Promise<Phase[]> {
  const servers: Target[] = []
  try {
    for (const kind of REFERENCE_KINDS) {
      servers.push(await startReference(kind, TARGET_CPU, logDir, store.url))
      targetPids.push(servers[servers.length - 1].child.pid)
    }
    return await abba(store, servers, which, 'reference')
  } finally {
    for (const { child } of servers) targetPids.splice(targetPids.indexOf(child.pid), 1)
    await Promise.all(servers.map(async ({ child }) => await stop(child)))
  }
}

async function profile (store: Store, which: Scenario): Promise<string> {
  const dir = tempDir('profile')
  keepDir(dir)
  say(`\nprofile: ${which} against a sidecar under node --cpu-prof (${SECONDS} s)`)
  const sidecar = await startSidecar(sidecarOptions(store, which === 'lp-spool', ['--cpu-prof', `--cpu-prof-dir=${dir}`]))
  if (WARMUP_SECONDS > 0) await runPhase(store, sidecar, which, `warm_profile_${which}`, WARMUP_SECONDS)
  const phase = await runPhase(store, sidecar, which, `profile_${which}`, SECONDS)
  await stop(sidecar.child)
  const file = readdirSync(dir).find(f => f.endsWith('.cpuprofile'))
  if (file === undefined) return `no .cpuprofile was written in ${dir}`
  return [
    `profile: ${join(dir, file)}`,
    `${describe(phase)}`,
    '',
    formatSummary(summarise(join(dir, file)))
  ].join('\n')
}

function table (phases: Phase[], parse: ParseFigure[]): string[] {
  const rows = ['| scenario | sidecar | vmagent | ratio (sidecar/vmagent) | sidecar RSS (peak / after) | vmagent RSS (peak / after) |', '|---|---:|---:|---:|---:|---:|']
  const rss = (c: Combined): string => `${mb(c.peakRss)} / ${mb(c.rssAfter)}`
  for (const which of SCENARIOS) {
    const s = combine(phases.filter(p => p.scenario === which && p.target === 'sidecar'))
    const v = combine(phases.filter(p => p.scenario === which && p.target === 'vmagent'))
    if (isLineProtocol(which)) {
      const buffer = which === 'lp' ? 'sidecar with its memory buffer (the default)' : 'sidecar with SPOOL_DIR (a disk queue, as vmagent has)'
      rows.push(`| line protocol /api/v2/write, ${fmt(LINES)}-line bodies, ${LP_CONNECTIONS} conns, ${buffer}: lines/s (2xx only) | ${fmt(s.rate)} | ${fmt(v.rate)} | ${(s.rate / v.rate).toFixed(2)}× | ${rss(s)} | ${rss(v)} |`)
      rows.push(`| … delivered lines/s, end to end (until the store has them all) | ${fmt(s.deliveredRate)} | ${fmt(v.deliveredRate)} | ${(s.deliveredRate / v.deliveredRate).toFixed(2)}× | | |`)
      rows.push(`| … non-2xx responses | ${fmt(s.non2xx)} | ${fmt(v.non2xx)} | | | |`)
      rows.push(`| … target CPU (core ${TARGET_CPU}) | ${fmt(100 * s.cpu)}% | ${fmt(100 * v.cpu)}% | | | |`)
    } else {
      rows.push(`| one small beacon per request, ${BEACON_CONNECTIONS} conns: requests/s (sidecar /beacons, vmagent 1-line /api/v2/write) | ${fmt(s.rate)} | ${fmt(v.rate)} | ${(s.rate / v.rate).toFixed(2)}× | ${rss(s)} | ${rss(v)} |`)
      rows.push(`| … p99 latency | ${fmt(s.p99, 2)} ms | ${fmt(v.p99, 2)} ms | ${(s.p99 / v.p99).toFixed(2)}× | | |`)
      rows.push(`| … non-2xx responses | ${fmt(s.non2xx)} | ${fmt(v.non2xx)} | | | |`)
      for (const kind of REFERENCE_KINDS) {
        const measured = phases.filter(p => p.scenario === which && p.target === kind)
        if (measured.length === 0) continue
        const r = combine(measured)
        rows.push(`| … reference, the same load on the same core, ${REFERENCE_NAMES[kind]}: requests/s (p99) | ${fmt(r.rate)} (${fmt(r.p99, 2)} ms) | | ${(r.rate / v.rate).toFixed(2)}× | ${mb(r.peakRss)} | |`)
      }
    }
  }
  if (parse.length > 0) rows.push(`| in-process normalize(), ${fmt(LINES)} lines, ns timestamps (one core) | ${fmt(parse[0].mean)} lines/s | — | — | — | — |`)
  return rows
}

/** The environment the sidecar got beyond the usual (defaults otherwise). */
function sidecarSettings (): string {
  const settings = Object.entries(SIDECAR_ENV).map(([k, v]) => `${k}=${v}`)
  return `${settings.length === 0 ? 'BUFFER_POINTS and the rest at their defaults' : settings.join(' ')}; SPOOL_DIR unset (lp-spool: a temporary directory)`
}

/** A warning when other processes took a noticeable share of a core during a phase. */
function quietness (phases: Phase[]): string[] {
  const worst = Math.max(...phases.map(p => Math.max(...p.foreignCpuSeconds) / p.wrk.seconds))
  return worst < 0.1 ? [] : [`  WARNING: other processes on this machine used up to ${fmt(100 * worst)}% of a core during a phase: the figures are disturbed; re-run on a quiet machine.`]
}

async function main (): Promise<void> {
  installSignalHandlers()
  for (const s of [...SCENARIOS, ...(PROFILE === '' ? [] : [PROFILE])]) {
    if (!SCENARIO_NAMES.includes(s)) throw new Error(`unknown scenario "${s}" (${SCENARIO_NAMES.join(', ')})`)
  }
  const started = new Date()
  say(`metrics-sidecar benchmark ${runId}: logs in ${logDir}`)
  say(`in-process parser (${PARSE_SECONDS} s per case, core ${TARGET_CPU})…`)
  const parse = await pinnedScript<ParseFigure>('parse', ['--json'], { BENCH_PARSE_SECONDS: String(PARSE_SECONDS) })

  const store = await startVictoriaMetrics(LOAD_CPU, logDir)
  let sink: SinkFigure[] = []
  if (SINK_SECONDS > 0) {
    say(`delivery alone (${SINK_SECONDS} s per variant, core ${TARGET_CPU})…`)
    sink = await pinnedScript<SinkFigure>('sink', [store.url, String(SINK_SECONDS)])
  }
  const vmagent = await startVmagent(TARGET_CPU, logDir, store.url)
  const sidecar = await startSidecar(sidecarOptions(store, false))
  // A second sidecar, idle but for the lp-spool scenario; started anyway, so every phase runs beside the same processes.
  const spooling = await startSidecar(sidecarOptions(store, true))
  targetPids.push(sidecar.child.pid, spooling.child.pid, vmagent.child.pid)
  await sleep(1000)
  const rssStart = `sidecar ${mb(rssBytes(sidecar.child.pid) ?? 0)}, vmagent ${mb(rssBytes(vmagent.child.pid) ?? 0)}`
  const versions = `vmagent ${await vmagentVersion(vmagent)}`

  const phases: Phase[] = []
  for (const which of SCENARIOS) phases.push(...await scenario(store, which === 'lp-spool' ? spooling : sidecar, vmagent, which))
  const idle: Array<[string, Child]> = [['sidecar', sidecar.child], ['sidecar with SPOOL_DIR', spooling.child], ['vmagent', vmagent.child]]
  const rssIdle = idle.map(([name, child]) => `${name} ${mb(rssBytes(child.pid) ?? 0)}`).join(', ')
  const profileText = PROFILE === '' ? undefined : await profile(store, PROFILE)

  const forwarded = phases.filter(p => p.forwards)
  const out = [
    '',
    `metrics-sidecar benchmark, ${started.toISOString().slice(0, 16).replace('T', ' ')} UTC (run ${runId})`,
    ...machine(),
    versions,
    `layout: sidecar and vmagent pinned to core ${TARGET_CPU}; wrk (-t1) and VictoriaMetrics to core ${LOAD_CPU}; A B B A, ${SECONDS} s per phase, ${WARMUP_SECONDS} s warm-up${BACKOFF_MS > 0 ? `; line-protocol clients wait ${BACKOFF_MS} ms after a 429` : ''}`,
    `sidecar: ${Object.entries(RUNTIME_ENV).map(([k, v]) => `${k}=${v} `).join('')}node ${[...RUNTIME_NODE_ARGS, ...SIDECAR_NODE_ARGS, SIDECAR_ENTRY].join(' ')} (as npm start and the image run it); ${sidecarSettings()}; SIDECAR_CONFIG ${JSON.stringify(SIDECAR_FILE_CONFIG)}; bucket ${BUCKET}, org ${ORG}`,
    '',
    ...table(phases, parse),
    '',
    'phases:',
    ...phases.map(p => `  ${describe(p)}`),
    ...quietness(phases),
    '',
    'delivery (samples in VictoriaMetrics of one field every line has, or of the beacon\'s field):',
    ...forwarded.map(p => `  ${deliveryLine(p)}`),
    `  ${forwarded.every(p => p.delivered >= p.acknowledged) ? 'every acknowledged line was delivered' : 'SOME ACKNOWLEDGED LINES WERE NOT DELIVERED'}`,
    '',
    `RSS idle before any load: ${rssStart}; after all load: ${rssIdle}`,
    '',
    'in-process parser (bench/parse.ts, pinned to the targets\' core):',
    ...parse.map(f => `  ${formatFigure(f)}`)
  ]
  if (sink.length > 0) {
    out.push('', `delivery alone: ${fmt(LINES)}-line batches from one process on core ${TARGET_CPU} into the same VictoriaMetrics (bench/sink.ts):`)
    for (const f of sink) out.push(`  ${f.name.padEnd(55)} ${fmt(f.linesPerSecond).padStart(9)} lines/s, process CPU ${fmt(f.cpuPercent)}%`)
  }
  if (profileText !== undefined) out.push('', profileText)
  console.log(out.join('\n'))
}

main().then(async () => {
  if (env('BENCH_KEEP_LOGS', '') !== '') {
    keepDir(logDir)
    say(`logs kept in ${logDir}`)
  }
  await cleanup()
}, async (err: unknown) => {
  if (isInterrupted()) return // the signal handler cleans up and exits
  say(`benchmark failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`)
  keepDir(logDir)
  say(`logs kept in ${logDir}`)
  await cleanup()
  process.exitCode = 1
})
