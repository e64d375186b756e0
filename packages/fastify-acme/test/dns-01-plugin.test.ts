// DNS-01 through the plugin against a real BIND (RFC 2136 + TSIG) with Pebble validating through it: one
// certificate for an apex and its wildcard, a CNAME-delegated name, records gone afterwards, renewal under client
// load, and the coded failures (wrong TSIG key, propagation timeout) with the order's authorizations given up.
import assert from 'node:assert/strict'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import {
  type Bind,
  type ChallTestSrv,
  freePort,
  type Pebble,
  startBind,
  startChallTestSrv,
  startPebble,
} from '@autotls/pebble-harness'
import { Rfc2136Provider } from '../src/challenges/dns-01/index.js'
import { MemoryStorage } from '../src/index.js'
import { httpsGet, startApp, startLoad } from './helpers.js'

describe('DNS-01 through the plugin', () => {
  let dns: ChallTestSrv
  let bind: Bind
  let pebble: Pebble
  before(async () => {
    dns = await startChallTestSrv()
    bind = await startBind({
      zones: [
        { name: 'acme.test', records: ['_acme-challenge.www CNAME www.acme.test.validation.test.'] },
        { name: 'validation.test' },
      ],
      forwarders: [`127.0.0.1:${dns.dnsPort}`],
    })
    pebble = await startPebble({ dns, dnsServer: bind.address, certificateValidityPeriod: 20 })
  })
  after(async () => {
    await pebble?.stop()
    await bind?.stop()
    await dns?.stop()
  })

  const dnsOptions = (provider: Rfc2136Provider, extra: Record<string, unknown> = {}) => ({
    provider,
    resolvers: [bind.address],
    nameserverPort: bind.port,
    propagationIntervalMs: 100,
    ...extra,
  })

  test('apex + wildcard in one certificate and a CNAME-delegated name; records gone; renewal under load', async (t) => {
    const logLines: string[] = []
    const started = performance.now()
    const app = await startApp({
      port: pebble.tlsPort,
      logLines,
      acme: {
        names: [['acme.test', '*.acme.test'], 'www.acme.test'],
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: pebble.caBundle,
        cacheDir: await mkdtemp(join(tmpdir(), 'facme-dns01-')),
        dns01: dnsOptions(new Rfc2136Provider({ server: bind.address, key: bind.key })),
      },
    })
    t.after(() => app.close())
    await Promise.all(['acme.test', 'www.acme.test'].map((n) => app.acme.waitForCertificate(n)))
    const ms = performance.now() - started
    const root = await pebble.issuingRoot()
    const apex = await httpsGet(pebble.tlsPort, 'acme.test', root)
    const sub = await httpsGet(pebble.tlsPort, 'anything.acme.test', root)
    const delegated = await httpsGet(pebble.tlsPort, 'www.acme.test', root)
    assert.equal(apex.cert.serialNumber, sub.cert.serialNumber, 'one certificate for the apex and the wildcard')
    assert.deepEqual(apex.cert.subjectaltname?.split(', ').sort(), ['DNS:*.acme.test', 'DNS:acme.test'])
    assert.equal(delegated.cert.subjectaltname, 'DNS:www.acme.test')
    // The TXT records are gone, at the zone and at the CNAME's target.
    assert.deepEqual(await bind.txt('_acme-challenge.acme.test'), [])
    assert.deepEqual(await bind.txt('www.acme.test.validation.test'), [])
    console.log(
      `# DNS-01: apex + wildcard certificate and a CNAME-delegated name issued through RFC 2136 in ${ms.toFixed(0)} ms; chains verify, SANs match, 0 TXT records left`,
    )
    // Renewal of the wildcard certificate (20 s lifetime: renewed at about 10 s) under client load.
    const load = startLoad(pebble.tlsPort, 'load.acme.test', () => [root], 10)
    await new Promise<void>((resolve) => {
      const off = app.acme.on('certificate-issued', (e) => {
        if (e.name === 'acme.test' && e.renewal) {
          off()
          resolve()
        }
      })
    })
    // A few more requests on the new certificate.
    await new Promise((r) => setTimeout(r, 300))
    const result = await load.stop()
    console.log(
      `# DNS-01: wildcard certificate renewed under load: ${result.ok} requests ok, ${result.failed} failed, ${result.serials.length} certificates seen`,
    )
    assert.equal(result.failed, 0, result.errors.join('; '))
    assert.ok(result.serials.length >= 2)
    assert.deepEqual(await bind.txt('_acme-challenge.acme.test'), [])
  })

  test('a wrong TSIG key: FACME_DNS_TSIG, the authorizations given up, no order left pending', async (t) => {
    const logLines: string[] = []
    const name = 'tsig.acme.test'
    const app = await startApp({
      port: await freePort(),
      logLines,
      acme: {
        names: [name],
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: pebble.caBundle,
        storage: new MemoryStorage(),
        issueOnStart: false,
        dns01: dnsOptions(
          new Rfc2136Provider({
            server: bind.address,
            key: { ...bind.key, secret: Buffer.alloc(32, 7).toString('base64') },
          }),
        ),
      },
    })
    t.after(() => app.close())
    await assert.rejects(app.acme.issue(name), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'FACME_DNS_TSIG', err.message)
      assert.doesNotMatch(err.message, new RegExp(Buffer.alloc(32, 7).toString('base64').slice(0, 12)))
      return true
    })
    assert.ok(
      logLines.some((l) => l.includes('authorization deactivated')),
      'the pending authorization was given up',
    )
    assert.deepEqual(await bind.txt(`_acme-challenge.${name}`), [])
  })

  test('propagation that never completes: FACME_DNS_PROPAGATION_TIMEOUT, record removed, authorization given up', async (t) => {
    const logLines: string[] = []
    const name = 'slow.acme.test'
    const app = await startApp({
      port: await freePort(),
      logLines,
      acme: {
        names: [name],
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: pebble.caBundle,
        storage: new MemoryStorage(),
        issueOnStart: false,
        // The authoritative servers are asked on a port where nothing answers.
        dns01: dnsOptions(new Rfc2136Provider({ server: bind.address, key: bind.key }), {
          nameserverPort: await freePort(),
          propagationTimeoutMs: 1500,
        }),
      },
    })
    t.after(() => app.close())
    await assert.rejects(app.acme.issue(name), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'FACME_DNS_PROPAGATION_TIMEOUT', err.message)
      return true
    })
    assert.ok(logLines.some((l) => l.includes('authorization deactivated')))
    assert.deepEqual(await bind.txt(`_acme-challenge.${name}`), [], 'the record was cleaned up')
  })
})
