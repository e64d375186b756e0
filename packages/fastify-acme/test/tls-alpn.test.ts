// The TLS-ALPN-01 responder: its diversion decision (isChallengeHello) on its own, then against real TLS clients: who
// gets the challenge certificate (the ALPN x SNI x TLS version matrix), and that hostile or slow input at the TLS port
// never hurts the process or other clients.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { type Server as NetServer, connect as netConnect, createServer as netCreateServer, type Socket } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { connect as tlsConnect } from 'node:tls'
import { makeTestCertificates } from '@autotls/pebble-harness'
import Fastify, { type FastifyInstance } from 'fastify'
import { generateChallengeKey, tlsAlpnCertificate } from '../src/acme.js'
import { isChallengeHello } from '../src/challenge-tls-alpn.js'
import { acmeServerFactory, CertResolver } from '../src/index.js'
import { handshake, httpsGet, isChallengeCertificate } from './helpers.js'

const PENDING = 'pending.acme.test'
const SERVED = 'served.acme.test'

describe('isChallengeHello: the one decision that diverts a connection to the challenge certificate', () => {
  const resolver = new CertResolver()
  before(async () => {
    const certs = await makeTestCertificates({ names: [SERVED] })
    resolver.set(SERVED, { key: certs.key, cert: certs.cert })
    resolver.setChallenge(PENDING, await tlsAlpnCertificate(PENDING, 'token.thumbprint', await generateChallengeKey()))
  })

  // [label, ALPN offered, SNI, diverted?]
  const cases: Array<[string, string[] | undefined, string | undefined, boolean]> = [
    ['exactly acme-tls/1 for the pending name', ['acme-tls/1'], PENDING, true],
    ['the pending name in upper case', ['acme-tls/1'], PENDING.toUpperCase(), true],
    ['no ALPN extension', undefined, PENDING, false],
    ['an empty ALPN list', [], PENDING, false],
    ['acme-tls/1 first among others', ['acme-tls/1', 'http/1.1'], PENDING, false],
    ['acme-tls/1 last among others', ['h2', 'acme-tls/1'], PENDING, false],
    ['acme-tls/1 listed twice', ['acme-tls/1', 'acme-tls/1'], PENDING, false],
    ['ACME-TLS/1 (protocol ids are case-sensitive)', ['ACME-TLS/1'], PENDING, false],
    ['no SNI', ['acme-tls/1'], undefined, false],
    ['an empty SNI', ['acme-tls/1'], '', false],
    ['a name with a certificate but no pending challenge', ['acme-tls/1'], SERVED, false],
    ['an unknown name', ['acme-tls/1'], 'unknown.acme.test', false],
  ]
  for (const [label, alpn, serverName, diverted] of cases) {
    test(`${label}: ${diverted ? 'diverted' : 'not diverted'}`, () => {
      assert.equal(isChallengeHello(alpn, serverName, resolver), diverted)
    })
  }

  test('a challenge no longer pending: not diverted', async () => {
    const gone = new CertResolver()
    gone.setChallenge(PENDING, await tlsAlpnCertificate(PENDING, 'token.thumbprint', await generateChallengeKey()))
    assert.equal(isChallengeHello(['acme-tls/1'], PENDING, gone), true)
    gone.deleteChallenge(PENDING)
    assert.equal(isChallengeHello(['acme-tls/1'], PENDING, gone), false)
  })
})

