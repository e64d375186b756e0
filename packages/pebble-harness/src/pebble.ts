// Owns the Pebble process: config, environment, readiness, log capture, and making sure no Pebble outlives the
// test process that started it.
import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { get } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { makeTestCertificates } from './certs.js'
import { type ChallTestSrv, startChallTestSrv } from './challtestsrv.js'
import { freePorts } from './ports.js'
import { findBinary, LogCapture, sleep, terminate, track, watchExit } from './processes.js'

/** Options of {@link startPebble}. */
export interface PebbleOptions {
  /** Port on 127.0.0.1 where Pebble validates TLS-ALPN-01 (the app's HTTPS port). Default: a free port reserved by the harness. */
  tlsPort?: number
  /** Port where Pebble validates HTTP-01. Default: a free port reserved by the harness. */
  httpPort?: number
  /** PEBBLE_VA_NOSLEEP: default true (no 0-4 s sleep per validation). */
  vaNoSleep?: boolean
  /** PEBBLE_WFE_NONCEREJECT percentage, default 0 (Pebble's own default is 5). */
  nonceRejectPercent?: number
  /** PEBBLE_AUTHZREUSE percentage, default 0 (Pebble's default 50). */
  authzReusePercent?: number
  /** certificateValidityPeriod in seconds (short-lived certificates make renewal testable). Default: Pebble's default. */
  certificateValidityPeriod?: number
  /** External account binding: when set, EAB is required and these key ids/HMAC keys (base64url) are accepted. */
  eab?: { kid: string; hmacKey: string }[]
  /** Reuse an existing Pebble HTTPS listen port (to restart "the same CA" after stop(): same directory URL). */
  listenPort?: number
  /** Extra env for the pebble process. Applied last, so it can override the knobs above; PEBBLE_VA_ALWAYS_VALID is refused. */
  env?: Record<string, string>
  /** Path of the pebble binary, default 'pebble' on PATH or /usr/bin/pebble. */
  binary?: string
  /**
   * A running {@link startChallTestSrv} to resolve names through, e.g. shared by several Pebbles or kept across a
   * restart; the caller stops it. Default: one started for this Pebble and stopped with it.
   */
  dns?: ChallTestSrv
  /**
   * `host:port` of the DNS server Pebble resolves and validates through instead of the challtestsrv, e.g.
   * `startBind().address` for DNS-01 against a real BIND (start named with `forwarders: [challtestsrv]` to keep
   * every other name resolving to 127.0.0.1). The challtestsrv is still started (or `dns` used) and exposed as
   * {@link Pebble.dns}. Default: the challtestsrv's address.
   */
  dnsServer?: string
  /**
   * The certificate of Pebble's own HTTPS listener, e.g. `old.listenerCertificates` to restart "the same CA" that
   * clients already trust (same directory URL, same caBundle). Default: a new throw-away CA and leaf.
   */
  listenerCertificates?: { caCert: string; cert: string; key: string }
}

/** A running Pebble started by {@link startPebble}. */
export interface Pebble {
  /** ACME directory: `https://127.0.0.1:<listenPort>/dir`. Trust {@link Pebble.caBundle} to reach it. */
  directoryUrl: string
  /** Port of Pebble's ACME HTTPS listener; pass it back in {@link PebbleOptions.listenPort} to restart on the same URL. */
  listenPort: number
  /** Base URL of Pebble's management API: `https://127.0.0.1:<mgmtPort>`. */
  managementUrl: string
  /** Port on 127.0.0.1 Pebble dials for TLS-ALPN-01: the app's HTTPS port. */
  tlsPort: number
  /** Port on 127.0.0.1 Pebble dials for HTTP-01: the app's HTTP port. */
  httpPort: number
  /** Port of the DNS server (pebble-challtestsrv) Pebble resolves every name through (A -> 127.0.0.1, no AAAA). */
  dnsPort: number
  /** That DNS server: add A, TXT (DNS-01) and CNAME records through its management API. */
  dns: ChallTestSrv
  /** `host:port` Pebble resolves through (`-dnsserver`): the challtestsrv's, or {@link PebbleOptions.dnsServer}. */
  dnsServer: string
  /** PEM of the throw-away CA that signed Pebble's own HTTPS listener certificate (not the issuing root). */
  caBundle: string
  /** The listener's CA, certificate and key: pass to {@link PebbleOptions.listenerCertificates} on a restart. */
  listenerCertificates: { caCert: string; cert: string; key: string }
  /** PEM of the root Pebble issues under, from `${managementUrl}/roots/0`; new at every start. Cached. */
  issuingRoot(): Promise<string>
  /** PEM of the intermediate Pebble issues under, from `${managementUrl}/intermediates/0`. Cached. */
  issuingIntermediate(): Promise<string>
  /** PID of the pebble process. */
  pid: number
  /** SIGTERM Pebble (SIGKILL after 2 s), stop its own DNS server, remove the temp dir. Idempotent. */
  stop(): Promise<void>
  /** Pebble's stdout and stderr so far (the oldest part is dropped past ~2 MB). */
  logs(): string
}

