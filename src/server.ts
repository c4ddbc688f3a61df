#!/usr/bin/env node
import closeWithGrace from 'close-with-grace'
import { buildApp } from './app'
import { ConfigError, loadConfig, type Config } from './config'
import { pollOnce } from './once'

/** Longer than the writer's flush on close (plugins/writer.ts), so a clean shutdown is never cut short. */
const GRACE_MS = 10_000

function configOrExit (): Config {
  try {
    return loadConfig()
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    process.stderr.write(`metrics-sidecar: invalid configuration: ${err.message}\n`)
    process.exit(2)
  }
}

async function once (config: Config): Promise<void> {
  const app = await buildApp(config, { poll: false, logger: { level: 'error', stream: process.stderr } })
  await app.ready()
  const code = await pollOnce(app, process.stdout, process.stderr)
  await app.close()
  process.exitCode = code
}

async function main (): Promise<void> {
  const config = configOrExit()
  if (process.argv.includes('--once')) return await once(config)
  const app = await buildApp(config)
  closeWithGrace({ delay: GRACE_MS }, async ({ signal, err }) => {
    if (err !== undefined) app.log.error({ err }, 'shutting down after an error')
    else app.log.info({ signal }, 'shutting down')
    await app.close()
  })
  await app.listen({ host: config.host, port: config.port })
}

void main()
