// Issuance against a real ACME server (Pebble) over TLS-ALPN-01 and HTTP-01, verified by real TLS clients.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { countOrders, type Pebble, startPebble } from '@autotls/pebble-harness'
import Fastify from 'fastify'
import { acmeHttp01, acmeServerFactory, FileStorage, fastifyAcme, MemoryStorage } from '../src/index.js'
import { h2Get, httpsGet, pebbleAcme, startApp } from './helpers.js'

describe('TLS-ALPN-01 issuance', () => {
  let pebble: Pebble
  let root: string
  let cacheDir: string
  before(async () => {
    pebble = await startPebble()
    root = await pebble.issuingRoot()
    cacheDir = await mkdtemp(join(tmpdir(), 'facme-cache-'))
  })
  after(async () => {
    await pebble?.stop()
    await rm(cacheDir, { recursive: true, force: true })
  })

  const names = ['alpha.acme.test', 'beta.acme.test', 'gamma.acme.test']

  test('three names on one listener: each chain verifies against the CA root and its SAN matches', async () => {
    const app = await startApp({
      port: pebble.tlsPort,
      acme: {
        names,
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        contact: ['mailto:ops@acme.test'],
        caRoots: pebble.caBundle,
        cacheDir,
      },
    })
    try {
      const started = Date.now()
      await Promise.all(names.map((n) => app.acme.waitForCertificate(n)))
      const elapsed = Date.now() - started
      for (const name of names) {
        const res = await httpsGet(pebble.tlsPort, name, root)
        assert.equal(res.status, 200)
        assert.equal(JSON.parse(res.body).host, name)
        assert.match(res.cert.subjectaltname ?? '', new RegExp(`DNS:${name.replace(/\./g, '\\.')}`))
        assert.equal(res.cert.subjectaltname, `DNS:${name}`)
        const status = app.acme.status(name)
        assert.equal(status?.state, 'valid')
        assert.equal(status?.serial?.toUpperCase(), res.cert.serialNumber.toUpperCase())
        assert.ok(status?.nextAction?.kind === 'renew')
      }
      assert.equal(app.acme.ordersSent, 3, 'one order per name')
      assert.ok(app.acme.tlsAlpnStats.diverted >= 3, 'the validator connections were diverted to the challenge server')
      console.log(`# three names issued over TLS-ALPN-01 in ${elapsed} ms`)
    } finally {
      await app.close()
    }
  })

  test('restart with the cache: no new order, and serving works with the CA stopped', async () => {
    const ordersBefore = countOrders(pebble)
    await pebble.stop()
    const app = Fastify({ serverFactory: acmeServerFactory() })
    await app.register(fastifyAcme, {
      names,
      directory: pebble.directoryUrl,
      termsOfServiceAgreed: true,
      caRoots: pebble.caBundle,
      cacheDir,
    })
    app.get('/', async (request) => ({ hello: 'world', host: request.hostname }))
    // Subscribed after register, as a user would: the loaded events come when the server listens.
    const loaded: string[] = []
    app.acme.on('certificate-loaded', (e) => loaded.push(e.name))
    await app.listen({ port: pebble.tlsPort, host: '127.0.0.1' })
    try {
      assert.deepEqual(loaded.sort(), [...names].sort())
      for (const name of names) {
        const res = await httpsGet(pebble.tlsPort, name, root)
        assert.equal(res.status, 200)
        assert.equal(app.acme.status(name)?.state, 'valid')
      }
      assert.equal(app.acme.ordersSent, 0)
      assert.equal(countOrders(pebble), ordersBefore)
    } finally {
      await app.close()
    }
  })
})

describe('HTTP/2 and HTTP-01', () => {
  let pebble: Pebble
  let root: string
  before(async () => {
    pebble = await startPebble()
    root = await pebble.issuingRoot()
  })
  after(async () => {
    await pebble?.stop()
  })

  test('HTTP/2 with HTTP/1.1 fallback on the same port', async () => {
    const name = 'h2.acme.test'
    const app = await startApp({
      http2: true,
      port: pebble.tlsPort,
      acme: {
        ...pebbleAcme(pebble, [name]),
        storage: new MemoryStorage(),
      },
    })
    try {
      await app.acme.waitForCertificate(name)
      const h2 = await h2Get(pebble.tlsPort, name, root)
      assert.equal(h2.status, 200)
      assert.equal(h2.alpn, 'h2')
      assert.equal(JSON.parse(h2.body).http, '2.0')
      const h1 = await httpsGet(pebble.tlsPort, name, root)
      assert.equal(h1.status, 200)
      assert.equal(h1.alpn, 'http/1.1')
    } finally {
      await app.close()
    }
  })

  test('HTTP-01 through a plain-HTTP listener', async () => {
    const name = 'http01.acme.test'
    const app = await startApp({
      port: pebble.tlsPort,
      acme: {
        ...pebbleAcme(pebble, [name]),
        challenges: ['http-01'],
        storage: new FileStorage(await mkdtemp(join(tmpdir(), 'facme-h01-'))),
        issueOnStart: false,
      },
    })
    const plain = Fastify()
    await plain.register(acmeHttp01, { acme: app.acme })
    await plain.listen({ port: pebble.httpPort, host: '127.0.0.1' })
    try {
      const status = await app.acme.issue(name)
      assert.equal(status.state, 'valid')
      const res = await httpsGet(pebble.tlsPort, name, root)
      assert.equal(res.status, 200)
      assert.equal(app.acme.tlsAlpnStats.diverted, 0, 'no TLS-ALPN-01 validation happened')
      const miss = await plain.inject({ url: '/.well-known/acme-challenge/nope' })
      assert.equal(miss.statusCode, 404)
    } finally {
      await app.close()
      await plain.close()
    }
  })
})

