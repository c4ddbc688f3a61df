import type { FastifySchemaValidationError } from 'fastify'

/**
 * How request schemas are checked. Beacons are typed data: "1" must not become 1, nor [1] become 1,
 * on the way in. And a key the schema does not know (a typo such as "tag") is refused, not
 * silently dropped as Fastify's default removeAdditional would.
 */
export const ajvOptions = { customOptions: { coerceTypes: false, removeAdditional: false } }

/** A union's branch whose type the value does not have says least about what is wrong. */
const TYPE_KEYWORDS = new Set(['type', 'anyOf'])

/** The error that says more: the deeper one, and at one depth a broken rule over a branch's type. */
function moreTelling (a: FastifySchemaValidationError, b: FastifySchemaValidationError): FastifySchemaValidationError {
  if (a.instancePath.length !== b.instancePath.length) return b.instancePath.length > a.instancePath.length ? b : a
  return TYPE_KEYWORDS.has(a.keyword) && !TYPE_KEYWORDS.has(b.keyword) ? b : a
}

/**
 * One line naming the value at fault. With unions ajv reports every branch it tried; the deepest
 * error is the one that names the field, and at one depth a broken rule (`[]`: too few items)
 * says more than another branch's type (`[]`: not an object).
 */
export function schemaErrorFormatter (errors: FastifySchemaValidationError[], dataVar: string): Error {
  const telling = errors.reduce(moreTelling)
  const allowed = telling.params.allowedValues as unknown[] | undefined
  const extra = telling.params.additionalProperty as string | undefined
  const message = allowed !== undefined
    ? `must be one of ${allowed.join(', ')}`
    : extra !== undefined ? `has "${extra}", which is not one of its properties` : telling.message
  return new Error(`${dataVar}${telling.instancePath} ${message ?? 'is invalid'}`)
}
