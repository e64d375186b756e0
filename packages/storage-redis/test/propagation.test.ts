// Instances sharing one Redis, in one process (real Pebble, real Redis, real TLS): a certificate one instance
// obtains is served by the other within a second (pub/sub), and a challenge one instance presents is answered by the
// other when the CA's validator reaches it (TLS-ALPN-01 and HTTP-01).
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { connect } from 'node:tls'
import { acmeHttp01, acmeServerFactory, fastifyAcme } from '@autotls/fastify-acme'
import { countOrders, type Pebble, type RedisServer, startPebble, startRedis } from '@autotls/pebble-harness'
import { createClient } from '@redis/client'
import Fastify, { type FastifyInstance } from 'fastify'
import { RedisStorage } from '../src/index.js'

let redis: RedisServer
let pebble: Pebble
before(async () => {
  ;[redis, pebble] = await Promise.all([startRedis(), startPebble()])
})
after(() => Promise.all([redis?.stop(), pebble?.stop()]))

function servedSerial(port: number, name: string, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername: name, ca, ALPNProtocols: ['http/1.1'] }, () => {
      const serial = socket.getPeerCertificate().serialNumber
      socket.end()
      resolve(serial.toUpperCase())
    })
    socket.on('error', reject)
  })
}

interface Instance {
  app: FastifyInstance
  storage: RedisStorage
  events: Array<{ event: string; name: string; at: number }>
  http?: FastifyInstance
}

async function instance(
  t: { after: (fn: () => Promise<void>) => void },
  prefix: string,
  names: string[],
  extra: Record<string, unknown> = {},
  httpPort?: number,
): Promise<Instance> {
  const storage = new RedisStorage({ url: redis.url, prefix })
  const app = Fastify({ serverFactory: acmeServerFactory() }) as unknown as FastifyInstance
  const events: Instance['events'] = []
  let http: FastifyInstance | undefined
  t.after(async () => {
    await http?.close()
    await app.close()
    await storage.close()
  })
  await app.register(fastifyAcme, {
    names,
    directory: pebble.directoryUrl,
    termsOfServiceAgreed: true,
    caRoots: pebble.caBundle,
    storage,
    issueOnStart: false,
    ...extra,
  })
  for (const event of ['order-started', 'certificate-issued', 'certificate-adopted'] as const)
    app.acme.on(event, (e: { name: string }) => events.push({ event, name: e.name, at: performance.now() }))
  await app.ready()
  if (httpPort !== undefined) {
    http = Fastify()
    await http.register(acmeHttp01, { acme: app.acme })
    await http.listen({ port: httpPort, host: '127.0.0.1' })
  }
  await storage.watching()
  return { app, storage, events, ...(http ? { http } : {}) }
}

