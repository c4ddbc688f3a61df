#!/usr/bin/env node
import { parseArgs } from 'node:util'
import closeWithGrace from 'close-with-grace'
import type { FastifyInstance } from 'fastify'
import { buildApp } from './app'
import { ConfigError, loadConfig, type Config } from './config'
import { pollOnce } from './once'

/** Longer than the writer's flush on close, counted from the same moment (plugins/writer.ts), so a clean shutdown is never cut short. */
const GRACE_MS = 10_000

const USAGE = `Usage: metrics-sidecar [--once]

  (no option)  run the sidecar: poll PostgreSQL, take pushes, write to InfluxDB
  --once       run every poller once, print the points as line protocol on stdout and exit:
               0 when every poller worked, 1 when one failed
  -h, --help   print this help

Configuration comes from the environment (DATABASE_URL, INFLUX_URL, …) and the JSON file named by
SIDECAR_CONFIG; see README.md. Bad configuration exits with 2.
`

/** The options, or exit 2 with the usage on a typo: a mistyped --once must not start a second live sidecar. */
function optionsOrExit (): { once: boolean } {
  try {
    const { values } = parseArgs({ options: { once: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } })
    if (values.help === true) {
      process.stdout.write(USAGE)
      process.exit(0)
    }
    return { once: values.once === true }
  } catch (err) {
    process.stderr.write(`metrics-sidecar: ${(err as Error).message}\n\n${USAGE}`)
    process.exit(2)
  }
}

function configOrExit (): Config {
  try {
    return loadConfig()
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    process.stderr.write(`metrics-sidecar: invalid configuration: ${err.message}\n`)
    process.exit(2)
  }
}

async function main (): Promise<void> {
  const { once } = optionsOrExit()
  const config = configOrExit()
  if (once) {
    process.exitCode = await pollOnce(config, process.stdout, process.stderr)
    return
  }
  let app: FastifyInstance | undefined
  try {
    app = await buildApp(config)
    const started = app
    closeWithGrace({ delay: GRACE_MS }, async ({ signal, err }) => {
      if (err !== undefined) started.log.error({ err }, 'shutting down after an error')
      else started.log.info({ signal }, 'shutting down')
      await started.close()
    })
    await app.listen({ host: config.host, port: config.port })
  } catch (err) {
    // One line, as for bad configuration: e.g. an unusable SPOOL_DIR, or the port already taken.
    const bad = err instanceof ConfigError
    process.stderr.write(`metrics-sidecar: ${bad ? 'invalid configuration' : 'cannot start'}: ${(err as Error).message}\n`)
    await app?.close().catch(() => undefined)
    process.exit(bad ? 2 : 1)
  }
}

void main()
