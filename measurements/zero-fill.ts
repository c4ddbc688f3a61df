/**
 * Remembers every group a count has reported, so a group that has no rows any more is written
 * with count=0 instead of leaving a dashboard showing its last non-zero count forever.
 */
export class ZeroFill {
  private readonly seen: Map<string, Record<string, string>>

  constructor (private readonly keyOf: (tags: Record<string, string>) => string, initial: Array<Record<string, string>> = []) {
    this.seen = new Map(initial.map(tags => [keyOf(tags), tags]))
  }

  /** Tags of the groups seen before (or configured) that are missing from `present`; records `present` as seen. */
  missing (present: Array<Record<string, string>>): Array<Record<string, string>> {
    const now = new Set<string>()
    for (const tags of present) {
      const key = this.keyOf(tags)
      now.add(key)
      if (!this.seen.has(key)) this.seen.set(key, tags)
    }
    return [...this.seen].filter(([key]) => !now.has(key)).map(([, tags]) => tags)
  }
}
