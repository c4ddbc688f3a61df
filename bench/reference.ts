/**
 * Reference servers for the beacon scenario: the same request answered by less than the sidecar,
 * so the table shows what this core allows a Node.js server with and without Fastify.
 *
 *   node dist/bench/reference.js fastify|node-http PORT
 *   node dist/bench/reference.js node-http-work PORT   (INFLUX_URL… as for the sidecar)
 *
 *   fastify         a bare Fastify app, one POST /beacons route with the sidecar's own body schema;
 *                   it keeps nothing
 *   node-http       node:http reading the body and JSON.parse-ing it; it keeps nothing
 *   node-http-work  node:http doing the sidecar's beacon work without Fastify: the same schema
 *                   (ajv), the same line protocol, the same Writer and memory buffer delivering to
 *                   INFLUX_URL; only the happy path (anything else is answered 400 or 429, bare)
 *
 * All answer 204, and 200 on GET /health (the benchmark waits for it).
 */
import { createServer } from 'node:http'
import Ajv from 'ajv'
import addFormats from 'ajv-formats'
import Fastify from 'fastify'
import pino from 'pino'
import { Beacon, BeaconsBody, beaconsToLineProtocol } from '../src/beacon'
import { writerOptions } from '../plugins/writer'
import { loadConfig } from '../src/config'
import { ajvOptions } from '../src/http/validation'
import { MemoryBuffer } from '../src/buffer/memory'
import { InfluxSink } from '../src/sinks/influxdb'
import { Writer } from '../src/writer'

export type ReferenceKind = 'fastify' | 'node-http' | 'node-http-work'

function fastifyServer (port: number): void {
  const app = Fastify({ logger: false, ajv: ajvOptions })
  app.post('/beacons', { schema: { body: BeaconsBody } }, (_request, reply) => {
    void reply.code(204).send()
  })
  app.get('/health', async () => ({ status: 'pass' }))
  app.listen({ host: '127.0.0.1', port }).catch(fail)
}

function nodeHttpServer (port: number): void {
  createServer((request, response) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      if (request.method === 'POST') JSON.parse(Buffer.concat(chunks).toString())
      response.writeHead(request.method === 'POST' ? 204 : 200).end()
    })
  }).listen(port, '127.0.0.1')
}

/** The sidecar's beacon path with Fastify taken out: what the work itself costs on this core. */
function nodeHttpWorkServer (port: number): void {
  const config = loadConfig()
  if (config.influx === undefined) fail('node-http-work needs INFLUX_URL')
  const writer = new Writer(new InfluxSink(config.influx), new MemoryBuffer(config.bufferPoints, config.bufferMaxBytes, config.batchSize), writerOptions(config, pino({ level: 'warn' })))
  const ajv = new Ajv(ajvOptions.customOptions)
  addFormats(ajv)
  const valid = ajv.compile<Beacon | Beacon[]>(BeaconsBody)
  createServer((request, response) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      if (request.method !== 'POST') return response.writeHead(200).end()
      try {
        const beacons: unknown = JSON.parse(Buffer.concat(chunks).toString())
        if (!valid(beacons)) return response.writeHead(400).end()
        const { body, count } = beaconsToLineProtocol(beacons)
        response.writeHead(writer.holdNow(body, count, 'beacons') ? 204 : 429).end()
      } catch {
        response.writeHead(400).end()
      }
    })
  }).listen(port, '127.0.0.1')
}

function fail (err: unknown): never {
  console.error(err)
  process.exit(1)
}

if (require.main === module) {
  const [kind, port] = process.argv.slice(2)
  if (kind === 'fastify') fastifyServer(Number(port))
  else if (kind === 'node-http') nodeHttpServer(Number(port))
  else if (kind === 'node-http-work') nodeHttpWorkServer(Number(port))
  else fail(`usage: reference.js fastify|node-http|node-http-work PORT (got ${kind})`)
}
