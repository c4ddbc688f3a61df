/**
 * normalize() throughput on 5,000 realistic lines, in process (no HTTP).
 *
 *   npm run bench                      (part of the full benchmark, bench/run.ts)
 *   npx tsc -p tsconfig.bench.json && node dist/bench/parse.js
 *
 * The line shapes here are also the bodies bench/run.ts sends over HTTP.
 */
import { normalize, type Precision } from '../src/line-protocol/parse'
import { writeStampNs } from '../src/clock'

export const LINES = 5000

/**
 * `count` realistic entries without their timestamps: tags, 3 to 5 typed fields (float, integer,
 * string, boolean). `prefix` is put before each measurement name, so one run's points can be told
 * apart in the store.
 */
export function entries (count: number, prefix = ''): string[] {
  const hosts = Array.from({ length: 50 }, (_, i) => `server${String(i).padStart(2, '0')}`)
  const regions = ['us-west', 'us-east', 'eu-central', 'ap-south']
  const out: string[] = []
  for (let i = 0; i < count; i++) {
    const host = hosts[i % hosts.length]
    const region = regions[i % regions.length]
    switch (i % 4) {
      case 0:
        out.push(`${prefix}cpu,host=${host},region=${region} usage_idle=${(90 + (i % 97) / 10).toFixed(1)},usage_user=${i % 13}i,status="ok"`)
        break
      case 1:
        out.push(`${prefix}mem,host=${host},region=${region},env=prod used_percent=${(i % 1000) / 10},available=${8000000000 - i * 1000}i,swap_used=${i * 7}i,active=true`)
        break
      case 2:
        out.push(`${prefix}http_requests,service=api,method=GET,route=/v1/items/:id,host=${host} count=${i}i,latency_ms=${(i % 500) / 7},errors=${i % 3}i,last_status="200 OK",healthy=t`)
        break
      default:
        out.push(`${prefix}postgres_connections,db=app_${i % 5},host=${host} active=${i % 40}i,idle=${i % 17}i,waiting=${i % 3}i,max_ratio=${(i % 100) / 100}`)
    }
  }
  return out
}

/** One field that every entry of each shape above has exactly once: counting its samples counts lines. */
export const ONE_FIELD_PER_ENTRY = ['cpu_usage_idle', 'mem_used_percent', 'http_requests_count', 'postgres_connections_active']

export function payload (precision: Precision, withTimestamps: boolean): Buffer {
  const scale = { ns: 1n, us: 1000n, ms: 1000000n, s: 1000000000n }[precision]
  let time = 1700000000000000000n
  const lines = entries(LINES).map(entry => {
    const ts = withTimestamps ? ` ${time / scale}` : ''
    time += 10000000n
    return entry + ts
  })
  return Buffer.from(lines.join('\n') + '\n')
}

export interface ParseFigure {
  name: string
  /** Mean lines/s over the whole run. */
  mean: number
  /** Best 0.1 s window (less disturbed by other processes). */
  best: number
  /** Mean input MB/s. */
  mbPerSecond: number
}

export function measure (name: string, body: Buffer, precision: Precision, seconds: number): ParseFigure {
  const check = normalize(body, precision, writeStampNs)
  if (!check.ok) throw new Error(`${name}: ${check.message}`)
  if (check.count !== LINES) throw new Error(`${name}: counted ${check.count} lines`)
  for (let i = 0; i < 200; i++) normalize(body, precision, writeStampNs) // warm-up
  let rounds = 0
  let best = 0
  const start = process.hrtime.bigint()
  let now = start
  while (now - start < BigInt(Math.round(seconds * 1e9))) {
    const windowStart = now
    let windowRounds = 0
    while (now - windowStart < 100_000_000n) {
      normalize(body, precision, writeStampNs)
      windowRounds++
      now = process.hrtime.bigint()
    }
    rounds += windowRounds
    best = Math.max(best, (windowRounds * LINES) / (Number(now - windowStart) / 1e9))
  }
  const mean = (rounds * LINES) / (Number(now - start) / 1e9)
  return { name, mean, best, mbPerSecond: mean * body.length / LINES / 1e6 }
}

/** The three cases: forwarded as-is (the hot path), scaled from seconds, stamped on receipt. */
export function measureAll (seconds: number): ParseFigure[] {
  return [
    measure('ns, timestamps (forwarded as-is)', payload('ns', true), 'ns', seconds),
    measure('s, timestamps (scaled)', payload('s', true), 's', seconds),
    measure('ns, no timestamps (stamped)', payload('ns', false), 'ns', seconds)
  ]
}

export function formatFigure (f: ParseFigure): string {
  const format = (x: number): string => Math.round(x).toLocaleString('en-US').padStart(10)
  return `${f.name.padEnd(34)} ${format(f.mean)} lines/s (best window ${format(f.best)})  ${f.mbPerSecond.toFixed(0).padStart(4)} MB/s`
}

if (require.main === module) {
  const seconds = Number(process.env.BENCH_PARSE_SECONDS ?? 3)
  if (process.argv.includes('--json')) {
    // bench/run.ts runs this file pinned to the sidecar's core and reads the result.
    process.stdout.write(JSON.stringify(measureAll(seconds)) + '\n')
  } else {
    console.log(`${LINES} lines, ${payload('ns', true).length} bytes (ns, with timestamps); ${seconds} s each`)
    for (const figure of measureAll(seconds)) console.log(formatFigure(figure))
  }
}
