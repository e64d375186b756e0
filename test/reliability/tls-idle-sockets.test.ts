// Check 10: 1,000 silent or half-open sockets at the TLS port are all closed by the server within the configured
// timeouts, with and without a pending TLS-ALPN-01 challenge (ClientHello peek on or off), while normal clients
// keep being served.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { connect as netConnect, type Socket } from 'node:net'
import { after, before, test } from 'node:test'
import { connect as tlsConnect } from 'node:tls'
import { acmeServerFactory, CertResolver } from '@autotls/fastify-acme'
import { makeTestCertificates } from '@autotls/pebble-harness'
import Fastify, { type FastifyInstance } from 'fastify'
import { challengeCertificate, figure, httpsGet, percentile } from './helpers.js'

const NAME = 'idle.reliability.test'
const PENDING = 'pending.reliability.test'
/** The configured timeouts: TLS handshake, ClientHello peek, and the first request's headers. */
const TIMEOUT_MS = 2000
/** Allowed lateness past the timeout (timer granularity, a busy 2-core machine). */
const SLACK_MS = 2000
const PER_KIND = 125

type Kind = 'silent TCP' | 'partial ClientHello' | 'partial hello + FIN' | 'TLS done, no request'

let app: FastifyInstance
let port: number
let resolver: CertResolver
let ca: string

before(async () => {
  resolver = new CertResolver()
  app = Fastify({
    serverFactory: acmeServerFactory({ resolver, peekTimeoutMs: TIMEOUT_MS, tls: { handshakeTimeout: TIMEOUT_MS } }),
  } as never) as unknown as FastifyInstance
  app.get('/', async () => 'ok')
  // Node's headersTimeout also bounds a connection that never sends a request (counted from the handshake), checked
  // every connectionsCheckingInterval (read at listen time; the proxy preset sets both the same way).
  Object.assign(app.server, { headersTimeout: TIMEOUT_MS, connectionsCheckingInterval: 250 })
  await app.listen({ port: 0, host: '127.0.0.1' })
  port = (app.server.address() as { port: number }).port
  const certs = await makeTestCertificates({ names: [NAME, PENDING] })
  ca = certs.caCert
  resolver.set(NAME, { key: certs.key, cert: certs.cert })
  resolver.set(PENDING, { key: certs.key, cert: certs.cert })
})
after(async () => {
  await app?.close()
})

function open(kind: Kind): Promise<{ kind: Kind; ms: number }> {
  return new Promise((resolve) => {
    let started = Date.now()
    let socket: Socket
    if (kind === 'TLS done, no request') {
      const tls = tlsConnect({ host: '127.0.0.1', port, servername: NAME, ca, ALPNProtocols: ['http/1.1'] })
      // The bound starts when the connection is usable: from then on it only waits for a request.
      tls.on('secureConnect', () => {
        started = Date.now()
      })
      socket = tls
    } else {
      socket = netConnect(port, '127.0.0.1')
      socket.on('connect', () => {
        if (kind === 'silent TCP') return
        // A record header announcing a 512-byte hello, its handshake header, and part of the body.
        socket.write(
          Buffer.concat([
            Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]),
            randomBytes(40),
          ]),
        )
        if (kind === 'partial hello + FIN') socket.end()
      })
    }
    socket.on('error', () => {})
    socket.on('close', () => resolve({ kind, ms: Date.now() - started }))
    socket.resume()
  })
}

async function phase(label: string): Promise<void> {
  const kinds: Kind[] = ['silent TCP', 'partial ClientHello', 'partial hello + FIN', 'TLS done, no request']
  const closed: Promise<{ kind: Kind; ms: number }>[] = []
  for (const kind of kinds) for (let i = 0; i < PER_KIND; i++) closed.push(open(kind))
  // While they hang, normal clients are served.
  let normalOk = 0
  let normalFailed = 0
  for (let i = 0; i < 20; i++) {
    const res = await httpsGet(port, NAME, ca).catch(() => undefined)
    if (res?.status === 200) normalOk++
    else normalFailed++
  }
  const results = await Promise.all(closed)
  const parts: string[] = []
  for (const kind of kinds) {
    const ms = results.filter((r) => r.kind === kind).map((r) => r.ms)
    parts.push(`${kind} max ${Math.max(...ms)} ms (p50 ${percentile(ms, 50)})`)
    assert.ok(
      Math.max(...ms) <= TIMEOUT_MS + SLACK_MS,
      `${label}: ${kind} sockets stayed open ${Math.max(...ms)} ms (timeout ${TIMEOUT_MS} ms)`,
    )
  }
  figure(
    `check 10 (${label}): ${results.length}/${results.length} sockets closed by the server within ${TIMEOUT_MS} ms + ${SLACK_MS} ms slack; ${parts.join('; ')}; normal clients ${normalOk}/${normalOk + normalFailed} ok`,
  )
  assert.equal(normalFailed, 0, 'normal clients failed while the idle sockets were open')
}

test('check 10: 500 silent/half-open sockets without a pending challenge are closed in time; clients served', async () => {
  await phase('no challenge pending')
})

test('check 10: 500 silent/half-open sockets while a challenge is pending (peek on) are closed in time', async () => {
  resolver.setChallenge(PENDING, await challengeCertificate(PENDING))
  try {
    await phase('challenge pending')
  } finally {
    resolver.deleteChallenge(PENDING)
  }
})