function adoptedBy(target: Instance, name: string, ms = 5_000): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} not adopted within ${ms} ms`)), ms)
    target.app.acme.on('certificate-adopted', (e: { name: string }) => {
      if (e.name !== name) return
      clearTimeout(timer)
      resolve(performance.now())
    })
  })
}

test("a certificate issued by one instance is served by the other within 1 s; the other's validator answer is shared (TLS-ALPN-01)", async (t) => {
  const prefix = `p${randomBytes(3).toString('hex')}:`
  const name = 'prop.cluster.test'
  // B listens where Pebble validates TLS-ALPN-01; A orders, and listens elsewhere: every validation of A's order
  // reaches B, which answers with the challenge A stored.
  const a = await instance(t, prefix, [name], { challenges: ['tls-alpn-01'] })
  const b = await instance(t, prefix, [name], { challenges: ['tls-alpn-01'] })
  await a.app.listen({ port: 0, host: '127.0.0.1' })
  await b.app.listen({ port: pebble.tlsPort, host: '127.0.0.1' })
  const ordersBefore = countOrders(pebble)
  const adopted = adoptedBy(b, name)
  await a.app.acme.issue(name)
  const issuedAt = a.events.find((e) => e.event === 'certificate-issued')!.at
  const lag = (await adopted) - issuedAt
  assert.equal(countOrders(pebble) - ordersBefore, 1)
  assert.equal(b.app.acme.ordersSent, 0)
  assert.ok(lag < 1_000, `adopted ${lag} ms after issuance`)
  const root = await pebble.issuingRoot()
  const portA = (a.app.server.address() as { port: number }).port
  const serial = await servedSerial(portA, name, root)
  assert.equal(await servedSerial(pebble.tlsPort, name, root), serial)
  t.diagnostic(`TLS-ALPN-01 answered by the other instance; adopted ${lag.toFixed(1)} ms after issuance`)

  // A renewal by B this time (ordered by hand): A serves it within a second, with no order of its own.
  const again = adoptedBy(a, name)
  await b.app.acme.issue(name)
  const renewedAt = b.events.find((e) => e.event === 'certificate-issued')!.at
  const lag2 = (await again) - renewedAt
  assert.ok(lag2 < 1_000, `adopted ${lag2} ms after issuance`)
  const renewed = await servedSerial(portA, name, root)
  assert.notEqual(renewed, serial)
  assert.equal(await servedSerial(pebble.tlsPort, name, root), renewed)
  assert.equal(countOrders(pebble) - ordersBefore, 2)
  t.diagnostic(`renewal by the other instance adopted ${lag2.toFixed(1)} ms after issuance`)
})

test('HTTP-01: the instance the validator reaches answers the token another instance presented', async (t) => {
  const prefix = `h${randomBytes(3).toString('hex')}:`
  const name = 'http.cluster.test'
  const a = await instance(t, prefix, [name], { challenges: ['http-01'] }, 0)
  const b = await instance(t, prefix, [name], { challenges: ['http-01'] }, pebble.httpPort)
  await a.app.listen({ port: 0, host: '127.0.0.1' })
  await b.app.listen({ port: 0, host: '127.0.0.1' })
  const adopted = adoptedBy(b, name)
  await a.app.acme.issue(name)
  await adopted
  assert.equal(b.app.acme.ordersSent, 0)
  assert.equal(a.app.acme.status(name)?.state, 'valid')
})

test('Redis down at start: the local copy serves what exists, orders pause; Redis back empty: re-seeded', async (t) => {
  const own = await startRedis()
  t.after(() => own.stop())
  const folder = await mkdtemp(join(tmpdir(), 'redis-copy-'))
  t.after(() => rm(folder, { recursive: true, force: true }))
  const name = 'outage.cluster.test'
  const storageOptions = { url: own.url, prefix: 'o:', lockTtlMs: 900, commandTimeoutMs: 300, localCopy: folder }
  const start = async (port: number) => {
    const storage = new RedisStorage(storageOptions)
    const app = Fastify({ serverFactory: acmeServerFactory() }) as unknown as FastifyInstance
    await app.register(fastifyAcme, {
      names: [name],
      directory: pebble.directoryUrl,
      termsOfServiceAgreed: true,
      caRoots: pebble.caBundle,
      storage,
      issueOnStart: false,
    })
    await app.listen({ port, host: '127.0.0.1' })
    return { app, storage }
  }
  const first = await start(pebble.tlsPort)
  await first.app.acme.issue(name)
  const root = await pebble.issuingRoot()
  const serial = await servedSerial(pebble.tlsPort, name, root)
  await first.app.close()
  await first.storage.close()

  await own.kill()
  // A new instance starts during the outage: load() reads the copy; the certificate is served.
  const second = await start(pebble.tlsPort)
  t.after(async () => {
    await second.app.close()
    await second.storage.close()
  })
  assert.equal(await servedSerial(pebble.tlsPort, name, root), serial)
  assert.equal(second.app.acme.status(name)?.state, 'valid')
  // An order now would need the lock: it pauses, nothing is asked of the CA, no failure is counted.
  const orders = countOrders(pebble)
  await assert.rejects(second.app.acme.issue(name), { code: 'FACME_STORAGE' })
  assert.equal(countOrders(pebble), orders)
  assert.equal(second.app.acme.status(name)?.failures ?? 0, 0)

  // Back, empty: the instance puts the certificate it serves (and its account) back.
  const reseeded = new Promise<void>((resolve) => {
    const timer = setInterval(async () => {
      const raw = createClient({ url: own.url })
      try {
        await raw.connect()
        const found = await raw.keys('o:*/certificates/*')
        if (found.length > 0 && (await raw.keys('o:*/account.json')).length > 0) {
          clearInterval(timer)
          resolve()
        }
      } catch {
      } finally {
        if (raw.isOpen) await raw.close().catch(() => {})
      }
    }, 100)
  })
  const restarted = performance.now()
  await own.restart()
  await reseeded
  t.diagnostic(`re-seeded ${(performance.now() - restarted).toFixed(0)} ms after Redis restarted empty`)
  // Orders work again: a new certificate, stored in Redis.
  await second.app.acme.issue(name)
  assert.notEqual(await servedSerial(pebble.tlsPort, name, root), serial)
})

test('session tickets shared through Redis: a session from one instance resumes on the other', async (t) => {
  const prefix = `s${randomBytes(3).toString('hex')}:`
  const name = 'tickets.cluster.test'
  const a = await instance(t, prefix, [name], { sessionTickets: { shared: true } })
  const b = await instance(t, prefix, [name], { sessionTickets: { shared: true } })
  await a.app.listen({ port: pebble.tlsPort, host: '127.0.0.1' })
  await b.app.listen({ port: 0, host: '127.0.0.1' })
  const adopted = adoptedBy(b, name)
  await a.app.acme.issue(name)
  await adopted
  const ca = await pebble.issuingRoot()
  const portB = (b.app.server.address() as { port: number }).port
  const handshake = (port: number, session?: Buffer) =>
    new Promise<{ reused: boolean; session: Buffer | undefined }>((resolve, reject) => {
      let ticket: Buffer | undefined
      let reused = false
      const socket = connect({ host: '127.0.0.1', port, servername: name, ca, ...(session ? { session } : {}) })
      socket.on('session', (s: Buffer) => {
        ticket = s
        socket.end()
      })
      socket.on('secureConnect', () => {
        reused = socket.isSessionReused()
        if (reused) socket.end()
      })
      socket.on('error', reject)
      socket.on('close', () => resolve({ reused, session: ticket }))
    })
  const first = await handshake(pebble.tlsPort)
  assert.equal(first.reused, false)
  assert.ok(first.session, 'a ticket from the first instance')
  assert.equal((await handshake(portB, first.session)).reused, true, 'resumed on the other instance')
})
