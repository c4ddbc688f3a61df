/**
 * Child processes of the benchmark: started pinned to a core, logged to files, and always ended
 * (normal end, error, Ctrl-C, SIGTERM), with their temporary directories removed.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { waitFor as sharedWaitFor } from '../test/wait'

export interface Child {
  name: string
  pid: number
  process: ChildProcess
  logFile: string
  /** Resolves with the exit code (or signal name) when the process has ended. */
  exited: Promise<number | string>
}

const children = new Set<Child>()
/** How many processes of each name were started: each gets its own log file. */
const started = new Map<string, number>()
const tempDirs = new Set<string>()
let cleanedUp = false

export function tempDir (label: string): string {
  const dir = mkdtempSync(join(tmpdir(), `sidecar-bench-${label}-`))
  tempDirs.add(dir)
  return dir
}

/** Keeps a directory after the run (e.g. a CPU profile the user wants to open). */
export function keepDir (dir: string): void {
  tempDirs.delete(dir)
}

/**
 * Starts `command` under `taskset -c <cpu>` (taskset execs it, so the pid is the command's own),
 * stdout and stderr to a log file in `logDir`.
 */
export function start (name: string, cpu: string, command: string, args: string[], options: { env?: NodeJS.ProcessEnv, cwd?: string, logDir: string }): Child {
  const n = (started.get(name) ?? 0) + 1
  started.set(name, n)
  const logFile = join(options.logDir, n === 1 ? `${name}.log` : `${name}-${n}.log`)
  const fd = openSync(logFile, 'w')
  const child = spawn('taskset', ['-c', cpu, command, ...args], { env: options.env ?? process.env, cwd: options.cwd, stdio: ['ignore', fd, fd] })
  closeSync(fd)
  if (child.pid === undefined) throw new Error(`${name}: could not start ${command}`)
  const exited = new Promise<number | string>(resolve => child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')))
  const entry: Child = { name, pid: child.pid, process: child, logFile, exited }
  children.add(entry)
  void exited.then(() => children.delete(entry))
  return entry
}

/** SIGTERM, then SIGKILL after `graceMs`. */
export async function stop (child: Child, graceMs = 10_000): Promise<number | string> {
  if (child.process.exitCode !== null || child.process.signalCode !== null) return await child.exited
  child.process.kill('SIGTERM')
  const timer = setTimeout(() => child.process.kill('SIGKILL'), graceMs)
  const result = await child.exited
  clearTimeout(timer)
  return result
}

export function logTail (child: Child, lines = 20): string {
  try {
    return readFileSync(child.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n')
  } catch {
    return ''
  }
}

/** Synchronous, so it also works from an 'exit' handler: kill what still runs, remove temp dirs. */
export function cleanupSync (): void {
  if (cleanedUp) return
  cleanedUp = true
  for (const child of children) {
    try { child.process.kill('SIGKILL') } catch {}
  }
  children.clear()
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true })
  tempDirs.clear()
}

/** Graceful: SIGTERM to each child (in parallel), then the synchronous cleanup. */
export async function cleanup (): Promise<void> {
  await Promise.all([...children].map(async child => await stop(child, 5000)))
  cleanupSync()
}

let interrupted = false
/** Whether Ctrl-C (or SIGTERM/SIGHUP) asked the benchmark to stop: errors after it are its echo. */
export const isInterrupted = (): boolean => interrupted

export function installSignalHandlers (): void {
  process.on('exit', cleanupSync)
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      if (interrupted) process.exit(130)
      interrupted = true
      process.stderr.write(`\n${signal}: stopping every process the benchmark started…\n`)
      void cleanup().finally(() => process.exit(130))
    })
  }
}

export { freePort } from '../test/wait'

export const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

/** Like the tests' waitFor, but a child that exits ends the wait at once, with its log's tail. */
export async function waitFor<T> (probe: () => Promise<T | undefined | false>, what: string, timeoutMs: number, child?: Child): Promise<T> {
  return await sharedWaitFor(probe, what, timeoutMs, () => child !== undefined && (child.process.exitCode !== null || child.process.signalCode !== null)
    ? `${child.name} exited while waiting for ${what}:\n${logTail(child)}`
    : undefined)
}

