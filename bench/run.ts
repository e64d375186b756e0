// The benchmark suite, one command: `npm run bench` (or `node --import tsx --conditions=source bench/run.ts`).
// Installs its Debian packages when missing (as root), then, on loopback and bounded in time:
//   proxy  figures 1, 2, 3, 7: nginx, HAProxy, Caddy, plain Fastify and proxy-preset in turn, repeated
//   peek   figure 4: handshake CPU with and without the TLS-ALPN-01 ClientHello peek
//   sni    figure 5: handshake CPU, RSS and start-up with 1 to 100,000 managed names
//   issue  figure 6: issuance against the local Pebble
// and prints Markdown tables (also saved with the raw runs under $BENCH_CACHE, default <tmp>/autotls-bench). Figures, not tests: nothing is
// asserted about timings. Flags: --quick, --duration=S, --repeats=N, --only=proxy,peek,sni,issue,
// --peers=nginx,haproxy,caddy,fastify,preset, --sni=1,1000,10000,100000.

import { readFileSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { startPebble } from '@autotls/pebble-harness'
import { startAcmeServer } from './lib/acme-server.js'
import { makeCertFiles } from './lib/certs.js'
import { h2load, handshakes, type LoadResult, newConnections, wrk } from './lib/load.js'
import { type CertFiles, PEERS, type Running, startUpstream } from './lib/peers.js'
import { fmt, median, mib, ratio, table, withSpread } from './lib/stats.js'
import { ensureStore, STORE_SUFFIX } from './lib/store.js'
import {
  cpuSeconds,
  ensureDebianPackages,
  LOAD_CORE,
  loadAverage,
  machineInfo,
  PROXY_CORE,
  pinSelf,
  rssBytes,
  runPinned,
  startPinned,
} from './lib/sys.js'

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    duration: { type: 'string' },
    repeats: { type: 'string' },
    only: { type: 'string' },
    peers: { type: 'string' },
    sni: { type: 'string' },
  },
})
const QUICK = flags.quick === true
const D = Number(flags.duration ?? (QUICK ? 2 : 3))
const R = Number(flags.repeats ?? (QUICK ? 1 : 3))
const SECTIONS = new Set((flags.only ?? 'proxy,peek,sni,issue').split(','))
const PEER_IDS = (flags.peers ?? 'nginx,haproxy,caddy,floor,fastify,preset').split(',')
const SNI_SCALES = (flags.sni ?? (QUICK ? '1,1000,10000' : '1,1000,10000,100000')).split(',').map(Number)
const KA_CONNECTIONS = 64
const H2 = { connections: 8, streams: 16 }
const HS_BATCH = 100
const WARMUP = QUICK ? 4 : 6
const REWARM = QUICK ? 1 : 3
/** Secondary measurements (16 KiB, 1 MiB, RSA handshakes) are shorter, to keep the default run near 8 minutes. */
const SHORT = Math.max(1, D - 1)
const HS_CLIENT_CONCURRENCY = 16
/** V8/Node flags given to the Node peers (none by default; BENCH_NODE_FLAGS adds some for experiments). */
const NODE_FLAGS = (process.env['BENCH_NODE_FLAGS'] ?? '').split(' ').filter((f) => f !== '')

// Cached certificate stores and saved results live outside the work tree (100,000 JSON files have no place in a
// linted repository): $BENCH_CACHE, default <tmp>/autotls-bench.
const cacheRoot = process.env['BENCH_CACHE'] ?? join(tmpdir(), 'autotls-bench')
const started = Date.now()
const log = (line: string): void => {
  process.stderr.write(`[bench ${((Date.now() - started) / 1000).toFixed(0).padStart(4)}s] ${line}\n`)
}
const out: string[] = []
const print = (text = ''): void => {
  out.push(text)
  console.log(text)
}

ensureDebianPackages([
  ['nginx', 'nginx'],
  ['haproxy', 'haproxy'],
  ['caddy', 'caddy'],
  ['wrk', 'wrk'],
  ['h2load', 'nghttp2-client'],
  ['pebble', 'pebble'],
  ['openssl', 'openssl'],
  ['taskset', 'util-linux'],
])
pinSelf(LOAD_CORE)

const work = await mkdtemp(join(tmpdir(), 'autotls-bench-'))
const raw: Record<string, unknown> = {}
const loadAtStart = loadAverage()
log(`work folder ${work}; load average ${loadAtStart}; ${D} s per measurement, ${R} repeat(s)`)

// --- full handshakes, checked ----------------------------------------------------------------------------------

/**
 * Every handshake of the handshake runs must be a full one. A Node HTTPS server with session tickets on (its default)
 * counts the handshakes it completes and how many were resumptions, for each client: h2load (figure 3), our Node
 * client (figures 4 and 5), and wrk with `Connection: close` (not used: it resumes).
 */
