/**
 * Reference servers for the beacon scenario: the same request answered with no work, so the table
 * shows what this core allows before the sidecar does anything (parsing JSON, formatting, holding,
 * delivering). They keep nothing and forward nothing.
 *
 *   node dist/bench/reference.js fastify|node-http PORT
 *
 *   fastify    a bare Fastify app, one POST /beacons route with the sidecar's own body schema
 *   node-http  node:http reading the body and JSON.parse-ing it
 *
 * Both answer 204, and 200 on GET /health (the benchmark waits for it).
 */
import { createServer } from 'node:http'
import Fastify from 'fastify'
import { BeaconsBody } from '../src/beacon'
import { ajvOptions } from '../src/http/validation'

export type ReferenceKind = 'fastify' | 'node-http'

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

function fail (err: unknown): never {
  console.error(err)
  process.exit(1)
}

if (require.main === module) {
  const [kind, port] = process.argv.slice(2)
  if (kind === 'fastify') fastifyServer(Number(port))
  else if (kind === 'node-http') nodeHttpServer(Number(port))
  else fail(`usage: reference.js fastify|node-http PORT (got ${kind})`)
}