const READY_TIMEOUT_MS = 15_000
const STOP_GRACE_MS = 2_000
// Pebble 2.4.0 prints this once per order it stores (wfe.NewOrder), after every check passed.
const ORDER_LINE = /Added order "[^"]*" to the db/

interface Tracked {
  orders: number
}

// Side table instead of extra Pebble fields: the count survives log truncation without widening the public API.
const tracked = new WeakMap<Pebble, Tracked>()
function checkPort(name: string, value: number | undefined): void {
  if (value !== undefined && !(Number.isInteger(value) && value > 0 && value < 65536))
    throw new TypeError(`${name} must be a TCP port, got ${value}`)
}

function checkPercent(name: string, value: number): void {
  if (!(Number.isInteger(value) && value >= 0 && value <= 100))
    throw new TypeError(`${name} must be an integer percentage, got ${value}`)
}

function buildEnv(options: PebbleOptions): NodeJS.ProcessEnv {
  const nonce = options.nonceRejectPercent ?? 0
  const reuse = options.authzReusePercent ?? 0
  checkPercent('nonceRejectPercent', nonce)
  checkPercent('authzReusePercent', reuse)
  if (options.env && 'PEBBLE_VA_ALWAYS_VALID' in options.env)
    throw new TypeError('PEBBLE_VA_ALWAYS_VALID skips validation, so a test using it would test nothing')
  const env: NodeJS.ProcessEnv = {}
  // A developer's shell must not change what the tests exercise: inherited PEBBLE_* settings are dropped.
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('PEBBLE_')) env[key] = value
  if (options.vaNoSleep !== false) env['PEBBLE_VA_NOSLEEP'] = '1'
  env['PEBBLE_WFE_NONCEREJECT'] = String(nonce)
  env['PEBBLE_AUTHZREUSE'] = String(reuse)
  return { ...env, ...options.env }
}

interface HttpsResult {
  status: number
  body: string
}

function httpsGet(url: string, ca: string, timeoutMs: number): Promise<HttpsResult> {
  return new Promise((resolve, reject) => {
    // agent: false so no keep-alive socket outlives the request and holds the test process open.
    const request = get(url, { ca, agent: false, timeout: timeoutMs }, (response) => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => {
        body += chunk
      })
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }))
      response.on('error', reject)
    })
    request.on('timeout', () => request.destroy(new Error(`GET ${url} timed out after ${timeoutMs} ms`)))
    request.on('error', reject)
  })
}

/**
 * Start Debian's Pebble on 127.0.0.1 with a fresh config, a throw-away HTTPS certificate and pebble-challtestsrv
 * resolving every name to 127.0.0.1, and wait until its directory answers (15 s at most).
 *
 * Defaults are chosen for deterministic tests: no validation sleep, no nonce rejection, no authorization reuse.
 * On failure the process is killed and the thrown Error carries Pebble's output.
 */
export async function startPebble(options: PebbleOptions = {}): Promise<Pebble> {
  checkPort('listenPort', options.listenPort)
  checkPort('tlsPort', options.tlsPort)
  checkPort('httpPort', options.httpPort)
  if (options.dnsServer !== undefined && !/^[^\s:]+:\d{1,5}$/.test(options.dnsServer))
    throw new TypeError(`dnsServer must be host:port, got ${JSON.stringify(options.dnsServer)}`)
  const validity = options.certificateValidityPeriod
  if (validity !== undefined && !(Number.isInteger(validity) && validity > 0))
    throw new TypeError(`certificateValidityPeriod must be a positive number of seconds, got ${validity}`)
  const env = buildEnv(options)
  const binary = options.binary ?? (await findBinary('pebble'))

  const given = [options.listenPort, options.tlsPort, options.httpPort].filter((p): p is number => p !== undefined)
  const spare = await freePorts(4, given)
  const mgmtPort = spare.pop()!
  const listenPort = options.listenPort ?? spare.pop()!
  const tlsPort = options.tlsPort ?? spare.pop()!
  const httpPort = options.httpPort ?? spare.pop()!

  const dir = await mkdtemp(join(tmpdir(), 'autotls-pebble-'))
  let dns: ChallTestSrv | undefined
  try {
    const certs =
      options.listenerCertificates ?? (await makeTestCertificates({ names: ['localhost', '127.0.0.1', '::1'], dir }))
    if (options.listenerCertificates) {
      await writeFile(join(dir, 'cert.pem'), certs.cert)
      await writeFile(join(dir, 'key.pem'), certs.key, { mode: 0o600 })
    }
    dns = options.dns ?? (await startChallTestSrv())
    const config = {
      pebble: {
        listenAddress: `127.0.0.1:${listenPort}`,
        managementListenAddress: `127.0.0.1:${mgmtPort}`,
        // Relative to cwd, which is `dir`.
        certificate: 'cert.pem',
        privateKey: 'key.pem',
        httpPort,
        tlsPort,
        ocspResponderURL: '',
        externalAccountBindingRequired: options.eab !== undefined,
        ...(options.eab && {
          externalAccountMACKeys: Object.fromEntries(options.eab.map(({ kid, hmacKey }) => [kid, hmacKey])),
        }),
        ...(validity !== undefined && { certificateValidityPeriod: validity }),
      },
    }
    const configPath = join(dir, 'pebble-config.json')
    await writeFile(configPath, `${JSON.stringify(config, null, 2)}\n`)
    return await launch({
      binary,
      env,
      dir,
      configPath,
      certs,
      dns,
      dnsServer: options.dnsServer ?? `127.0.0.1:${dns.dnsPort}`,
      ownDns: !options.dns,
      listenPort,
      mgmtPort,
      tlsPort,
      httpPort,
    })
  } catch (error) {
    if (!options.dns) await dns?.stop()
    await rm(dir, { recursive: true, force: true })
    throw error
  }
}