async function verifyFullHandshakes(cert: CertFiles): Promise<string[]> {
  let full = 0
  let resumed = 0
  const server = createHttpsServer({ key: readFileSync(cert.key), cert: readFileSync(cert.cert) }, (_req, res) => {
    res.setHeader('connection', 'close')
    res.end('ok')
  })
  server.on('secureConnection', (socket) => {
    if (socket.isSessionReused()) resumed++
    else full++
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as AddressInfo).port
  const lines: string[] = []
  const seen = (client: string, extra = '') => {
    lines.push(`${client}: the server saw ${full} full handshakes and ${resumed} resumptions${extra}`)
    full = 0
    resumed = 0
  }
  const h = await newConnections(process.pid, { url: `https://localhost:${port}/`, seconds: 1, batch: HS_BATCH })
  seen(`h2load --h1 -c${HS_BATCH} -n${HS_BATCH} (figure 3)`, ` (${h.count} requests)`)
  const n = await handshakes(process.pid, { port, seconds: 1, concurrency: 4, servername: 'localhost' })
  seen('Node client (figures 4, 5)', `; the client counted ${n.count}, isSessionReused() true ${n.resumed} times`)
  const w = await runPinned(
    LOAD_CORE,
    'wrk',
    ['-t1', '-c4', '-d1s', '-H', 'Connection: close', `https://localhost:${port}/`],
    20_000,
  )
  seen(
    "wrk -H 'Connection: close' (not used for handshakes)",
    ` (${/(\d+) requests/.exec(w.stdout)?.[1] ?? '?'} requests)`,
  )
  await new Promise<void>((r) => server.close(() => r()))
  return lines
}

// --- figures 1, 2, 3, 7 ----------------------------------------------------------------------------------------

type Metric = 'ka-small' | 'ka-16k' | 'ka-1m' | 'h2' | 'hs-ecdsa' | 'hs-rsa'
const results = new Map<string, Map<Metric, LoadResult[]>>()
const tlsInfo = new Map<string, Running['tls']>()
const peakRss = new Map<string, number[]>()
/** RSS per peer (ECDSA process): right after start, and 2 s after each round's last load; peak under HTTP/2. */
const idleRss = new Map<string, number>()
const afterRss = new Map<string, number[]>()
const h2Rss = new Map<string, number[]>()
const push = (m: Map<string, number[]>, k: string, v: number) => m.set(k, [...(m.get(k) ?? []), v])

function record(peer: string, metric: Metric, r: LoadResult): void {
  const byMetric = results.get(peer) ?? new Map<Metric, LoadResult[]>()
  results.set(peer, byMetric)
  byMetric.set(metric, [...(byMetric.get(metric) ?? []), r])
  const warn = r.errors > 0 ? ` (${r.errors} errors)` : ''
  log(
    `  ${peer} ${metric}: ${fmt(r.rate)}/s, ${fmt(r.cpuPerOpUs)} µs CPU/op, p99 ${r.p99Ms ?? '–'} ms, RSS ${mib(r.peakRss)} MiB${warn}`,
  )
}

async function proxyRounds(ecdsa: CertFiles, rsa: CertFiles, upstreamPort: number): Promise<void> {
  // Every peer is started once with each certificate and warmed up once (the Node peers need ~8-10 s of load before
  // the JIT settles on this machine); idle peers cost nothing while another one is measured.
  const running = new Map<string, { ecdsa: Running; rsa: Running }>()
  try {
    for (const id of PEER_IDS) {
      const peer = PEERS[id]
      if (!peer) throw new Error(`unknown peer ${id}`)
      log(`starting ${peer.name} (ECDSA and RSA) and warming up`)
      const a = await peer.start({ dir: join(work, id), upstreamPort, cert: ecdsa })
      const b = await peer
        .start({ dir: join(work, `${id}-rsa`), upstreamPort, cert: rsa })
        .catch(async (err: unknown) => {
          await a.stop()
          throw err
        })
      running.set(id, { ecdsa: a, rsa: b })
      await new Promise((r) => setTimeout(r, 1000))
      idleRss.set(peer.name, rssBytes(a.pid))
      tlsInfo.set(peer.name, { ...a.tls, key: `${a.tls.key} / ${b.tls.key}` })
      const url = (r: Running, path = 'small') => `https://localhost:${r.port}/${path}`
      await wrk(a.pid, { url: url(a), seconds: WARMUP, connections: KA_CONNECTIONS })
      await h2load(a.pid, { url: url(a), seconds: 2, ...H2 })
      await newConnections(a.pid, { url: url(a), seconds: 1, batch: HS_BATCH })
      await wrk(b.pid, { url: url(b), seconds: WARMUP / 2, connections: KA_CONNECTIONS })
      await newConnections(b.pid, { url: url(b), seconds: 1, batch: HS_BATCH })
    }
    for (let round = 0; round < R; round++) {
      // Rotate the order so that no peer always runs first.
      const order = PEER_IDS.map((_, i) => PEER_IDS[(i + round) % PEER_IDS.length]!)
      for (const id of order) {
        const peer = PEERS[id]!
        const { ecdsa: a, rsa: b } = running.get(id)!
        log(`round ${round + 1}/${R}: ${peer.name} (load average ${loadAverage()})`)
        const url = (r: Running, path = 'small') => `https://localhost:${r.port}/${path}`
        // Re-warm before measuring: a Node peer left idle while the others ran may have lost compiled code (V8
        // flushes bytecode in GCs during idle time, e.g. those caused by proxy-preset's certificate-file poll).
        await wrk(a.pid, { url: url(a), seconds: REWARM, connections: KA_CONNECTIONS })
        const rss: number[] = []
        for (const body of ['small', '16k', '1m'] as const) {
          const seconds = body === 'small' ? D : SHORT
          const r = await wrk(a.pid, { url: url(a, body), seconds, connections: KA_CONNECTIONS })
          record(peer.name, `ka-${body}`, r)
          rss.push(r.peakRss)
        }
        peakRss.set(peer.name, [...(peakRss.get(peer.name) ?? []), Math.max(...rss)])
        const h2 = await h2load(a.pid, { url: url(a), seconds: D, ...H2 })
        record(peer.name, 'h2', h2)
        push(h2Rss, peer.name, h2.peakRss)
        record(peer.name, 'hs-ecdsa', await newConnections(a.pid, { url: url(a), seconds: D, batch: HS_BATCH }))
        // The RSA process has been idle since the last round: re-warm it too (without this, the Node peers measured
        // 1.1-1.3x their warm cost here, while side by side in bench/ab.ts preset and plain Fastify were at 0.98x).
        await newConnections(b.pid, { url: url(b), seconds: REWARM, batch: HS_BATCH })
        record(peer.name, 'hs-rsa', await newConnections(b.pid, { url: url(b), seconds: SHORT, batch: HS_BATCH }))
        // The ECDSA process has been idle for the RSA run (SHORT s); 2 s more, then its RSS after load.
        await new Promise((r) => setTimeout(r, 2000))
        push(afterRss, peer.name, rssBytes(a.pid))
      }
    }
  } finally {
    for (const { ecdsa: a, rsa: b } of running.values()) await Promise.all([a.stop(), b.stop()])
  }
}

function peerRows(metric: Metric, columns: Array<[string, (runs: LoadResult[], peer: string) => string]>): string[][] {
  const rows: string[][] = []
  for (const id of PEER_IDS) {
    const name = PEERS[id]!.name
    const runs = results.get(name)?.get(metric) ?? []
    rows.push([name, ...columns.map(([, f]) => f(runs, name))])
  }
  return rows
}

const med = (runs: LoadResult[], pick: (r: LoadResult) => number | undefined): number =>
  median(runs.map((r) => pick(r) ?? Number.NaN))
const ref = (peer: string, metric: Metric, pick: (r: LoadResult) => number | undefined): number =>
  med(results.get(PEERS[peer]?.name ?? '')?.get(metric) ?? [], pick)
const vs = (metric: Metric, pick: (r: LoadResult) => number | undefined, peer: string) => (runs: LoadResult[]) =>
  ratio(med(runs, pick), ref(peer, metric, pick))
/** A latency column: the median over the runs, in ms with two decimals. */
const latency =
  (pick: (r: LoadResult) => number | undefined) =>
  (runs: LoadResult[]): string =>
    fmt(med(runs, pick), 2)

function proxyTables(): void {
  const rate = (r: LoadResult) => r.rate
  const perCore = (r: LoadResult) => r.perCore
  const cpu = (r: LoadResult) => r.cpuPerOpUs
  const values = (runs: LoadResult[], pick: (r: LoadResult) => number | undefined, digits = 0) =>
    withSpread(
      runs.map((r) => pick(r) ?? Number.NaN),
      digits,
    )

  print('### 1. HTTPS keep-alive (HTTP/1.1, wrk -t1 -c64), small body (64 B)')
  print()
  print(
    table(
      [
        'proxy',
        'req/s',
        'p50 ms',
        'p99 ms',
        'CPU µs/req',
        'req/s per core',
        'per core ×nginx',
        'per core ×Caddy',
        'req/s ×nginx',
        'req/s ×Caddy',
      ],
      peerRows('ka-small', [
        ['', (r) => values(r, rate)],
        ['', latency((x) => x.p50Ms)],
        ['', latency((x) => x.p99Ms)],
        ['', (r) => values(r, cpu)],
        ['', (r) => values(r, perCore)],
        ['', vs('ka-small', perCore, 'nginx')],
        ['', vs('ka-small', perCore, 'caddy')],
        ['', vs('ka-small', rate, 'nginx')],
        ['', vs('ka-small', rate, 'caddy')],
      ]),
    ),
  )
  print()
  for (const [body, label] of [
    ['16k', '16 KiB'],
    ['1m', '1 MiB'],
  ] as const) {
    const metric: Metric = `ka-${body}`
    const mbs = (r: LoadResult) => (r.bytesPerSec ?? Number.NaN) / 2 ** 20
    const mbPerCore = (r: LoadResult) => (r.cpu > 0 ? ((r.bytesPerSec ?? 0) * r.seconds) / 2 ** 20 / r.cpu : Number.NaN)
    print(`### 1. HTTPS keep-alive, ${label} body`)
    print()
    print(
      table(
        [
          'proxy',
          'req/s',
          'MB/s',
          'p50 ms',
          'p99 ms',
          'CPU µs/req',
          'MB/s per core',
          'per core ×nginx',
          'per core ×Caddy',
          'MB/s ×nginx',
          'MB/s ×Caddy',
        ],
        peerRows(metric, [
          ['', (r) => values(r, rate)],
          ['', (r) => values(r, mbs, 1)],
          ['', latency((x) => x.p50Ms)],
          ['', latency((x) => x.p99Ms)],
          ['', (r) => values(r, cpu)],
          ['', (r) => values(r, mbPerCore, 1)],
          ['', vs(metric, mbPerCore, 'nginx')],
          ['', vs(metric, mbPerCore, 'caddy')],
          ['', vs(metric, mbs, 'nginx')],
          ['', vs(metric, mbs, 'caddy')],
        ]),
      ),
    )
    print()
  }
  print(`### 2. HTTP/2 (h2load -t1 -c${H2.connections} -m${H2.streams}), small body`)
  print()
  print(
    table(
      [
        'proxy',
        'req/s',
        'CPU µs/req',
        'req/s per core',
        'req/s ×nginx',
        'req/s ×Caddy',
        'per core ×nginx',
        'per core ×Caddy',
      ],
      peerRows('h2', [
        ['', (r) => values(r, rate)],
        ['', (r) => values(r, cpu)],
        ['', (r) => values(r, perCore)],
        ['', vs('h2', rate, 'nginx')],
        ['', vs('h2', rate, 'caddy')],
        ['', vs('h2', perCore, 'nginx')],
        ['', vs('h2', perCore, 'caddy')],
      ]),
    ),
  )
  print()
  // CPU per handshake: a new connection's CPU minus that of one keep-alive request (same peer, same run).
  const handshakeOnly = (peer: string) => (runs: LoadResult[]) => med(runs, cpu) - ref(peer, 'ka-small', cpu)
  print(`### 3. Full TLS handshakes (h2load --h1, batches of ${HS_BATCH} new connections, one request each), TLS 1.3`)
  print()
  const rows: string[][] = []
  const nginxHs = (m: Metric) => ref('nginx', m, cpu) - ref('nginx', 'ka-small', cpu)
  const caddyHs = (m: Metric) => ref('caddy', m, cpu) - ref('caddy', 'ka-small', cpu)
  for (const id of PEER_IDS) {
    const name = PEERS[id]!.name
    const row = [name]
    for (const m of ['hs-ecdsa', 'hs-rsa'] as const) {
      const runs = results.get(name)?.get(m) ?? []
      const hsOnly = handshakeOnly(id)(runs)
      row.push(
        withSpread(runs.map(rate)),
        withSpread(runs.map(cpu)),
        fmt(hsOnly),
        ratio(hsOnly, nginxHs(m)),
        ratio(hsOnly, caddyHs(m)),
      )
    }
    rows.push(row)
  }
  print(
    table(
      [
        'proxy',
        'ECDSA conn/s',
        'CPU µs/conn',
        'CPU µs/handshake',
        'handshake CPU ×nginx',
        '×Caddy',
        'RSA conn/s',
        'CPU µs/conn',
        'CPU µs/handshake',
        'handshake CPU ×nginx',
        '×Caddy',
      ],
      rows,
    ),
  )
  print()
  print('CPU µs/handshake = CPU per new connection (handshake + one proxied request) − CPU per keep-alive request.')
  print()
  print('### 7. Memory (RSS of the ECDSA process) and what was negotiated')
  print()
  const mibs = (v: number[]) =>
    withSpread(
      v.map((b) => b / 2 ** 20),
      1,
    )
  const caddyName = PEERS['caddy']?.name ?? 'Caddy'
  print(
    table(
      [
        'proxy',
        'idle MiB',
        'peak keep-alive MiB',
        '×Caddy',
        'peak HTTP/2 MiB',
        '×Caddy',
        'after load MiB',
        'TLS',
        'cipher',
        'ALPN',
        'certificates',
      ],
      PEER_IDS.map((id) => {
        const name = PEERS[id]!.name
        const ka = peakRss.get(name) ?? []
        const h2 = h2Rss.get(name) ?? []
        const tls = tlsInfo.get(name)
        return [
          name,
          mib(idleRss.get(name) ?? Number.NaN),
          mibs(ka),
          ratio(median(ka), median(peakRss.get(caddyName) ?? [])),
          mibs(h2),
          ratio(median(h2), median(h2Rss.get(caddyName) ?? [])),
          mibs(afterRss.get(name) ?? []),
          tls?.protocol ?? '–',
          tls?.cipher ?? '–',
          tls?.alpn ?? '–',
          tls?.key ?? '–',
        ]
      }),
    ),
  )
  print()
  print(
    `idle: 1 s after start, before any load; peak: highest VmRSS sampled every 100 ms during the keep-alive runs (64 B, 16 KiB, 1 MiB) and during the HTTP/2 run; after load: 2 s after the round's last run on that process. Node peers run the built JavaScript with plain \`node\`${NODE_FLAGS.length > 0 ? ` and ${NODE_FLAGS.join(' ')}` : ', no V8 or Node flags'}.`,
  )
  print()
  targetTable()
}

/** Issue 16's targets and the moonshot, as ratios of this run's medians. */
function targetTable(): void {
  const cpu = (r: LoadResult) => r.cpuPerOpUs
  const perCore = (r: LoadResult) => r.perCore
  const mbPerCore = (r: LoadResult) => (r.cpu > 0 ? ((r.bytesPerSec ?? 0) * r.seconds) / 2 ** 20 / r.cpu : Number.NaN)
  const has = (id: string) => PEER_IDS.includes(id)
  if (!has('preset')) return
  print("### Targets: proxy-preset against the design floor and against Caddy (ratios of this run's medians)")
  print()
  const rows: string[][] = []
  const tests: Array<[Metric, string]> = [
    ['ka-small', 'keep-alive, 64 B'],
    ['ka-16k', 'keep-alive, 16 KiB'],
    ['ka-1m', 'keep-alive, 1 MiB'],
    ['h2', 'HTTP/2'],
    ['hs-ecdsa', 'new connection + 1 request, ECDSA'],
    ['hs-rsa', 'new connection + 1 request, RSA'],
  ]
  for (const [m, label] of tests) {
    const preset = ref('preset', m, cpu)
    const plain = has('fastify') ? ref('fastify', m, cpu) : Number.NaN
    const pick = m === 'ka-1m' ? mbPerCore : perCore
    const caddy = has('caddy') ? ref('caddy', m, pick) : Number.NaN
    rows.push([
      label,
      ratio(preset, plain),
      '≤ 1.05×',
      ratio(ref('preset', m, pick), caddy),
      has('fastify') ? ratio(ref('fastify', m, pick), caddy) : '–',
      has('floor') ? ratio(ref('floor', m, pick), caddy) : '–',
      m === 'ka-1m' ? '≥ 0.8× (MB/s per core)' : m === 'ka-16k' || m === 'hs-rsa' ? '–' : '≥ 1× (moonshot)',
    ])
  }
  const rssRow = (label: string, map: Map<string, number[]>) => {
    const caddyName = PEERS['caddy']?.name ?? 'Caddy'
    rows.push([
      label,
      ratio(median(map.get(PEERS['preset']!.name) ?? []), median(map.get(PEERS['fastify']?.name ?? '') ?? [])),
      '–',
      ratio(median(map.get(PEERS['preset']!.name) ?? []), median(map.get(caddyName) ?? [])),
      ratio(median(map.get(PEERS['fastify']?.name ?? '') ?? []), median(map.get(caddyName) ?? [])),
      ratio(median(map.get(PEERS['floor']?.name ?? '') ?? []), median(map.get(caddyName) ?? [])),
      '≤ 1.5×',
    ])
  }
  rssRow('peak RSS, keep-alive', peakRss)
  rssRow('peak RSS, HTTP/2', h2Rss)
  print(
    table(
      [
        'test',
        'preset / plain Fastify, CPU per op',
        'target',
        'preset ×Caddy, per core',
        'plain Fastify ×Caddy, per core',
        'Node floor ×Caddy, per core',
        'target ×Caddy',
      ],
      rows,
    ),
  )
  print()
  print(
    'per core: requests (connections for new connections, MB for 1 MiB) per CPU-second of the proxy process; for peak RSS the columns are RSS ratios (lower is better).',
  )
  print()
}

// --- figure 4: the ClientHello peek ----------------------------------------------------------------------------

async function peekRuns(store: string, directoryUrl: string): Promise<void> {
  const server = await startAcmeServer({ store, directoryUrl, names: 1, suffix: STORE_SUFFIX, load: 'plugin' })
  const off: LoadResult[] = []
  const on: LoadResult[] = []
  try {
    const run = () =>
      handshakes(server.pid, {
        port: server.port,
        seconds: SHORT,
        concurrency: HS_CLIENT_CONCURRENCY,
        servername: `n0.${STORE_SUFFIX}`,
      })
    await run() // warm-up
    // Alternate, so that drift in the machine's load hits both variants alike.
    for (let i = 0; i < Math.max(R, 2) * 2; i++) {
      for (const peek of i % 2 === 0 ? [false, true] : [true, false]) {
        const state = await server.peek(peek)
        const r = await run()
        ;(peek ? on : off).push(r)
        log(
          `  peek ${peek ? 'on ' : 'off'} (${state.stats.peeked} peeked so far): ${fmt(r.rate)}/s, ${fmt(r.cpuPerOpUs)} µs CPU/handshake, resumed ${(r as { resumed?: number }).resumed}`,
        )
      }
    }
  } finally {
    await server.stop()
  }
  raw['peek'] = { off, on }
  const cpu = (runs: LoadResult[]) => runs.map((r) => r.cpuPerOpUs)
  // Each "on" run against the "off" run next to it: drift in the machine's load cancels out pair by pair.
  const paired = median(on.map((r, i) => r.cpuPerOpUs / (off[i]?.cpuPerOpUs ?? Number.NaN)))
  print('### 4. The TLS-ALPN-01 ClientHello peek (Node handshake client, no request, SNI fixed)')
  print()
  print(
    table(
      ['server', 'handshakes/s', 'CPU µs/handshake', 'CPU ×without (medians)', 'CPU ×without (median of pairs)'],
      [
        [
          'acmeServerFactory, no challenge pending (no peek)',
          withSpread(off.map((r) => r.rate)),
          withSpread(cpu(off)),
          '1.00×',
          '1.00×',
        ],
        [
          'same, a challenge pending (every ClientHello peeked)',
          withSpread(on.map((r) => r.rate)),
          withSpread(cpu(on)),
          ratio(median(cpu(on)), median(cpu(off))),
          `${paired.toFixed(2)}×`,
        ],
      ],
    ),
  )
  print()
}

// --- figure 5: SNI scale ---------------------------------------------------------------------------------------

async function sniRuns(storeRoot: string): Promise<void> {
  const max = Math.max(...SNI_SCALES)
  const store = ensureStore(storeRoot, max, log)
  if (store.generatedSeconds > 0) log(`store: generated in ${store.generatedSeconds.toFixed(1)} s`)
  const rows: string[][] = []
  const startRows: string[][] = []
  const checks = new Map<number, { ms: number; rejected: number } | null>()
  const starts = new Map<string, Array<{ loadedMs: number; spawnToServeMs: number }>>()
  let base = Number.NaN
  let baseRss = Number.NaN
  let baseHeap = Number.NaN
  const all: unknown[] = []
  for (const n of SNI_SCALES) {
    const load = 'plugin'
    log(`sni: ${fmt(n)} names (load: ${load})`)
    const server = await startAcmeServer({
      store: store.root,
      directoryUrl: store.directoryUrl,
      names: n,
      suffix: STORE_SUFFIX,
      load,
    })
    try {
      const idle = await server.stats()
      // The background check of the cached pairs: waited for up to 10,000 names (so it does not run during the
      // handshake figures; ~1.6 ms CPU per name), left running beyond (it yields to traffic: ~2% of a busy core).
      let checked = idle.check
      const checkDeadline = Date.now() + 180_000
      while (n > 1 && n <= 10_000 && checked === null && Date.now() < checkDeadline) {
        await new Promise((r) => setTimeout(r, 500))
        checked = (await server.check()).check
      }
      const afterCheck = checked !== null && n > 1 ? await server.stats() : undefined
      if (n === 1) {
        baseRss = idle.rss
        baseHeap = idle.heapUsed
      }
      // Warm: SNI random over names whose contexts exist (all of them up to 1,000).
      const warmCount = Math.min(n, 1000)
      const pre = await server.prewarm(warmCount)
      const afterPrewarm = await server.stats()
      const run = (names: number) =>
        handshakes(server.pid, {
          port: server.port,
          seconds: D,
          concurrency: HS_CLIENT_CONCURRENCY,
          servername: `n0.${STORE_SUFFIX}`,
          names,
          suffix: STORE_SUFFIX,
        })
      await run(warmCount)
      const warm: LoadResult[] = []
      for (let i = 0; i < Math.max(2, R - 1); i++) warm.push(await run(warmCount))
      const warmCpu = median(warm.map((r) => r.cpuPerOpUs))
      if (n === 1) base = warmCpu
      // Random over all names: first contacts build their context during the handshake.
      let cold: LoadResult | undefined
      let coldBuilt = 0
      if (n > warmCount) {
        const before = (await server.stats()).resolver.contextsBuilt
        cold = await run(n)
        coldBuilt = (await server.stats()).resolver.contextsBuilt - before
      }
      const perCertIdle = n > 1 ? (idle.rss - baseRss) / (n - 1) : Number.NaN
      const heapPerCert = n > 1 ? (idle.heapUsed - baseHeap) / (n - 1) : Number.NaN
      // RSS may drop while contexts are built (V8 returning pages freed after loading): no figure then.
      const perContext =
        warmCount > 1 && afterPrewarm.rss > idle.rss ? (afterPrewarm.rss - idle.rss) / warmCount : Number.NaN
      all.push({
        n,
        load,
        idle,
        checked,
        afterCheck,
        afterPrewarm,
        pre,
        warm,
        cold,
        coldBuilt,
        spawnToServeMs: server.spawnToServeMs,
        loadedMs: server.loadedMs,
      })
      rows.push([
        fmt(n),
        withSpread(warm.map((r) => r.cpuPerOpUs)),
        ratio(warmCpu, base),
        cold ? fmt(cold.cpuPerOpUs) : '–',
        cold ? `${fmt((coldBuilt / Math.max(1, cold.count)) * 100)}%` : '–',
        cold ? ratio(cold.cpuPerOpUs, base) : '–',
        mib(idle.rss),
        Number.isFinite(perCertIdle) ? fmt(perCertIdle / 1024, 1) : '–',
        afterCheck ? mib(afterCheck.rss) : '–',
        Number.isFinite(heapPerCert) ? fmt(heapPerCert / 1024, 1) : '–',
        Number.isFinite(perContext) ? fmt(perContext / 1024, 1) : '–',
        fmt((pre.ms * 1000) / Math.max(1, pre.built)),
      ])
      checks.set(n, checked)
      starts.set(`plugin ${n}`, [{ loadedMs: server.loadedMs, spawnToServeMs: server.spawnToServeMs }])
      log(
        `  ${fmt(n)} names: loaded in ${fmt(server.loadedMs)} ms, serving ${fmt(server.spawnToServeMs)} ms after spawn; warm ${fmt(warmCpu)} µs/hs; RSS ${mib(idle.rss)} MiB`,
      )
    } finally {
      await server.stop()
    }
  }
  // Start-up again, R times per scale (one spawn is one noisy sample): through the plugin, and the floor (the same
  // stores read from storage and installed in the resolver, with no status, seal or check), alternating.
  // Three samples each: the plugin's first one is the run above.
  for (let round = 0; round < 3; round++) {
    for (const n of SNI_SCALES) {
      const loads: Array<'plugin' | 'storage'> = round > 0 ? ['plugin'] : []
      if (n >= 1000 && n <= 10_000) loads.push('storage')
      for (const load of loads) {
        const server = await startAcmeServer({
          store: store.root,
          directoryUrl: store.directoryUrl,
          names: n,
          suffix: STORE_SUFFIX,
          load,
        })
        await server.stop()
        const key = `${load} ${n}`
        starts.set(key, [
          ...(starts.get(key) ?? []),
          { loadedMs: server.loadedMs, spawnToServeMs: server.spawnToServeMs },
        ])
      }
    }
  }
  for (const [key, runs] of starts) {
    const [load, count] = key.split(' ') as [string, string]
    const n = Number(count)
    const loaded = median(runs.map((r) => r.loadedMs))
    const check = checks.get(n)
    startRows.push([
      fmt(n),
      load === 'plugin' ? 'plugin (manager.load)' : 'floor: storage → resolver, nothing else',
      withSpread(runs.map((r) => r.loadedMs)),
      withSpread(runs.map((r) => r.spawnToServeMs)),
      loaded < 10_000 ? 'yes' : 'no',
      load !== 'plugin' || n === 1
        ? '–'
        : check
          ? `${fmt(check.ms / 1000, 1)} s (${fmt(check.rejected)} rejected)`
          : 'still running',
    ])
    all.push({ n, load, starts: runs })
    log(`  start-up, ${key}: loaded in ${runs.map((r) => fmt(r.loadedMs)).join(', ')} ms`)
  }
  raw['sni'] = all
  print(
    '### 5. SNI scale: managed names cached in a FileStorage store (Node handshake client, SNI random per connection)',
  )
  print()
  print(
    table(
      [
        'names',
        'CPU µs/handshake, warm',
        '×1 name',
        'CPU µs/handshake, random over all',
        'of which first contacts',
        '×1 name',
        'idle RSS MiB',
        'KiB RSS per idle cert',
        'RSS MiB after the background check',
        'KiB JS heap per idle cert',
        'KiB RSS per built context',
        'µs to build a context',
      ],
      rows,
    ),
  )
  print()
  print(
    'warm: SNI random over the names whose secure context exists (all names up to 1,000; built beforehand, as earlier handshakes would). random over all: SNI random over every name, so most handshakes at 10,000+ names are a first contact that builds the context (lazy contexts).',
  )
  print()
  print('### 5. Start-up with cached certificates')
  print()
  print(
    table(
      [
        'names',
        'load path',
        'create app → listening, ms (median of 3)',
        'process spawn → first handshake served, ms',
        "within Fastify's default pluginTimeout (10 s)",
        'background check of every pair, after listening',
      ],
      startRows,
    ),
  )
  print()
}

// --- figure 6: issuance against Pebble -------------------------------------------------------------------------

async function issuanceRuns(upstreamPort: number): Promise<void> {
  const rows: string[][] = []
  const all: unknown[] = []
  for (const count of QUICK ? [1, 20] : [1, 100]) {
    const pebble = await startPebble()
    const suffix = `run${Date.now() % 100000}.issue.bench.test`
    const dir = join(work, `issue-${count}`)
    await mkdir(dir, { recursive: true })
    await writeFile(join(dir, 'pebble-ca.pem'), pebble.caBundle)
    const script = fileURLToPath(new URL('./servers/proxy-acme.ts', import.meta.url))
    const t0 = performance.now()
    const child = startPinned(
      PROXY_CORE,
      process.execPath,
      [
        '--import',
        'tsx',
        '--conditions=source',
        script,
        `--port=${pebble.tlsPort}`,
        `--directory=${pebble.directoryUrl}`,
        `--ca=${join(dir, 'pebble-ca.pem')}`,
        `--cache=${join(dir, 'cache')}`,
        `--names=${count}`,
        `--suffix=${suffix}`,
        `--upstream=http://127.0.0.1:${upstreamPort}`,
      ],
      { keepOutput: false },
    )
    try {
      // The first certificate served, as a client sees it: poll handshakes for the first name.
      let firstServedMs = Number.NaN
      const deadline = Date.now() + 120_000
      while (Date.now() < deadline && child.proc.exitCode === null) {
        const ok = await new Promise<boolean>((resolve) => {
          const s = connectTls(pebble.tlsPort, `i0.${suffix}`)
          s.setTimeout(2000, () => s.destroy())
          s.once('secureConnect', () => {
            s.end()
            resolve(true)
          })
          s.once('error', () => resolve(false))
          s.once('close', () => resolve(false))
        })
        if (ok) {
          firstServedMs = performance.now() - t0
          break
        }
        await new Promise((r) => setTimeout(r, 10))
      }
      let done: Record<string, number> | undefined
      while (Date.now() < deadline && !done) {
        const line = child
          .output()
          .split('\n')
          .find((l) => l.startsWith('{"done"'))
        if (line) done = JSON.parse(line) as Record<string, number>
        else await new Promise((r) => setTimeout(r, 50))
      }
      if (!done) throw new Error(`issuance of ${count} names did not finish:\n${child.output().slice(-3000)}`)
      const cpu = cpuSeconds(child.pid)
      all.push({ count, firstServedMs, done, cpu })
      rows.push([
        fmt(count),
        fmt(firstServedMs),
        fmt(done['firstMs'] ?? Number.NaN),
        fmt(done['allMs'] ?? Number.NaN),
        fmt(cpu, 2),
        fmt(((done['cpuSeconds'] ?? Number.NaN) * 1000) / count),
      ])
      log(
        `  issuance of ${count}: first served ${fmt(firstServedMs)} ms after spawn; all in ${fmt(done['allMs'] ?? 0)} ms; CPU ${fmt(cpu, 2)} s`,
      )
    } finally {
      await child.stop()
      await pebble.stop()
    }
  }
  raw['issue'] = all
  print('### 6. Issuance against the local Pebble (PEBBLE_VA_NOSLEEP=1, TLS-ALPN-01 on the proxy port, concurrency 8)')
  print()
  print(
    table(
      [
        'names',
        'spawn → first certificate served, ms',
        'in-process start → first certificate, ms',
        'in-process start → all certificates, ms',
        'proxy CPU s (whole process)',
        'CPU ms per name',
      ],
      rows,
    ),
  )
  print()
}

function connectTls(port: number, servername: string) {
  return tlsConnect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false })
}

