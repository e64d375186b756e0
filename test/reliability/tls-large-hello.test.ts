// Check 9: a large (post-quantum-sized, ~1.7 KB) ClientHello sent 1 byte per TCP segment, and a ClientHello split
// across two TLS records, with a TLS-ALPN-01 challenge pending (so the plugin's peek reads them) and without.
// A real client completes its handshake and request through a relay that re-sends its bytes that way; a validator's
// hello padded to 1.7 KB gets the challenge certificate.
import assert from 'node:assert/strict'
import { connect as netConnect, createServer as netCreateServer, type Server, type Socket } from 'node:net'
import { after, before, test } from 'node:test'
import { connect as tlsConnect } from 'node:tls'
import { acmeServerFactory, CertResolver } from '@autotls/fastify-acme'
import { wiringOf } from '@autotls/fastify-acme/internal'
import { makeTestCertificates } from '@autotls/pebble-harness'
import Fastify, { type FastifyInstance } from 'fastify'
import { captureHello, padHello, reframe } from './fuzz-corpus.js'
import { challengeCertificate, figure, isChallengeCertificate, sleep } from './helpers.js'

const NAME = 'large.reliability.test'
const PENDING = 'pending-large.reliability.test'
const LARGE = 1700

let app: FastifyInstance
let port: number
let resolver: CertResolver
let ca: string
let challengeDer: Buffer
const derOf = (pem: string) => Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64')
const relays: Server[] = []

before(async () => {
  resolver = new CertResolver()
  app = Fastify({ serverFactory: acmeServerFactory({ resolver }) } as never) as unknown as FastifyInstance
  app.get('/', async () => 'ok')
  await app.listen({ port: 0, host: '127.0.0.1' })
  port = (app.server.address() as { port: number }).port
  const certs = await makeTestCertificates({ names: [NAME, PENDING] })
  ca = certs.caCert
  resolver.set(NAME, { key: certs.key, cert: certs.cert })
  resolver.set(PENDING, { key: certs.key, cert: certs.cert })
})
after(async () => {
  for (const relay of relays) relay.close()
  await app?.close()
})

type Mode = 'one byte per segment' | 'two records'

/** A relay to the app that re-sends the client's first record either 1 byte per write (Nagle off) or as 2 records. */
async function relay(mode: Mode): Promise<{ port: number; writes: number[] }> {
  const writes: number[] = []
  const server = netCreateServer((client) => {
    const upstream = netConnect(port, '127.0.0.1')
    upstream.setNoDelay(true)
    client.on('error', () => upstream.destroy())
    upstream.on('error', () => client.destroy())
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
    upstream.pipe(client)
    let pending = Buffer.alloc(0)
    let first = true
    let sending = Promise.resolve()
    client.on('data', (chunk: Buffer) => {
      if (!first) {
        sending = sending.then(() => {
          upstream.write(chunk)
        })
        return
      }
      pending = Buffer.concat([pending, chunk])
      if (pending.length < 5 || pending.length < 5 + pending.readUInt16BE(3)) return
      first = false
      const record = pending.subarray(0, 5 + pending.readUInt16BE(3))
      const rest = pending.subarray(record.length)
      sending = (async () => {
        if (mode === 'two records') {
          upstream.write(reframe(record, [Math.floor((record.length - 5) / 2)]))
          writes.push(1)
        } else {
          for (let i = 0; i < record.length; i++) {
            upstream.write(record.subarray(i, i + 1))
            await new Promise((resolve) => setImmediate(resolve))
          }
          writes.push(record.length)
        }
        if (rest.length > 0) upstream.write(rest)
      })()
    })
  })
  relays.push(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { port: (server.address() as { port: number }).port, writes }
}

/** A real HTTPS/1.1 request through the relay with a ClientHello padded to ~1.7 KB by a long ALPN list. */
function largeHelloRequest(relayPort: number, version: 'TLSv1.2' | 'TLSv1.3'): Promise<{ status: string }> {
  return new Promise((resolve, reject) => {
    const filler = Array.from({ length: 74 }, (_, i) => `x-padding-proto-${String(i).padStart(2, '0')}`)
    const socket = tlsConnect({
      host: '127.0.0.1',
      port: relayPort,
      servername: NAME,
      ca,
      minVersion: version,
      maxVersion: version,
      ALPNProtocols: [...filler, 'http/1.1'],
    })
    let data = ''
    socket.setTimeout(20_000, () => socket.destroy(new Error('timeout')))
    socket.on('secureConnect', () => socket.write(`GET / HTTP/1.1\r\nHost: ${NAME}\r\nConnection: close\r\n\r\n`))
    socket.on('data', (d: Buffer) => {
      data += d.toString('latin1')
    })
    socket.on('error', reject)
    socket.on('close', () => resolve({ status: data.split('\r\n')[0] ?? '' }))
  })
}

/** A validator's real handshake through the relay: exactly ["acme-tls/1"] for the pending name. */
function validatorThrough(relayPort: number, version: 'TLSv1.2' | 'TLSv1.3'): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port: relayPort,
      servername: PENDING,
      rejectUnauthorized: false,
      minVersion: version,
      maxVersion: version,
      ALPNProtocols: ['acme-tls/1'],
    })
    socket.setTimeout(20_000, () => socket.destroy(new Error('timeout')))
    socket.on('secureConnect', () => {
      const ok = socket.alpnProtocol === 'acme-tls/1' && isChallengeCertificate(socket.getPeerCertificate(true))
      socket.destroy()
      resolve(ok)
    })
    socket.on('error', reject)
  })
}

