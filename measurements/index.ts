import type { Config } from '../src/config'
import { customSql } from './custom-sql'
import { djangoSessions } from './django-sessions'
import { djangoUsers } from './django-users'
import type { Measurement } from './measurement'
import { modelCount } from './model-count'
import { pgStatActivity } from './pg-stat-activity'
import { pgStatDatabase } from './pg-stat-database'

/** Every poller the configuration asks for. `server` is the `server` tag of `postgresql`. */
export function measurementsFromConfig (config: Config, server: string): Measurement[] {
  const builtins: Measurement[] = [
    pgStatDatabase(server, config.pollInterval),
    pgStatActivity(config.pollInterval),
    djangoSessions(config.pollInterval),
    djangoUsers(config.pollInterval)
  ]
  return [
    ...config.modelCounts.map(modelCount),
    ...builtins.filter(m => !(config.disabledPollers as string[]).includes(m.name)),
    ...config.sqlMeasurements.map(customSql)
  ]
}
