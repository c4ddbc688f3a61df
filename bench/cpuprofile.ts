/**
 * Where a V8 .cpuprofile (node --cpu-prof) spends its time: the top functions by self time (with
 * their total time), and self time grouped by package or source file.
 *
 *   node dist/bench/cpuprofile.js FILE.cpuprofile [TOP]
 */
import { readFileSync } from 'node:fs'
import { relative } from 'node:path'

interface ProfileNode {
  id: number
  callFrame: { functionName: string, url: string, lineNumber: number, columnNumber: number }
  children?: number[]
}

interface Profile { nodes: ProfileNode[], startTime: number, endTime: number, samples: number[], timeDeltas: number[] }

export interface FunctionTime { name: string, where: string, selfMs: number, totalMs: number }
export interface ProfileSummary { totalMs: number, functions: FunctionTime[], groups: Array<{ group: string, selfMs: number }> }

function where (url: string, line: number): string {
  if (url === '') return ''
  const path = url.startsWith('file://') ? decodeURIComponent(url.slice('file://'.length)) : url
  return `${path.startsWith('/') ? relative(process.cwd(), path) : path}:${line + 1}`
}

/** The package (node_modules/…), Node's internals, a source directory, or V8's own entries. */
function groupOf (node: ProfileNode): string {
  const { url, functionName } = node.callFrame
  if (url === '') return functionName.startsWith('(') ? functionName : '(native / V8 builtins)'
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/')[0]}`
  const modules = url.lastIndexOf('node_modules/')
  if (modules >= 0) {
    const parts = url.slice(modules + 'node_modules/'.length).split('/')
    return parts[0].startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]
  }
  const dist = url.indexOf('/dist/')
  return dist >= 0 ? url.slice(dist + '/dist/'.length) : url
}

export function summarise (file: string): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile
  const byId = new Map<number, ProfileNode>()
  const parent = new Map<number, number>()
  for (const node of profile.nodes) byId.set(node.id, node)
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)

  const keyOf = (node: ProfileNode): string => {
    const f = node.callFrame
    return `${f.functionName === '' ? '(anonymous)' : f.functionName}\t${where(f.url, f.lineNumber)}`
  }
  const self = new Map<string, number>()
  const total = new Map<string, number>()
  const groups = new Map<string, number>()
  let totalUs = 0
  // A sample's time is the delta to the next sample.
  for (let i = 0; i < profile.samples.length; i++) {
    const us = profile.timeDeltas[i + 1] ?? 0
    totalUs += us
    let node = byId.get(profile.samples[i])
    if (node === undefined) continue
    const leaf = keyOf(node)
    self.set(leaf, (self.get(leaf) ?? 0) + us)
    const group = groupOf(node)
    groups.set(group, (groups.get(group) ?? 0) + us)
    const seen = new Set<string>()
    while (node !== undefined) {
      const key = keyOf(node)
      if (!seen.has(key)) {
        seen.add(key)
        total.set(key, (total.get(key) ?? 0) + us)
      }
      const up = parent.get(node.id)
      node = up === undefined ? undefined : byId.get(up)
    }
  }
  const functions = [...self].map(([key, us]) => {
    const [name, at] = key.split('\t')
    return { name, where: at, selfMs: us / 1000, totalMs: (total.get(key) ?? us) / 1000 }
  }).sort((a, b) => b.selfMs - a.selfMs)
  return {
    totalMs: totalUs / 1000,
    functions,
    groups: [...groups].map(([group, us]) => ({ group, selfMs: us / 1000 })).sort((a, b) => b.selfMs - a.selfMs)
  }
}

/** Percentages are of the main thread's busy time: everything but (idle). */
export function formatSummary (s: ProfileSummary, top = 25): string {
  const idle = s.groups.find(g => g.group === '(idle)')?.selfMs ?? 0
  const busy = s.totalMs - idle
  const pct = (ms: number): string => `${(100 * ms / busy).toFixed(1).padStart(5)}%`
  const lines = [
    `main thread: ${(s.totalMs / 1000).toFixed(1)} s profiled, ${(busy / 1000).toFixed(1)} s busy (${(100 * busy / s.totalMs).toFixed(0)}%); percentages are of the busy time`,
    '', ' self  total  function (where)'
  ]
  for (const f of s.functions.filter(f => f.name !== '(idle)').slice(0, top)) lines.push(`${pct(f.selfMs)} ${pct(f.totalMs)}  ${f.name}${f.where === '' ? '' : ` (${f.where})`}`)
  lines.push('', ' self  by package / file')
  for (const g of s.groups.filter(g => g.group !== '(idle)').slice(0, 15)) lines.push(`${pct(g.selfMs)}  ${g.group}`)
  return lines.join('\n')
}

if (require.main === module) {
  const [file, top] = process.argv.slice(2)
  if (file === undefined) {
    process.stderr.write('usage: node dist/bench/cpuprofile.js FILE.cpuprofile [TOP]\n')
    process.exit(2)
  }
  console.log(formatSummary(summarise(file), top === undefined ? 25 : Number(top)))
}
