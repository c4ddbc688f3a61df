import fp from 'fastify-plugin'
import pg from 'pg'

declare module 'fastify' {
  interface FastifyInstance {
    pg: pg.Pool
    /** How to connect, for the few connections that must not come from the pool. */
    pgConfig: pg.ClientConfig
    /** The `server` tag of `postgresql` points: where the database is, never the password. */
    pgServer: string
  }
}

/**
 * Integers come back as bigint and floats/numerics as number, so a column's JavaScript type says
 * its line-protocol field type (PostgreSQL `count(*)` is int8, which pg returns as a string).
 */
const types = {
  getTypeParser (oid: number, format?: 'text' | 'binary') {
    switch (oid) {
      case pg.types.builtins.INT2: case pg.types.builtins.INT4: case pg.types.builtins.INT8: case pg.types.builtins.OID:
        return (text: string) => BigInt(text)
      case pg.types.builtins.NUMERIC:
        return (text: string) => Number(text)
      default:
        return pg.types.getTypeParser(oid, format)
    }
  }
} as pg.CustomTypesConfig

export default fp(async (fastify) => {
  const options: pg.PoolConfig = {
    connectionString: fastify.config.databaseUrl,
    application_name: 'metrics-sidecar',
    max: 4,
    connectionTimeoutMillis: 5000,
    idleTimeoutMillis: 30_000,
    types
  }
  const pool = new pg.Pool(options)
  // An idle client losing its connection (database restart) must not crash the process.
  pool.on('error', err => fastify.log.warn({ err }, 'idle PostgreSQL connection closed'))
  const target = new pg.Client(options)
  fastify.decorate('pg', pool)
  fastify.decorate('pgConfig', options)
  fastify.decorate('pgServer', `host=${target.host} port=${target.port} dbname=${target.database ?? ''} user=${target.user ?? ''}`)
  fastify.addHook('onClose', async () => await pool.end())
}, { name: 'postgres', dependencies: ['config'] })