describe('hostile CA conditions', () => {
  test('50% of nonces rejected: issuance still succeeds', async () => {
    const pebble = await startPebble({ nonceRejectPercent: 50 })
    const names = ['nonce1.acme.test', 'nonce2.acme.test']
    const app = await startApp({
      port: pebble.tlsPort,
      acme: {
        names,
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: pebble.caBundle,
        storage: new MemoryStorage(),
      },
    })
    try {
      await Promise.all(names.map((n) => app.acme.waitForCertificate(n)))
      const root = await pebble.issuingRoot()
      for (const n of names) assert.equal((await httpsGet(pebble.tlsPort, n, root)).status, 200)
    } finally {
      await app.close()
      await pebble.stop()
    }
  })

  test('reused authorizations: a second order needs no challenge', async () => {
    const pebble = await startPebble({ authzReusePercent: 100 })
    const name = 'reuse.acme.test'
    const app = await startApp({
      port: pebble.tlsPort,
      acme: {
        ...pebbleAcme(pebble, [name]),
        storage: new MemoryStorage(),
      },
    })
    try {
      const first = await app.acme.waitForCertificate(name)
      const divertedAfterFirst = app.acme.tlsAlpnStats.diverted
      const second = await app.acme.issue(name)
      assert.notEqual(second.serial, first.serial)
      assert.equal(
        app.acme.tlsAlpnStats.diverted,
        divertedAfterFirst,
        'no validation connection for the reused authorization',
      )
    } finally {
      await app.close()
      await pebble.stop()
    }
  })
})

describe('external account binding and log hygiene', () => {
  test('EAB account, issuance, and trace-level logs without keys or the HMAC secret', async () => {
    const { randomBytes } = await import('node:crypto')
    const eab = { kid: 'kid-autotls', hmacKey: randomBytes(32).toString('base64url') }
    const pebble = await startPebble({ eab: [eab] })
    const lines: string[] = []
    const name = 'eab.acme.test'
    const app = Fastify({
      serverFactory: (await import('../src/index.js')).acmeServerFactory(),
      logger: { level: 'trace', stream: { write: (l: string) => lines.push(l) } },
    } as never) as unknown as import('fastify').FastifyInstance
    const { fastifyAcme } = await import('../src/index.js')
    const storage = new MemoryStorage()
    await app.register(fastifyAcme, {
      ...pebbleAcme(pebble, [name]),
      eab,
      storage,
    })
    app.get('/', async () => 'ok')
    await app.listen({ port: pebble.tlsPort, host: '127.0.0.1' })
    try {
      await app.acme.waitForCertificate(name)
      const res = await httpsGet(pebble.tlsPort, name, await pebble.issuingRoot())
      assert.equal(res.status, 200)
      const all = lines.join('\n')
      assert.ok(lines.length > 5, 'the issuance was logged')
      assert.ok(!all.includes('PRIVATE KEY'), 'no PEM private key in logs')
      assert.ok(!all.includes(eab.hmacKey), 'no EAB HMAC key in logs')
      assert.ok(!/"d"\s*:\s*"/.test(all), 'no JWK private part in logs')
      const stored = JSON.parse((await storage.get((await storage.list(''))[0]!))!.toString())
      assert.ok(stored, 'something was stored')
    } finally {
      await app.close()
      await pebble.stop()
    }
  })

  test('without EAB, a CA that requires it refuses the account and the error is reported per name', async () => {
    const { randomBytes } = await import('node:crypto')
    const pebble = await startPebble({ eab: [{ kid: 'k', hmacKey: randomBytes(32).toString('base64url') }] })
    const name = 'noeab.acme.test'
    const app = await startApp({
      port: pebble.tlsPort,
      acme: {
        ...pebbleAcme(pebble, [name]),
        storage: new MemoryStorage(),
        issueOnStart: false,
      },
    })
    try {
      await assert.rejects(app.acme.issue(name))
      const status = app.acme.status(name)
      assert.equal(status?.state, 'error')
      assert.equal(status?.failures, 1)
      assert.match(status?.lastError?.message ?? '', /account|external/i)
      assert.equal(status?.nextAction?.kind, 'retry')
    } finally {
      await app.close()
      await pebble.stop()
    }
  })
})

describe('challenge fallback', () => {
  test('when TLS-ALPN-01 validation fails and HTTP-01 is configured, the next attempt uses HTTP-01', async () => {
    const pebble = await startPebble()
    const { freePort } = await import('@autotls/pebble-harness')
    const name = 'fallback.acme.test'
    // The TLS listener is not where the CA dials, so TLS-ALPN-01 fails; port 80 (pebble.httpPort) works.
    const app = await startApp({
      port: await freePort(),
      acme: {
        ...pebbleAcme(pebble, [name]),
        challenges: ['tls-alpn-01', 'http-01'],
        storage: new MemoryStorage(),
        issueOnStart: false,
      },
    })
    const plain = Fastify()
    await plain.register(acmeHttp01, { acme: app.acme })
    await plain.listen({ port: pebble.httpPort, host: '127.0.0.1' })
    const presented: string[] = []
    app.acme.on('challenge-presented', (e) => presented.push(e.type))
    try {
      await assert.rejects(app.acme.issue(name), /tls-alpn-01|connect/i)
      const status = await app.acme.issue(name)
      assert.equal(status.state, 'valid')
      assert.deepEqual(presented, ['tls-alpn-01', 'http-01'])
    } finally {
      await app.close()
      await plain.close()
      await pebble.stop()
    }
  })
})
