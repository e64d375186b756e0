// Owns the pebble-challtestsrv process (Debian's `pebble` package ships it): the loopback DNS server Pebble resolves
// every name through, and a typed client for its management API (A, TXT and CNAME records), which DNS-01 needs.
import { type ChildProcess, spawn } from 'node:child_process'
import { createSocket } from 'node:dgram'
import { request } from 'node:http'
import { freePorts } from './ports.js'
import { findBinary, LogCapture, sleep, terminate, track, watchExit } from './processes.js'

/** Options of {@link startChallTestSrv}. */
export interface ChallTestSrvOptions {
  /** Answer for A queries of names without their own record. Default `127.0.0.1`. */
  defaultIPv4?: string
  /** Path of the binary, default `pebble-challtestsrv` on PATH or /usr/bin/pebble-challtestsrv. */
  binary?: string
}

/** A running pebble-challtestsrv started by {@link startChallTestSrv}: DNS on 127.0.0.1, records set over HTTP. */
export interface ChallTestSrv {
  /** UDP and TCP port of the DNS server on 127.0.0.1. */
  dnsPort: number
  /** Base URL of the management API: `http://127.0.0.1:<port>`. */
  managementUrl: string
  /** PID of the pebble-challtestsrv process. */
  pid: number
  /** Answer A queries for `host` with `addresses` instead of the default IPv4 address. */
  addA(host: string, addresses: string[]): Promise<void>
  /** Remove the A records of `host`: it gets the default IPv4 address again. */
  clearA(host: string): Promise<void>
  /** Add a TXT record (e.g. `_acme-challenge.<name>` with a DNS-01 key authorization digest). */
  addTxt(host: string, value: string): Promise<void>
  /** Remove every TXT record of `host`. */
  clearTxt(host: string): Promise<void>
  /** Answer CNAME queries for `host` with `target`. */
  addCname(host: string, target: string): Promise<void>
  clearCname(host: string): Promise<void>
  /** SIGTERM the process (SIGKILL after 2 s). Idempotent. */
  stop(): Promise<void>
  /** The process's stdout and stderr so far (the oldest part is dropped past ~2 MB). */
  logs(): string
}

const READY_TIMEOUT_MS = 10_000
const STOP_GRACE_MS = 2_000
const START_ATTEMPTS = 3

/** challtestsrv keys its records by fully qualified name: `a.test` and `a.test.` must be the same host. */
function fqdn(host: string): string {
  if (host.length === 0 || /[\s/]/.test(host)) throw new TypeError(`not a DNS name: ${JSON.stringify(host)}`)
  return host.endsWith('.') ? host : `${host}.`
}

function post(url: string, body: unknown, timeoutMs = 5_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const payload = JSON.stringify(body)
    const req = request(
      url,
      { method: 'POST', agent: false, timeout: timeoutMs, headers: { 'content-type': 'application/json' } },
      (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => {
          text += chunk
        })
        res.on('end', () => {
          if (res.statusCode === 200) resolve()
          else reject(new Error(`POST ${url} answered ${res.statusCode}: ${text.trim()}`))
        })
        res.on('error', reject)
      },
    )
    req.on('timeout', () => req.destroy(new Error(`POST ${url} timed out after ${timeoutMs} ms`)))
    req.on('error', reject)
    req.end(payload)
  })
}

/** Whether UDP `port` on 127.0.0.1 can be bound right now (the DNS server needs it on both TCP and UDP). */
function udpFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createSocket('udp4')
    socket.once('error', () => {
      socket.close()
      resolve(false)
    })
    socket.bind(port, '127.0.0.1', () => socket.close(() => resolve(true)))
  })
}

async function launch(binary: string, defaultIPv4: string): Promise<ChallTestSrv> {
  const [dnsPort, managementPort] = await freePorts(2)
  if (!(await udpFree(dnsPort!))) throw new Error(`UDP port ${dnsPort} is taken`)
  const managementUrl = `http://127.0.0.1:${managementPort}`
  const capture = new LogCapture(() => {})
  // stdio piped like Pebble's: an orphan whose pipe broke dies at its next log line.
  const child: ChildProcess = spawn(
    binary,
    [
      '-dns01',
      `127.0.0.1:${dnsPort}`,
      '-management',
      `127.0.0.1:${managementPort}`,
      '-defaultIPv4',
      defaultIPv4,
      // No AAAA answers: Pebble asks AAAA first and dials the first address it gets, and `::1` would miss an app that
      // listens on 127.0.0.1 only.
      '-defaultIPv6',
      '',
      // Only DNS: the app under test answers the other challenges itself.
      '-http01',
      '',
      '-https01',
      '',
      '-tlsalpn01',
      '',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  capture.attach(child.stdout)
  capture.attach(child.stderr)
  const watch = watchExit(child)
  track(child)

  let stopping: Promise<void> | undefined
  const stop = (): Promise<void> => {
    stopping ??= terminate(child, watch, STOP_GRACE_MS)
    return stopping
  }
  const api = (path: string, body: unknown) => post(`${managementUrl}${path}`, body)
  const server: ChallTestSrv = {
    dnsPort: dnsPort!,
    managementUrl,
    pid: child.pid ?? -1,
    addA: async (host, addresses) => api('/add-a', { host: fqdn(host), addresses }),
    clearA: async (host) => api('/clear-a', { host: fqdn(host) }),
    addTxt: async (host, value) => api('/set-txt', { host: fqdn(host), value }),
    clearTxt: async (host) => api('/clear-txt', { host: fqdn(host) }),
    addCname: async (host, target) => api('/set-cname', { host: fqdn(host), target: fqdn(target) }),
    clearCname: async (host) => api('/clear-cname', { host: fqdn(host) }),
    stop,
    logs: () => capture.toString(),
  }

  // The management server starts after the DNS listeners, so its first answer means both are up.
  const deadline = Date.now() + READY_TIMEOUT_MS
  let lastError = 'no attempt made'
  while (Date.now() < deadline && watch.status() === undefined) {
    try {
      await api('/clear-a', { host: 'readiness.invalid.' })
      return server
    } catch (error) {
      lastError = error instanceof Error ? error.message : String(error)
    }
    await sleep(50)
  }
  const reason = watch.status() ? `exited early (${watch.status()})` : `not ready after ${READY_TIMEOUT_MS} ms`
  child.kill('SIGKILL')
  await stop()
  throw new Error(`${binary} ${reason}; last probe: ${lastError}\n--- output ---\n${server.logs()}`)
}

/**
 * Start Debian's pebble-challtestsrv as a DNS server on free loopback ports: every A query gets `defaultIPv4` (or the
 * records added with {@link ChallTestSrv.addA}), AAAA gets no answer, TXT and CNAME what was added. Waits until its
 * management API answers. Ports are picked free just before the start, so a lost race is retried (3 attempts).
 */
export async function startChallTestSrv(options: ChallTestSrvOptions = {}): Promise<ChallTestSrv> {
  const binary = options.binary ?? (await findBinary('pebble-challtestsrv'))
  const defaultIPv4 = options.defaultIPv4 ?? '127.0.0.1'
  let lastError: unknown
  for (let attempt = 0; attempt < START_ATTEMPTS; attempt++) {
    try {
      return await launch(binary, defaultIPv4)
    } catch (error) {
      lastError = error
      // A missing binary will not appear on a retry.
      if (error instanceof Error && /spawn error/.test(error.message)) break
    }
  }
  throw lastError
}