// --- main ------------------------------------------------------------------------------------------------------

const info = machineInfo()
print(`## Run of ${new Date().toISOString()}`)
print()
print(
  `Machine: ${info.cpu}, ${info.cores} cores, ${info.memory}; ${info.os}, Linux ${info.kernel}; Node ${info.node} (OpenSSL ${info.openssl}).`,
)
print(
  `Peers: nginx ${info.tools['nginx']}, HAProxy ${info.tools['haproxy']}, Caddy ${info.tools['caddy']}; load: ${info.tools['wrk']}, ${info.tools['h2load']}; Pebble ${info.tools['pebble']}.`,
)
print(
  `Method: proxy pinned to core ${PROXY_CORE}; load generator and upstream (nginx, static files) pinned to core ${LOAD_CORE}; ${D} s per measurement after a warm-up; ${R} round(s), peers in rotating order; medians ±half the min–max range.`,
)
print(`Load average at start: ${loadAtStart}.`)
print()

const ecdsa = await makeCertFiles(work, 'ecdsa')
const rsa = await makeCertFiles(work, 'rsa')
const upstream = await startUpstream(join(work, 'upstream'))
try {
  print('Full handshakes, checked against a Node HTTPS server that issues session tickets:')
  print()
  for (const line of await verifyFullHandshakes(ecdsa)) print(`- ${line}`)
  print()
  if (SECTIONS.has('proxy')) {
    await proxyRounds(ecdsa, rsa, upstream.port)
    proxyTables()
    raw['proxy'] = Object.fromEntries([...results].map(([k, v]) => [k, Object.fromEntries(v)]))
  }
  const storeRoot = join(cacheRoot, 'store')
  if (SECTIONS.has('peek')) {
    const store = ensureStore(storeRoot, 1, log)
    await peekRuns(store.root, store.directoryUrl)
  }
  if (SECTIONS.has('sni')) await sniRuns(storeRoot)
  if (SECTIONS.has('issue')) await issuanceRuns(upstream.port)
} finally {
  await upstream.stop()
}
print(`Load average at end: ${loadAverage()}. Total time ${fmt((Date.now() - started) / 1000)} s.`)

const resultsDir = join(cacheRoot, 'results')
await mkdir(resultsDir, { recursive: true })
const stamp = new Date().toISOString().replace(/[:.]/g, '-')
await writeFile(join(resultsDir, `${stamp}.md`), `${out.join('\n')}\n`)
await writeFile(join(resultsDir, `${stamp}.json`), JSON.stringify({ info, flags, loadAtStart, raw }, null, 1))
log(`saved ${join(resultsDir, stamp)}.md and .json`)
await rm(work, { recursive: true, force: true })
