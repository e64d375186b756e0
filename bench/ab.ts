// Side-by-side comparison of a few peers on a few tests, alternating: the before/after figure of one change.
// Every peer is started once and warmed up; then, for each round, every test runs on every peer in turn (order
// rotating per round), so drift in the machine's load hits all of them alike. Prints per test the median CPU µs per
// operation of each peer (±half the min-max range) and its ratio to the first peer, per round and as a median.
//
//   node --import tsx --conditions=source bench/ab.ts --peers=fastify,preset --tests=ka-1m,h2 --rounds=6
//
// Peers: the ids of lib/peers.ts, or `<id>+<flag>[+<flag>...]` for a Node peer with extra V8/Node flags (e.g.
// `preset+--max-semi-space-size=2`), or `preset@<path to a dist/index.js>` for another build of proxy-preset
// (e.g. the code before a change), or `<id>:<arg>[:<arg>...]` for arguments of the peer's script (e.g.
// `preset:--logger=false`, `floor:--sni=true`). Tests: ka-small, ka-16k, ka-1m (wrk -c64), h2 (h2load -c8 -m16), hs (new
// connections, one request each). `--key=rsa` gives every peer an RSA 2048 certificate instead of ECDSA P-256.
// Figures, not tests: nothing is asserted.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { makeCertFiles } from './lib/certs.js'
import { h2load, type LoadResult, newConnections, wrk } from './lib/load.js'
import { nodePeer, PEERS, type Peer, type Running, startUpstream } from './lib/peers.js'
import { fmt, median, mib, spread } from './lib/stats.js'
import { LOAD_CORE, loadAverage, pinSelf } from './lib/sys.js'

const { values: flags } = parseArgs({
  options: {
    peers: { type: 'string', default: 'fastify,preset' },
    tests: { type: 'string', default: 'ka-small,ka-1m' },
    rounds: { type: 'string', default: '5' },
    duration: { type: 'string', default: '3' },
    warmup: { type: 'string', default: '8' },
    key: { type: 'string', default: 'ecdsa' },
  },
})
type Test = 'ka-small' | 'ka-16k' | 'ka-1m' | 'h2' | 'hs'
const TESTS = flags.tests.split(',') as Test[]
const ROUNDS = Number(flags.rounds)
const D = Number(flags.duration)

function peerFor(spec: string): Peer {
  const at = spec.indexOf('@')
  if (at > 0) return nodePeer(spec, 'proxy-preset.js', [`--impl=${spec.slice(at + 1)}`])
  const [head, ...args] = spec.split(':')
  const [id, ...nodeFlags] = head!.split('+')
  if (nodeFlags.length === 0 && args.length === 0) {
    const peer = PEERS[id!]
    if (!peer) throw new Error(`unknown peer ${id}`)
    return peer
  }
  const script = { fastify: 'fastify-plain.js', floor: 'node-floor.js' }[id!] ?? 'proxy-preset.js'
  return nodePeer(spec, script, args, nodeFlags)
}

function run(test: Test, r: Running): Promise<LoadResult> {
  const path = test === 'ka-16k' ? '16k' : test === 'ka-1m' ? '1m' : 'small'
  const url = `https://localhost:${r.port}/${path}`
  if (test === 'h2') return h2load(r.pid, { url, seconds: D, connections: 8, streams: 16 })
  if (test === 'hs') return newConnections(r.pid, { url, seconds: D, batch: 100 })
  return wrk(r.pid, { url, seconds: D, connections: 64 })
}

pinSelf(LOAD_CORE)
const work = await mkdtemp(join(tmpdir(), 'autotls-ab-'))
const specs = flags.peers.split(',')
const certFiles = await makeCertFiles(work, flags.key === 'rsa' ? 'rsa' : 'ecdsa')
const upstream = await startUpstream(join(work, 'upstream'))
const running: Running[] = []
const results = new Map<string, LoadResult[]>()
console.log(`load average at start ${loadAverage()}`)
try {
  for (const [i, spec] of specs.entries()) {
    const r = await peerFor(spec).start({ dir: join(work, `p${i}`), upstreamPort: upstream.port, cert: certFiles })
    running.push(r)
    await wrk(r.pid, { url: `https://localhost:${r.port}/small`, seconds: Number(flags.warmup), connections: 64 })
    await h2load(r.pid, { url: `https://localhost:${r.port}/small`, seconds: 2, connections: 8, streams: 16 })
  }
  for (let round = 0; round < ROUNDS; round++) {
    for (const test of TESTS) {
      const line: string[] = []
      for (let k = 0; k < running.length; k++) {
        const i = (k + round) % running.length
        const r = running[i]!
        const res = await run(test, r)
        const key = `${test} ${i}`
        results.set(key, [...(results.get(key) ?? []), res])
        line.push(`${specs[i]} ${fmt(res.cpuPerOpUs)} µs (${fmt(res.rate)}/s, RSS ${mib(res.peakRss)})`)
      }
      console.log(`round ${round + 1} ${test}: ${line.join(' | ')} [load ${loadAverage()}]`)
    }
  }
  console.log()
  console.log('| test | peer | CPU µs/op | ×first (medians) | ×first (median of rounds) | req/s | peak RSS MiB |')
  console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: |')
  for (const test of TESTS) {
    const base = results.get(`${test} 0`) ?? []
    for (let i = 0; i < specs.length; i++) {
      const rs = results.get(`${test} ${i}`) ?? []
      const cpu = rs.map((x) => x.cpuPerOpUs)
      const m = median(cpu)
      const paired = median(rs.map((x, j) => x.cpuPerOpUs / (base[j]?.cpuPerOpUs ?? Number.NaN)))
      console.log(
        `| ${test} | ${specs[i]} | ${fmt(m)} ±${fmt(spread(cpu))}% | ${(m / median(base.map((x) => x.cpuPerOpUs))).toFixed(2)} | ${paired.toFixed(2)} | ${fmt(median(rs.map((x) => x.rate)))} | ${mib(Math.max(...rs.map((x) => x.peakRss)))} |`,
      )
    }
  }
  console.log(`load average at end ${loadAverage()}`)
} finally {
  for (const r of running) await r.stop()
  await upstream.stop()
  await rm(work, { recursive: true, force: true })
}