// ---- /proc ---------------------------------------------------------------------------------

const CLOCK_TICKS = 100 // USER_HZ on Linux

/** Resident set size in bytes, or undefined when the process is gone. */
export function rssBytes (pid: number): number | undefined {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return match === null ? undefined : Number(match[1]) * 1024
  } catch {
    return undefined
  }
}

function statTimes (path: string): { comm: string, seconds: number } | undefined {
  try {
    const stat = readFileSync(path, 'utf8')
    const close = stat.lastIndexOf(')')
    const comm = stat.slice(stat.indexOf('(') + 1, close)
    const fields = stat.slice(close + 2).split(' ') // fields[0] is field 3 (state)
    return { comm, seconds: (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS } // utime, stime
  } catch {
    return undefined
  }
}

/** Busy CPU seconds of each core so far (everything but idle and iowait), from /proc/stat. */
export function coreBusySeconds (): number[] {
  const out: number[] = []
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const match = /^cpu(\d+) (.*)/.exec(line)
    if (match === null) continue
    const [user, nice, system, , , irq, softirq, steal] = match[2].trim().split(/\s+/).map(Number)
    out[Number(match[1])] = (user + nice + system + irq + softirq + steal) / CLOCK_TICKS
  }
  return out
}

/**
 * CPU seconds per kind of thread: the main thread, libuv's pool (gzip, fs), V8's helpers (GC,
 * compiler), Go's runtime threads, … keyed by thread name.
 */
export function threadCpu (pid: number): Map<string, number> {
  const out = new Map<string, number>()
  let tids: string[] = []
  try { tids = readdirSync(`/proc/${pid}/task`) } catch {}
  const main = statTimes(`/proc/${pid}/stat`)?.comm
  for (const tid of tids) {
    const t = statTimes(`/proc/${pid}/task/${tid}/stat`)
    if (t === undefined) continue
    // Node's libuv pool (gzip, fs) and V8's platform workers (GC, compiler) keep the process name.
    const comm = t.comm.replace(/\d+$/, '').trim()
    const name = tid === String(pid) ? 'main thread' : comm === main ? 'other threads' : comm
    out.set(name, (out.get(name) ?? 0) + t.seconds)
  }
  return out
}

export function diffThreads (before: Map<string, number>, after: Map<string, number>): Map<string, number> {
  const out = new Map<string, number>()
  for (const [name, s] of after) out.set(name, s - (before.get(name) ?? 0))
  return out
}

/**
 * Samples processes every `intervalMs` until stopped: the peak RSS of each, and the CPU seconds
 * each used between the first and the last sample (also for a process that ends meanwhile).
 */
export class Sampler {
  readonly peakRss = new Map<number, number>()
  private readonly firstCpu = new Map<number, number>()
  private readonly lastCpu = new Map<number, number>()
  private readonly timer: NodeJS.Timeout

  constructor (private readonly pids: number[], intervalMs = 200) {
    this.sample()
    this.timer = setInterval(() => this.sample(), intervalMs)
  }

  private sample (): void {
    for (const pid of this.pids) {
      const rss = rssBytes(pid)
      if (rss === undefined) continue
      this.peakRss.set(pid, Math.max(rss, this.peakRss.get(pid) ?? 0))
      const cpu = statTimes(`/proc/${pid}/stat`)?.seconds
      if (cpu === undefined) continue
      if (!this.firstCpu.has(pid)) this.firstCpu.set(pid, cpu)
      this.lastCpu.set(pid, cpu)
    }
  }

  cpu (pid: number): number {
    return (this.lastCpu.get(pid) ?? 0) - (this.firstCpu.get(pid) ?? 0)
  }

  stop (): void {
    this.sample()
    clearInterval(this.timer)
  }
}