/** Sends a validator hello padded to LARGE bytes 1 byte per segment; resolves with what the server answered. */
function paddedValidatorHello(hello: Buffer): Promise<Buffer> {
  return new Promise((resolve) => {
    const socket: Socket = netConnect(port, '127.0.0.1')
    socket.setNoDelay(true)
    const chunks: Buffer[] = []
    socket.on('data', (d: Buffer) => chunks.push(d))
    socket.on('error', () => {})
    socket.on('connect', async () => {
      for (let i = 0; i < hello.length; i++) {
        socket.write(hello.subarray(i, i + 1))
        await new Promise((r) => setImmediate(r))
      }
      // The server answers its first flight (ServerHello .. ServerHelloDone in TLS 1.2) and waits for us.
      await sleep(500)
      socket.destroy()
      resolve(Buffer.concat(chunks))
    })
  })
}

test('check 9: a ~1.7 KB hello 1 byte per segment and a hello split over two records are handled', async () => {
  const rows: string[] = []
  const stats = wiringOf(app.server)!.responder.stats
  for (const challengePending of [true, false]) {
    if (challengePending) resolver.setChallenge(PENDING, await challengeCertificate(PENDING))
    else resolver.deleteChallenge(PENDING)
    for (const mode of ['one byte per segment', 'two records'] as const) {
      const r = await relay(mode)
      for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
        const res = await largeHelloRequest(r.port, version)
        assert.match(res.status, /^HTTP\/1\.1 200/, `${mode} ${version} (challenge pending: ${challengePending})`)
        if (challengePending) {
          const diverted = stats.diverted
          assert.ok(await validatorThrough(r.port, version), `validator ${mode} ${version}`)
          assert.equal(stats.diverted, diverted + 1)
        }
      }
      rows.push(
        `${mode}${challengePending ? ', peek on' : ', peek off'}: ${r.writes.length} hellos relayed ` +
          `(${mode === 'two records' ? '2 records each' : `${Math.max(...r.writes)} 1-byte writes max`}), all handled`,
      )
    }
  }
  // The validator's own hello padded to 1.7 KB (TLS 1.2, so its Certificate message is readable), 1 byte at a time.
  const challenge = await challengeCertificate(PENDING)
  challengeDer = derOf(challenge.cert)
  resolver.setChallenge(PENDING, challenge)
  const hello = padHello(await captureHello({ servername: PENDING, alpn: ['acme-tls/1'], version: 'TLSv1.2' }), LARGE)
  const answer = await paddedValidatorHello(hello)
  assert.equal(answer[0], 0x16, 'the server answered with a handshake record, not an alert')
  assert.ok(answer.includes(challengeDer), 'the padded validator hello got the challenge certificate')
  rows.push(`validator hello padded to ${hello.length} bytes, 1 byte per segment: challenge certificate served`)
  const tls13 = padHello(await captureHello({ servername: NAME, alpn: ['http/1.1'], version: 'TLSv1.3' }), LARGE)
  const answer13 = await paddedValidatorHello(tls13)
  assert.equal(answer13[0], 0x16, 'TLS 1.3 padded hello: ServerHello expected')
  rows.push(`normal TLS 1.3 hello padded to ${tls13.length} bytes, 1 byte per segment: ServerHello`)
  figure(`check 9: ${rows.join('; ')}`)
})
