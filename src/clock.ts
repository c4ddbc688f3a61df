/**
 * Receipt timestamps in nanoseconds, strictly increasing across the whole process.
 *
 * Two points of one series stamped by the sidecar must never share a timestamp
 * (InfluxDB would keep only the last), so within one millisecond the sub-millisecond
 * digits count up; a burst of over a million stamps in one millisecond borrows the
 * next millisecond rather than repeating a value.
 */
let lastMs = 0
let counter = 0
/** `lastMs` as digits, made once per millisecond rather than once per stamp. */
let lastMsDigits = '0'

function advance (): void {
  const now = Date.now()
  if (now > lastMs) {
    lastMs = now
    counter = 0
  } else if (++counter === 1_000_000) {
    lastMs++
    counter = 0
  } else {
    return
  }
  lastMsDigits = String(lastMs)
}

export function stampNs (): string {
  advance()
  return `${lastMsDigits}${String(counter).padStart(6, '0')}`
}

/**
 * The same stamp as {@link stampNs}, written as ASCII digits into `out` at `at` (19 bytes until
 * the year 2286); returns the offset after it. The parser stamps line after line this way
 * without making a string for each.
 */
export function writeStampNs (out: Buffer, at: number): number {
  advance()
  for (let i = 0; i < lastMsDigits.length; i++) out[at++] = lastMsDigits.charCodeAt(i)
  for (let i = 5, c = counter; i >= 0; i--, c = (c - c % 10) / 10) out[at + i] = 0x30 + c % 10
  return at + 6
}
