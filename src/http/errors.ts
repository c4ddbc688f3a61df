import { Type } from '@sinclair/typebox'

/** InfluxDB's error codes by HTTP status, for `{"code": …, "message": …}` bodies. */
export const INFLUX_CODES: Record<number, string> = {
  400: 'invalid',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not found',
  405: 'method not allowed',
  408: 'request timeout',
  413: 'request too large',
  415: 'unsupported media type',
  429: 'too many requests',
  500: 'internal error',
  502: 'upstream error',
  503: 'unavailable',
  504: 'timeout'
}

/** The body of every error answer (plugins/errors.ts), for routes' reply schemas. */
export const ErrorBody = Type.Object({ code: Type.String(), message: Type.String() })

/** An error whose message is safe to show the caller, answered with its status. */
export class HttpError extends Error {
  name = 'HttpError'
  constructor (readonly statusCode: number, message: string, readonly headers: Record<string, string> = {}) {
    super(message)
  }
}
