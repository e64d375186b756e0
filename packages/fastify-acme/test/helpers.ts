// Shared bits of this package's integration tests: an app wired with the plugin, and real TLS clients.
import { connect as h2connect } from 'node:http2'
import { type RequestOptions, request } from 'node:https'
import { type DetailedPeerCertificate, type PeerCertificate, connect as tlsConnect } from 'node:tls'
import type { Pebble } from '@autotls/pebble-harness'
import Fastify, { type FastifyInstance } from 'fastify'
import { acmeServerFactory, type Clock, type FastifyAcmeOptions, fastifyAcme } from '../src/index.js'

export interface AppOptions {
  http2?: boolean
  port: number
  acme: FastifyAcmeOptions
  defaultCertificate?: { key: string; cert: string }
  /** Collects the app's log lines (JSON) at info level. */
  logLines?: string[]
}

/** The options every test against the harness's Pebble repeats: its directory and roots, the terms agreed. */
export function pebbleAcme(pebble: Pebble, names: string[]) {
  return { names, directory: pebble.directoryUrl, termsOfServiceAgreed: true as const, caRoots: pebble.caBundle }
}

export async function startApp(opts: AppOptions): Promise<FastifyInstance> {
  const app = Fastify({
    http2: opts.http2 ?? false,
    serverFactory: acmeServerFactory(opts.defaultCertificate ? { defaultCertificate: opts.defaultCertificate } : {}),
    ...(opts.logLines ? { logger: { level: 'info', stream: { write: (l: string) => opts.logLines?.push(l) } } } : {}),
  } as never) as unknown as FastifyInstance
  await app.register(fastifyAcme, opts.acme)
  app.get('/', async (request) => ({ hello: 'world', host: request.hostname, http: request.raw.httpVersion }))
  await app.listen({ port: opts.port, host: '127.0.0.1' })
  return app
}

export interface HttpsResult {
  status: number
  body: string
  cert: PeerCertificate
  alpn: string | false | null
}

/** A real HTTPS/1.1 request to 127.0.0.1:port with SNI `name`, verifying the chain against `ca`. */
export function httpsGet(port: number, name: string, ca: string | string[], path = '/'): Promise<HttpsResult> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        servername: name,
        headers: { host: name },
        ca,
        agent: false,
        ALPNProtocols: ['http/1.1'],
      } as RequestOptions,
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => {
          const socket = res.socket as import('node:tls').TLSSocket
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(chunks).toString('utf8'),
            cert: socket.getPeerCertificate(),
            alpn: socket.alpnProtocol,
          })
        })
      },
    )
    req.on('error', reject)
    req.end()
  })
}

/** A real HTTP/2 request. */
export function h2Get(port: number, name: string, ca: string | string[], path = '/'): Promise<HttpsResult> {
  return new Promise((resolve, reject) => {
    const session = h2connect(`https://127.0.0.1:${port}`, { ca, servername: name })
    session.on('error', reject)
    const stream = session.request({ ':path': path, ':authority': name })
    let status = 0
    const chunks: Buffer[] = []
    stream.on('response', (h) => {
      status = Number(h[':status'])
    })
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => {
      const socket = session.socket as import('node:tls').TLSSocket
      const result = {
        status,
        body: Buffer.concat(chunks).toString('utf8'),
        cert: socket.getPeerCertificate(),
        alpn: socket.alpnProtocol,
      }
      session.close()
      resolve(result)
    })
    stream.on('error', reject)
    stream.end()
  })
}

/**
 * A bare TLS handshake: which certificate and protocol the server picks for these SNI/ALPN/version choices.
 * With `untilServerEnds`, it resolves only when the server has ended the connection (what a challenge connection
 * must do), and `gotData` then covers everything the server sent on it; otherwise it resolves at the handshake.
 */
export function handshake(opts: {
  port: number
  servername?: string
  alpn?: string[]
  version?: 'TLSv1.2' | 'TLSv1.3'
  untilServerEnds?: boolean
}): Promise<
  | { ok: true; cert: DetailedPeerCertificate; alpn: string | false | null; gotData: boolean }
  | { ok: false; error: string }