describe('TLS-ALPN-01 responder', () => {
  let app: FastifyInstance
  let port: number
  let resolver: CertResolver
  let ca: string

  before(async () => {
    resolver = new CertResolver()
    app = Fastify({
      serverFactory: acmeServerFactory({ resolver, peekTimeoutMs: 400 }),
    } as never) as unknown as FastifyInstance
    app.get('/', async () => 'normal')
    await app.listen({ port: 0, host: '127.0.0.1' })
    port = (app.server.address() as { port: number }).port
    // The pending name also has an ordinary certificate, as during a renewal: normal clients must get that one.
    const certs = await makeTestCertificates({ names: [PENDING, SERVED] })
    ca = certs.caCert
    resolver.set(PENDING, { key: certs.key, cert: certs.cert })
    resolver.set(SERVED, { key: certs.key, cert: certs.cert })
    const challenge = await tlsAlpnCertificate(PENDING, 'token.thumbprint', await generateChallengeKey())
    resolver.setChallenge(PENDING, challenge)
  })
  after(async () => {
    await app.close()
  })

  for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
    test(`${version}: exactly ["acme-tls/1"] for a pending name gets the challenge certificate and no data`, async () => {
      // Resolved once the server has ended the connection, so `gotData` covers all it ever sent on it.
      const res = await handshake({ port, servername: PENDING, alpn: ['acme-tls/1'], version, untilServerEnds: true })
      assert.ok(res.ok, `handshake failed or the server did not end the connection: ${!res.ok && res.error}`)
      assert.equal(res.alpn, 'acme-tls/1')
      assert.ok(isChallengeCertificate(res.cert), 'critical acmeIdentifier extension present')
      assert.equal(res.cert.subjectaltname, `DNS:${PENDING}`)
      assert.equal(res.gotData, false, 'no application data on a challenge connection')
    })

    // [label, client, must the handshake succeed with the ordinary certificate?]
    const never: Array<[string, { servername?: string; alpn?: string[] }, boolean]> = [
      ['acme-tls/1 among others', { servername: PENDING, alpn: ['acme-tls/1', 'http/1.1'] }, true],
      ['acme-tls/1 listed twice', { servername: PENDING, alpn: ['acme-tls/1', 'acme-tls/1'] }, false],
      ['acme-tls/1 for a name with no pending challenge', { servername: SERVED, alpn: ['acme-tls/1'] }, false],
      ['acme-tls/1 for an unknown name', { servername: 'unknown.acme.test', alpn: ['acme-tls/1'] }, false],
      ['acme-tls/1 without SNI', { alpn: ['acme-tls/1'] }, false],
      ['a normal client (h2, http/1.1) for the pending name', { servername: PENDING, alpn: ['h2', 'http/1.1'] }, true],
      ['a normal client without ALPN for the pending name', { servername: PENDING }, true],
      ['the pending name in upper case with http/1.1', { servername: PENDING.toUpperCase(), alpn: ['http/1.1'] }, true],
    ]
    for (const [label, opts, served] of never) {
      test(`${version}: ${label} never gets the challenge certificate`, async () => {
        const res = await handshake({ port, version, ...opts })
        // A normal client must be served (a peek that broke every connection would otherwise pass).
        if (served) assert.ok(res.ok, `a normal client is served: ${!res.ok && res.error}`)
        if (res.ok) {
          assert.equal(isChallengeCertificate(res.cert), false)
          assert.notEqual(res.alpn, 'acme-tls/1')
        }
      })
    }
  }

  test('a normal HTTPS client for the pending name gets the ordinary certificate and the app', async () => {
    const res = await httpsGet(port, PENDING, ca)
    assert.equal(res.status, 200)
    assert.equal(res.body, 'normal')
    assert.equal(isChallengeCertificate(res.cert), false)
  })

  test('the pending name in upper case still matches for the validator', async () => {
    const res = await handshake({
      port,
      servername: PENDING.toUpperCase(),
      alpn: ['acme-tls/1'],
      version: 'TLSv1.3',
    })
    assert.ok(res.ok)
    assert.ok(isChallengeCertificate(res.cert))
  })

  describe('hostile and slow input', () => {
    let relay: NetServer
    let relayPort: number
    before(async () => {
      // A TCP relay that forwards client bytes to the app 3 bytes at a time, to trickle the ClientHello.
      relay = netCreateServer((client) => {
        const upstream = netConnect(port, '127.0.0.1')
        const queue: Buffer[] = []
        let pumping = false
        const pump = async () => {
          if (pumping) return
          pumping = true
          while (queue.length > 0) {
            const chunk = queue.shift()!
            for (let i = 0; i < chunk.length; i += 3) {
              if (upstream.destroyed) return
              upstream.write(chunk.subarray(i, i + 3))
              await sleep(1)
            }
          }
          pumping = false
        }
        client.on('data', (d: Buffer) => {
          queue.push(d)
          void pump()
        })
        upstream.pipe(client)
        client.on('error', () => upstream.destroy())
        upstream.on('error', () => client.destroy())
        client.on('close', () => upstream.destroy())
      })
      await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve))
      relayPort = (relay.address() as { port: number }).port
    })
    after(async () => {
      await new Promise((resolve) => relay.close(resolve))
    })

    test('a ClientHello trickled 3 bytes at a time: normal client served, validator diverted', async () => {
      const normal = await httpsGet(relayPort, SERVED, ca)
      assert.equal(normal.status, 200)
      const validator = await handshake({
        port: relayPort,
        servername: PENDING,
        alpn: ['acme-tls/1'],
        version: 'TLSv1.2',
      })
      assert.ok(validator.ok && isChallengeCertificate(validator.cert))
    })

    test('garbage bytes, truncated hellos and silent clients: closed, process alive, others served', async () => {
      const sockets: Socket[] = []
      const closed: Promise<void>[] = []
      const open = (payload?: Buffer) => {
        const s = netConnect(port, '127.0.0.1')
        s.on('error', () => {})
        closed.push(new Promise((resolve) => s.on('close', () => resolve())))
        if (payload) s.write(payload)
        sockets.push(s)
      }
      for (let i = 0; i < 20; i++) open(randomBytes(1 + ((i * 37) % 600)))
      open(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'))
      open(Buffer.from([0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0xff, 0xff, 0xff])) // declares a huge hello, then stops
      open(Buffer.from([0x16, 0x03, 0x01, 0x00])) // truncated record header
      for (let i = 0; i < 5; i++) open() // silent
      // While they hang, a normal client is served.
      const res = await httpsGet(port, SERVED, ca)
      assert.equal(res.status, 200)
      // Everything hostile is closed by the server (the peek timeout is 400 ms here); nothing kills the process.
      await Promise.all(closed)
      assert.ok(
        (app.server as unknown as { listening: boolean }).listening,
        'server still listening after hostile input',
      )
      const again = await httpsGet(port, SERVED, ca)
      assert.equal(again.status, 200)
      for (const s of sockets) s.destroy()
    })

    test('a client that opens TLS and never finishes the handshake does not block a validator', async () => {
      const stalled = tlsConnect({ host: '127.0.0.1', port, servername: SERVED, rejectUnauthorized: false })
      stalled.on('error', () => {})
      const validator = await handshake({ port, servername: PENDING, alpn: ['acme-tls/1'], version: 'TLSv1.3' })
      assert.ok(validator.ok && isChallengeCertificate(validator.cert))
      stalled.destroy()
    })
  })
})
