// Load generators and what they print: wrk (HTTP/1.1 keep-alive, and new connections with `Connection: close`),
// h2load (HTTP/2) and our Node handshake client (random SNI per connection). Every run is pinned to the load core,
// bounded in time, and measured together with the CPU time the server process spent during it.
import { fileURLToPath } from 'node:url'
import { LOAD_CORE, runPinned, sampleRss, treeCpuSeconds } from './sys.js'

export interface LoadResult {
  /** Completed requests (or handshakes) per second, as the client measured it. */
  rate: number
  count: number
  seconds: number
  /** Server CPU seconds (user+sys) during the run. */
  cpu: number
  /** Server CPU per request / handshake, in microseconds. */
  cpuPerOpUs: number
  /** Requests (or handshakes) per second of server CPU: throughput per core. */
  perCore: number
  p50Ms?: number
  p99Ms?: number
  /** Bytes per second read by the client (wrk). */
  bytesPerSec?: number
  /** Highest VmRSS of the server seen during the run. */
  peakRss: number
  errors: number
  note?: string
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 }
const UNIT_BYTES: Record<string, number> = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 }

function latencyMs(text: string, percentile: string): number | undefined {
  const m = new RegExp(`^\\s*${percentile}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(text)
  return m ? Number(m[1]) * (UNIT_MS[m[2]!] ?? Number.NaN) : undefined
}

export function parseWrk(text: string) {
  const requests = /^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),/m.exec(text)
  const rate = /^Requests\/sec:\s+([\d.]+)/m.exec(text)
  const transfer = /^Transfer\/sec:\s+([\d.]+)(B|KB|MB|GB)/m.exec(text)
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text)
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text)
  if (!requests || !rate) throw new Error(`could not parse wrk output:\n${text}`)
  // Read errors are how wrk counts a server closing the connection it was told to close (Connection: close runs).
  const errors = Number(non2xx?.[1] ?? 0) + (socket ? Number(socket[1]) + Number(socket[3]) + Number(socket[4]) : 0)
  return {
    count: Number(requests[1]),
    seconds: Number(requests[2]) * ((UNIT_MS[requests[3]!] ?? 1000) / 1000),
    rate: Number(rate[1]),
    bytesPerSec: transfer ? Number(transfer[1]) * (UNIT_BYTES[transfer[2]!] ?? 1) : undefined,
    p50Ms: latencyMs(text, '50'),
    p99Ms: latencyMs(text, '99'),
    errors,
  }
}

export function parseH2load(text: string) {
  const finished = /finished in ([\d.]+)(us|ms|s|m), ([\d.]+) req\/s, ([\d.]+)(B|KB|MB|GB)\/s/.exec(text)
  const requests =
    /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(text)
  if (!finished || !requests) throw new Error(`could not parse h2load output:\n${text}`)
  return {
    seconds: Number(finished[1]) * ((UNIT_MS[finished[2]!] ?? 1000) / 1000),
    rate: Number(finished[3]),
    bytesPerSec: Number(finished[4]) * (UNIT_BYTES[finished[5]!] ?? 1),
    count: Number(requests[4]),
    errors: Number(requests[5]) + Number(requests[6]),
  }
}

async function measured<T extends { count: number; seconds: number; rate: number; errors: number }>(
  serverPid: number,
  run: () => Promise<T>,
): Promise<LoadResult & T> {
  const rss = sampleRss(serverPid)
  const before = treeCpuSeconds(serverPid)
  const parsed = await run()
  const cpu = treeCpuSeconds(serverPid) - before
  const peakRss = rss.stop()
  return {
    ...parsed,
    cpu,
    cpuPerOpUs: parsed.count > 0 ? (cpu / parsed.count) * 1e6 : Number.NaN,
    perCore: cpu > 0 ? parsed.count / cpu : Number.NaN,
    peakRss,
  }
}

export interface WrkOptions {
  url: string
  seconds: number
  connections: number
  /** New connection per request: full handshakes, one request each. */
  close?: boolean
}

export function wrk(serverPid: number, o: WrkOptions): Promise<LoadResult> {
  const args = ['-t1', `-c${o.connections}`, `-d${o.seconds}s`, '--latency', '--timeout', '5s']
  if (o.close) args.push('-H', 'Connection: close')
  args.push(o.url)
  return measured(serverPid, async () => {
    const r = await runPinned(LOAD_CORE, 'wrk', args, (o.seconds + 20) * 1000)
    if (r.code !== 0) throw new Error(`wrk exited ${r.code}: ${r.stderr}${r.stdout}`)
    return parseWrk(r.stdout)
  })
}

export interface H2loadOptions {
  url: string
  seconds: number
  connections: number
  streams: number
}

export function h2load(serverPid: number, o: H2loadOptions): Promise<LoadResult> {
  const args = ['-t1', `-c${o.connections}`, `-m${o.streams}`, `-D${o.seconds}`, o.url]
  return measured(serverPid, async () => {
    const r = await runPinned(LOAD_CORE, 'h2load', args, (o.seconds + 20) * 1000)
    if (r.code !== 0) throw new Error(`h2load exited ${r.code}: ${r.stderr}${r.stdout}`)
    const parsed = parseH2load(r.stdout)
    if (parsed.count === 0) throw new Error(`h2load completed no request:\n${r.stdout}`)
    return parsed
  })
}

export interface NewConnectionOptions {
  url: string
  seconds: number
  /** New connections opened at once by one h2load invocation; invocations follow each other until `seconds`. */
  batch: number
}

/**
 * Full handshakes with one HTTP/1.1 request each: h2load `--h1 -c B -n B` (every client opens its own connection,
 * sends one request and is done; h2load never offers a session, checked at start), repeated until `seconds` have
 * passed. Closed loop in batches: the rate is a little below the steady maximum (each batch waits for its slowest
 * connection); the CPU per connection is unaffected.
 */
export function newConnections(serverPid: number, o: NewConnectionOptions): Promise<LoadResult> {
  return measured(serverPid, async () => {
    const started = performance.now()
    const deadline = started + o.seconds * 1000
    let count = 0
    let errors = 0
    while (performance.now() < deadline) {
      const args = ['--h1', '-t1', `-c${o.batch}`, `-n${o.batch}`, o.url]
      const r = await runPinned(LOAD_CORE, 'h2load', args, 30_000)
      const parsed = parseH2load(r.stdout)
      count += parsed.count
      errors += parsed.errors
    }
    const seconds = (performance.now() - started) / 1000
    return { count, seconds, rate: count / seconds, errors }
  })
}

export interface HandshakeOptions {
  port: number
  seconds: number
  concurrency: number
  /** SNI: a fixed name, or `n<i>.<suffix>` for a random i in [0, names) per connection. */
  servername: string
  names?: number
  suffix?: string
}

const CLIENT = fileURLToPath(new URL('../clients/handshakes.ts', import.meta.url))

/** Full TLS handshakes (no request) from the Node client; it counts resumed sessions, which must stay 0. */
export function handshakes(serverPid: number, o: HandshakeOptions): Promise<LoadResult & { resumed: number }> {
  const args = [
    '--import',
    'tsx',
    CLIENT,
    `--port=${o.port}`,
    `--seconds=${o.seconds}`,
    `--concurrency=${o.concurrency}`,
    `--servername=${o.servername}`,
    `--names=${o.names ?? 0}`,
    `--suffix=${o.suffix ?? ''}`,
  ]
  return measured(serverPid, async () => {
    const r = await runPinned(LOAD_CORE, process.execPath, args, (o.seconds + 30) * 1000)
    const line = r.stdout.trim().split('\n').pop() ?? ''
    if (r.code !== 0 || !line.startsWith('{')) throw new Error(`handshake client failed (${r.code}): ${r.stderr}`)
    const out = JSON.parse(line) as { handshakes: number; resumed: number; errors: number; seconds: number }
    return {
      count: out.handshakes,
      seconds: out.seconds,
      rate: out.handshakes / out.seconds,
      errors: out.errors,
      resumed: out.resumed,
    }
  })
}
