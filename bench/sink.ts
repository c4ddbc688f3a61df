/**
 * The delivery side alone: how many lines/s one process can hand to VictoriaMetrics in
 * 5,000-line batches, through the sidecar's own InfluxSink (one batch at a time; one in flight
 * while the next is gzipped at level 1; two in flight, as src/writer.ts does by default) and
 * through plain node:http without gzip. It bounds what the sidecar's memory-buffer ingest can
 * reach, whatever the HTTP side does.
 *
 *   node dist/bench/sink.js http://127.0.0.1:8428 [SECONDS]   (bench/run.ts runs it pinned)
 */
import { Agent, request } from 'node:http'
import { InfluxSink } from '../src/sinks/influxdb'
import { entries, LINES } from './parse'

export interface SinkFigure { name: string, linesPerSecond: number, cpuPercent: number }

/** Eight distinct bodies (timestamps 10 s apart per body), as bytes like the writer holds them. */
function bodies (prefix: string): Buffer[] {
  const base = Date.now() - 3_600_000
  return Array.from({ length: 8 }, (_, b) => Buffer.from(entries(LINES, prefix).map((e, i) => `${e} ${base - b * 10_000 + i}000000\n`).join('')))
}

async function post (agent: Agent, url: URL, body: Buffer): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const req = request(url, {
      method: 'POST',
      agent,
      headers: { 'content-type': 'text/plain; charset=utf-8', 'content-length': body.length }
    }, response => {
      response.resume()
      response.on('end', () => (response.statusCode !== undefined && response.statusCode < 300 ? resolve() : reject(new Error(`status ${response.statusCode}`))))
    })
    req.on('error', reject)
    req.end(body)
  })
}

/** Runs `send` from `inFlight` loops for `seconds`; lines/s and CPU of this process (all threads). */
async function measure (name: string, seconds: number, inFlight: number, send: (i: number) => Promise<void>): Promise<SinkFigure> {
  for (let i = 0; i < 4; i++) await send(i) // warm-up, connections open
  const cpu = process.cpuUsage()
  const start = process.hrtime.bigint()
  const end = start + BigInt(Math.round(seconds * 1e9))
  let batches = 0
  let next = 0
  await Promise.all(Array.from({ length: inFlight }, async () => {
    while (process.hrtime.bigint() < end) {
      await send(next++)
      batches++
    }
  }))
  const elapsed = Number(process.hrtime.bigint() - start) / 1e9
  const used = process.cpuUsage(cpu)
  return { name, linesPerSecond: batches * LINES / elapsed, cpuPercent: 100 * (used.user + used.system) / 1e6 / elapsed }
}

export async function measureSink (storeUrl: string, seconds: number, tag: string): Promise<SinkFigure[]> {
  const figures: SinkFigure[] = []
  const writeUrl = new URL(`${storeUrl}/api/v2/write?org=bench&bucket=bench&precision=ns`)
  const agent = new Agent({ keepAlive: true })

  const sink = new InfluxSink({ url: storeUrl, org: 'bench', bucket: 'bench' })
  const viaSink = bodies(`${tag}_sink_`)
  const viaSinkSend = async (i: number): Promise<void> => await sink.send(await sink.encode(viaSink[i % 8]))
  figures.push(await measure('InfluxSink: gzip level 1, encode then send, 1 in flight', seconds, 1, viaSinkSend))
  // The next batch is gzipped while one is in flight, and sent after it (batchesInFlight: 1).
  let ahead = sink.encode(viaSink[0])
  figures.push(await measure('InfluxSink: gzip level 1, next encoded during send', seconds, 1, async i => {
    const encoded = await ahead
    ahead = sink.encode(viaSink[(i + 1) % 8])
    await sink.send(encoded)
  }))
  await ahead
  // Two loops: while one waits for its answer, the other gzips and sends (the writer's default).
  figures.push(await measure('InfluxSink: gzip level 1, 2 in flight (the writer)', seconds, 2, viaSinkSend))

  for (const [name, inFlight] of [['node:http, no gzip, 1 in flight', 1], ['node:http, no gzip, 2 in flight', 2]] as const) {
    const texts = bodies(`${tag}_${name.replace(/[^a-z0-9]+/gi, '_')}_`)
    figures.push(await measure(name, seconds, inFlight, async i => await post(agent, writeUrl, texts[i % 8])))
  }
  agent.destroy()
  await sink.close()
  return figures
}

if (require.main === module) {
  const [url, seconds] = process.argv.slice(2)
  if (url === undefined) {
    process.stderr.write('usage: node dist/bench/sink.js VICTORIAMETRICS_URL [SECONDS]\n')
    process.exit(2)
  }
  measureSink(url, Number(seconds ?? 3), `bsink${process.pid}`).then(figures => {
    process.stdout.write(JSON.stringify(figures) + '\n')
  }, err => {
    process.stderr.write(`${String(err)}\n`)
    process.exitCode = 1
  })
}
