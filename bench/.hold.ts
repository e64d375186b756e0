import { join } from 'node:path'
import { makeCertFiles } from './lib/certs.js'
import { nodePeer, PEERS, startUpstream } from './lib/peers.js'

const work = '/tmp/perf/w'
const ecdsa = await makeCertFiles(work, 'ecdsa')
const upstream = await startUpstream(join(work, 'upstream'))
const specs = process.argv.slice(2)
const out: string[] = []
const running = []
for (const [i, s] of specs.entries()) {
  const [id, ...f] = s.split('+')
  const script = ({ fastify: 'fastify-plain.js', floor: 'node-floor.js' } as Record<string, string>)[id!] ?? 'proxy-preset.js'
  const peer = f.length ? nodePeer(s, script, [], f) : PEERS[id!]!
  const r = await peer.start({ dir: join(work, `p${i}`), upstreamPort: upstream.port, cert: ecdsa })
  running.push(r)
  out.push(`${s} ${r.port} ${r.pid}`)
}
console.log(out.join('\n'))
console.log('ready')
await new Promise((r) => process.once('SIGTERM', r))
for (const r of running) await r.stop()
await upstream.stop()
process.exit(0)
