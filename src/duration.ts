const UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/** A duration such as `500ms`, `10s`, `1m` or `2h`, more than 0; used for validation patterns and messages. */
export const DURATION_PATTERN = '^0*[1-9][0-9]*(ms|s|m|h)$'

/** The longest delay a Node.js timer takes (2^31 - 1 ms, about 596 h): a longer one fires at once. */
export const MAX_DURATION_MS = 2 ** 31 - 1

/** Milliseconds in a duration string that already matched {@link DURATION_PATTERN}. */
export function parseDuration (text: string): number {
  const match = /^([0-9]+)(ms|s|m|h)$/.exec(text)
  if (match === null) throw new Error(`"${text}" is not a duration like 500ms, 10s or 1m`)
  return Number(match[1]) * UNITS_MS[match[2]]
}
