// The preset's ACME features that change at runtime, against Pebble: a '*' route for customer domains with
// certificates on demand, a wildcard route with its certificate over DNS-01 (RFC 2136 to a real named), and a
// reload that adds and removes ACME hosts.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { MemoryStorage, Rfc2136Provider } from '@autotls/fastify-acme'
import {
  type Bind,
  type ChallTestSrv,
  type Pebble,
  startBind,
  startChallTestSrv,
  startPebble,
} from '@autotls/pebble-harness'
import { createProxy, type ProxyOptions } from '../src/index.js'
import { h1, json, startUpstream, type Upstream } from './helpers.js'

describe('runtime ACME names in the preset', () => {
  let pebble: Pebble
  let root: string
  let web: Upstream
  let customers: Upstream
  before(async () => {
    pebble = await startPebble()
    root = await pebble.issuingRoot()
    web = await startUpstream('web')
    customers = await startUpstream('customers')
  })
  after(async () => {
    await Promise.all([web?.close(), customers?.close()])
    await pebble?.stop()
  })

  const base = (): ProxyOptions => ({
    logger: false,
    https: { host: '127.0.0.1', port: pebble.tlsPort },
    http: false,
    acme: {
      directory: pebble.directoryUrl,
      termsOfServiceAgreed: true,
      caRoots: pebble.caBundle,
      storage: new MemoryStorage(),
    },
    routes: [{ host: 'www.runtime.test', upstream: web.url }],
  })

  test("a '*' route serves customer domains with certificates on demand; other names fail", async (t) => {
    const options = base()
    options.acme = { ...options.acme!, onDemand: { allowSuffixes: ['*.customers.test'] } }
    options.routes = [...options.routes, { host: '*', upstream: customers.url }]
    const proxy = await createProxy(options)
    t.after(() => proxy.close())
    await proxy.listen()
    const res = await h1({ port: pebble.tlsPort, host: 'shop.customers.test', path: '/cart', ca: root })
    assert.equal(res.status, 200, res.body)
    assert.equal(json(res)['upstream'], 'customers')
    assert.equal(res.cert?.subjectaltname, 'DNS:shop.customers.test')
    // The configured host keeps its own route.
    await proxy.acme!.waitForCertificate('www.runtime.test')
    assert.equal(json(await h1({ port: pebble.tlsPort, host: 'www.runtime.test', ca: root }))['upstream'], 'web')
    // A name the policy does not allow gets no certificate: the handshake fails.
    await assert.rejects(h1({ port: pebble.tlsPort, host: 'intruder.other.test', ca: root }))
    // A certificate for an allowed name does not open the '*' route to other Host headers.
    const mismatch = await h1({
      port: pebble.tlsPort,
      host: 'intruder.other.test',
      servername: 'shop.customers.test',
      ca: root,
    })
    assert.equal(mismatch.status, 421)
    assert.equal(customers.seen.filter((r) => r.headers.host === 'intruder.other.test').length, 0)
  })

  test('a reload adds an ACME host (ordered and served) and removes one (no longer served)', async (t) => {
    const proxy = await createProxy(base())
    t.after(() => proxy.close())
    await proxy.listen()
    await proxy.acme!.waitForCertificate('www.runtime.test')
    const added = await proxy.reload({
      ...base(),
      routes: [
        { host: 'www.runtime.test', upstream: web.url },
        { host: 'new.runtime.test', upstream: customers.url },
      ],
    })
    assert.equal(added.applied, true, JSON.stringify(added.errors))
    await proxy.acme!.waitForCertificate('new.runtime.test')
    const res = await h1({ port: pebble.tlsPort, host: 'new.runtime.test', ca: root })
    assert.equal(json(res)['upstream'], 'customers')
    const removed = await proxy.reload({ ...base(), routes: [{ host: 'new.runtime.test', upstream: customers.url }] })
    assert.equal(removed.applied, true, JSON.stringify(removed.errors))
    assert.deepEqual([...proxy.acme!.names], ['new.runtime.test'])
    await assert.rejects(h1({ port: pebble.tlsPort, host: 'www.runtime.test', ca: root }))
  })
})

describe('wildcard route over DNS-01', () => {
  let dns: ChallTestSrv
  let bind: Bind
  let pebble: Pebble
  let web: Upstream
  before(async () => {
    dns = await startChallTestSrv()
    bind = await startBind({ zones: [{ name: 'acme.test' }], forwarders: [`127.0.0.1:${dns.dnsPort}`] })
    pebble = await startPebble({ dns, dnsServer: bind.address })
    web = await startUpstream('web')
  })
  after(async () => {
    await web?.close()
    await pebble?.stop()
    await bind?.stop()
    await dns?.stop()
  })

  test('*.acme.test gets an ACME certificate over DNS-01 when a provider is configured', async (t) => {
    const proxy = await createProxy({
      logger: false,
      https: { host: '127.0.0.1', port: pebble.tlsPort },
      http: false,
      acme: {
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: pebble.caBundle,
        storage: new MemoryStorage(),
        dns01: {
          provider: new Rfc2136Provider({ server: bind.address, key: bind.key }),
          resolvers: [bind.address],
          nameserverPort: bind.port,
          propagationIntervalMs: 100,
        },
      },
      routes: [{ host: '*.acme.test', upstream: web.url }],
    })
    t.after(() => proxy.close())
    assert.deepEqual(proxy.plan.acmeNames, ['*.acme.test'])
    await proxy.listen()
    await proxy.acme!.waitForCertificate('*.acme.test')
    const res = await h1({ port: pebble.tlsPort, host: 'shop.acme.test', ca: await pebble.issuingRoot() })
    assert.equal(res.status, 200)
    assert.equal(res.cert?.subjectaltname, 'DNS:*.acme.test')
  })
})
