/**
 * normalize() throughput on 5,000 realistic lines.
 *
 *   npx ts-node --transpile-only bench/parse.ts
 *
 * (ts-node here is the fork tap installs; `node -r ts-node/register` does not resolve.)
 */
import { normalize, type Precision } from '../src/line-protocol/parse'
import { stampNs } from '../src/clock'

const LINES = 5000
const SECONDS = 3

function payload (precision: Precision, withTimestamps: boolean): Buffer {
  const hosts = Array.from({ length: 50 }, (_, i) => `server${String(i).padStart(2, '0')}`)
  const regions = ['us-west', 'us-east', 'eu-central', 'ap-south']
  const scale = { ns: 1n, us: 1000n, ms: 1000000n, s: 1000000000n }[precision]
  let time = 1700000000000000000n
  const lines: string[] = []
  for (let i = 0; i < LINES; i++) {
    const host = hosts[i % hosts.length]
    const region = regions[i % regions.length]
    const ts = withTimestamps ? ` ${time / scale}` : ''
    time += 10000000n
    switch (i % 4) {
      case 0:
        lines.push(`cpu,host=${host},region=${region} usage_idle=${(90 + (i % 97) / 10).toFixed(1)},usage_user=${i % 13}i,status="ok"${ts}`)
        break
      case 1:
        lines.push(`mem,host=${host},region=${region},env=prod used_percent=${(i % 1000) / 10},available=${8000000000 - i * 1000}i,swap_used=${i * 7}i,active=true${ts}`)
        break
      case 2:
        lines.push(`http_requests,service=api,method=GET,route=/v1/items/:id,host=${host} count=${i}i,latency_ms=${(i % 500) / 7},errors=${i % 3}i,last_status="200 OK",healthy=t${ts}`)
        break
      default:
        lines.push(`postgres_connections,db=app_${i % 5},host=${host} active=${i % 40}i,idle=${i % 17}i,waiting=${i % 3}i,max_ratio=${(i % 100) / 100}${ts}`)
    }
  }
  return Buffer.from(lines.join('\n') + '\n')
}

function run (name: string, body: Buffer, precision: Precision): void {
  const check = normalize(body, precision, stampNs)
  if (!check.ok) throw new Error(`${name}: ${check.message}`)
  if (check.count !== LINES) throw new Error(`${name}: counted ${check.count} lines`)
  for (let i = 0; i < 200; i++) normalize(body, precision, stampNs) // warm-up
  // Mean over the whole run, and the best 0.1 s window (less disturbed by other processes).
  let rounds = 0
  let best = 0
  const start = process.hrtime.bigint()
  let now = start
  while (now - start < BigInt(SECONDS * 1e9)) {
    const windowStart = now
    let windowRounds = 0
    while (now - windowStart < 100_000_000n) {
      normalize(body, precision, stampNs)
      windowRounds++
      now = process.hrtime.bigint()
    }
    rounds += windowRounds
    best = Math.max(best, (windowRounds * LINES) / (Number(now - windowStart) / 1e9))
  }
  const mean = (rounds * LINES) / (Number(now - start) / 1e9)
  const format = (x: number): string => Math.round(x).toLocaleString('en-US').padStart(10)
  console.log(`${name.padEnd(34)} ${format(mean)} lines/s (best window ${format(best)})  ${(mean * body.length / LINES / 1e6).toFixed(0).padStart(4)} MB/s`)
}

console.log(`${LINES} lines, ${payload('ns', true).length} bytes (ns, with timestamps); ${SECONDS} s each`)
run('ns, timestamps (forwarded as-is)', payload('ns', true), 'ns')
run('s, timestamps (scaled)', payload('s', true), 's')
run('ns, no timestamps (stamped)', payload('ns', false), 'ns')
