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

export function stampNs (): string {
  const now = Date.now()
  if (now > lastMs) {
    lastMs = now
    counter = 0
  } else if (++counter === 1_000_000) {
    lastMs++
    counter = 0
  }
  return `${lastMs}${String(counter).padStart(6, '0')}`
}