interface LaunchPlan {
  binary: string
  env: NodeJS.ProcessEnv
  dir: string
  configPath: string
  certs: { caCert: string; cert: string; key: string }
  dns: ChallTestSrv
  dnsServer: string
  ownDns: boolean
  listenPort: number
  mgmtPort: number
  tlsPort: number
  httpPort: number
}

async function launch(plan: LaunchPlan): Promise<Pebble> {
  const { dir, dns, listenPort, mgmtPort, tlsPort, httpPort } = plan
  const state: Tracked = { orders: 0 }
  const capture = new LogCapture((line) => {
    if (ORDER_LINE.test(line)) state.orders += 1
  })
  // stdio is piped, not ignored: besides capturing logs, a Go program whose stdout/stderr pipe breaks dies on its
  // next log line (SIGPIPE). No hook runs when the test process is SIGKILLed; the orphan then dies at the first
  // request it gets (Pebble logs every request), e.g. from the next run reusing its port.
  const child = spawn(plan.binary, ['-config', plan.configPath, '-dnsserver', plan.dnsServer, '-strict=false'], {
    cwd: dir,
    env: plan.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  capture.attach(child.stdout)
  capture.attach(child.stderr)
  const watch = watchExit(child)
  // The child stays tracked after exiting on its own: the exit hook still has its temp dir to remove.
  track(child, dir)

  let stopping: Promise<void> | undefined
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      await terminate(child, watch, STOP_GRACE_MS)
      if (plan.ownDns) await dns.stop()
      await rm(dir, { recursive: true, force: true })
    })()
    return stopping
  }

  const managementUrl = `https://127.0.0.1:${mgmtPort}`
  const caBundle = plan.certs.caCert
  const cachedPem = (path: string): (() => Promise<string>) => {
    let cached: Promise<string> | undefined
    return () => {
      cached ??= httpsGet(`${managementUrl}${path}`, caBundle, 5_000).then(({ status, body }) => {
        if (status !== 200) throw new Error(`GET ${managementUrl}${path} answered ${status}: ${body}`)
        return body
      })
      // A failed fetch is not cached: the next call retries.
      cached.catch(() => {
        cached = undefined
      })
      return cached
    }
  }

  const pebble: Pebble = {
    directoryUrl: `https://127.0.0.1:${listenPort}/dir`,
    listenPort,
    managementUrl,
    tlsPort,
    httpPort,
    dnsPort: dns.dnsPort,
    dns,
    dnsServer: plan.dnsServer,
    caBundle,
    listenerCertificates: { caCert: plan.certs.caCert, cert: plan.certs.cert, key: plan.certs.key },
    issuingRoot: cachedPem('/roots/0'),
    issuingIntermediate: cachedPem('/intermediates/0'),
    pid: child.pid ?? -1,
    stop,
    logs: () => capture.toString(),
  }
  tracked.set(pebble, state)

  const deadline = Date.now() + READY_TIMEOUT_MS
  let lastError = 'no attempt made'
  while (Date.now() < deadline && watch.status() === undefined) {
    try {
      const { status, body } = await httpsGet(pebble.directoryUrl, caBundle, 1_000)
      if (status === 200) return pebble
      lastError = `status ${status}: ${body.slice(0, 200)}`
    } catch (error) {
      lastError = error instanceof Error ? error.message : String(error)
    }
    await sleep(100)
  }
  const reason =
    watch.status() !== undefined ? `exited early (${watch.status()})` : `not ready after ${READY_TIMEOUT_MS} ms`
  // No grace period for a Pebble that never became ready; stop() then cleans up like for any other.
  child.kill('SIGKILL')
  await stop()
  throw new Error(
    `Pebble (${plan.binary}) ${reason}; last directory probe: ${lastError}\n--- pebble output ---\n${pebble.logs()}`,
  )
}

/**
 * Count the orders Pebble has accepted so far: lines `Added order "<id>" to the db` in its output. Counted as the
 * output streams, so the count stays exact after old logs are dropped.
 */
export function countOrders(pebble: Pebble): number {
  const state = tracked.get(pebble)
  if (state) return state.orders
  // A Pebble-shaped object this module did not start (e.g. a wrapper): fall back to scanning what it exposes.
  return pebble
    .logs()
    .split('\n')
    .filter((line) => ORDER_LINE.test(line)).length
}