> {
  return new Promise((resolve) => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port: opts.port,
      ...(opts.servername !== undefined ? { servername: opts.servername } : {}),
      ...(opts.alpn ? { ALPNProtocols: opts.alpn } : {}),
      ...(opts.version ? { minVersion: opts.version, maxVersion: opts.version } : {}),
      rejectUnauthorized: false,
    })
    let gotData = false
    let settled = false
    let secured: { cert: DetailedPeerCertificate; alpn: string | false | null } | undefined
    const done = (v: Parameters<typeof resolve>[0]) => {
      if (!settled) {
        settled = true
        resolve(v)
      }
      socket.destroy()
    }
    socket.on('data', () => {
      gotData = true
    })
    socket.on('secureConnect', () => {
      secured = { cert: socket.getPeerCertificate(true), alpn: socket.alpnProtocol }
      if (!opts.untilServerEnds) done({ ok: true, ...secured, gotData })
    })
    // The server's end of the connection: nothing more can arrive, so gotData is final.
    socket.on('end', () =>
      done(secured ? { ok: true, ...secured, gotData } : { ok: false, error: 'ended before handshake' }),
    )
    socket.on('error', (err) =>
      done(secured && !opts.untilServerEnds ? { ok: true, ...secured, gotData } : { ok: false, error: err.message }),
    )
    socket.on('close', () =>
      done(secured ? { ok: true, ...secured, gotData } : { ok: false, error: 'closed before handshake' }),
    )
    socket.setTimeout(5000, () =>
      done({ ok: false, error: secured ? 'timeout: the server did not end the connection' : 'timeout' }),
    )
  })
}

/** True when `cert` carries the critical acmeIdentifier extension (1.3.6.1.5.5.7.1.31) of a TLS-ALPN-01 cert. */
export function isChallengeCertificate(cert: PeerCertificate): boolean {
  const raw = (cert as DetailedPeerCertificate).raw
  if (!raw) return false
  // DER: OID 1.3.6.1.5.5.7.1.31 (06 08 2b 06 01 05 05 07 01 1f) followed by critical = TRUE (01 01 ff).
  return raw.includes(Buffer.from('06082b06010505070' + '11f0101ff', 'hex'))
}

export interface LoadResult {
  ok: number
  failed: number
  errors: string[]
  /** Distinct serials served, in the order first seen. */
  serials: string[]
}

/**
 * A client that keeps making HTTPS requests, each on a new connection (so each one is a full handshake that shows
 * the certificate served at that moment), until stopped. `ca()` is read per request so roots can be added.
 */
export function startLoad(port: number, name: string, ca: () => string[], pauseMs = 20) {
  const result: LoadResult = { ok: 0, failed: 0, errors: [], serials: [] }
  let running = true
  const loop = (async () => {
    while (running) {
      try {
        const res = await httpsGet(port, name, ca())
        if (res.status === 200) result.ok++
        else {
          result.failed++
          result.errors.push(`status ${res.status}`)
        }
        const serial = res.cert.serialNumber
        if (!result.serials.includes(serial)) result.serials.push(serial)
      } catch (err) {
        result.failed++
        if (result.errors.length < 20) result.errors.push((err as Error).message)
      }
      await new Promise((r) => setTimeout(r, pauseMs))
    }
  })()
  return {
    result,
    async stop(): Promise<LoadResult> {
      running = false
      await loop
      return result
    },
  }
}

/** Resolves when `predicate` holds, polling every 50 ms; rejects after `timeoutMs` with `what`. */
export async function until(predicate: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/**
 * The system clock, recording when each timer the plugin arms will fire (its scheduler's wake-ups). `nextWake()`
 * resolves at the next arming: once start-up has scheduled, the earliest wake-up shows that nothing is due before it.
 */
export function recordingClock() {
  const wakes: number[] = []
  let waiting: Array<(at: number) => void> = []
  let lastNow = Date.now()
  const clock: Clock = {
    now: () => {
      lastNow = Date.now()
      return lastNow
    },
    // Relative to the now() the caller computed its delay from, so a wake-up is recorded at the time it was set for.
    setTimeout: (fn, ms) => {
      const at = lastNow + ms
      wakes.push(at)
      for (const w of waiting) w(at)
      waiting = []
      return setTimeout(fn, ms)
    },
    clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
  }
  return {
    clock,
    wakes,
    nextWake: () => new Promise<number>((resolve) => waiting.push(resolve)),
  }
}
