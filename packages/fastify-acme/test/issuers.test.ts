// A second CA: with the first CA down, the certificate comes from the second within the configured attempts; once
// the first is back, the next renewal returns to it. Two real Pebbles validating the same app port.
import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { countOrders, type Pebble, startPebble } from '@autotls/pebble-harness'
import { httpsGet, startApp } from './helpers.js'

/** True when `chainPem`'s leaf was signed by the intermediate Pebble `pebble` issues under. */
async function issuedBy(pebble: Pebble, leafPem: string): Promise<boolean> {
  const intermediate = new X509Certificate(await pebble.issuingIntermediate())
  return new X509Certificate(leafPem).verify(intermediate.publicKey)
}

test('first CA down: the second issues within issuerAttempts; the first back: the next renewal returns to it', async (t) => {
  // CA A: started for its address and listener certificate, then stopped (down from the start).
  const firstRun = await startPebble()
  const a = {
    listenPort: firstRun.listenPort,
    directoryUrl: firstRun.directoryUrl,
    certs: firstRun.listenerCertificates,
  }
  const caA = firstRun.caBundle
  await firstRun.stop()
  const b = await startPebble({ tlsPort: firstRun.tlsPort, certificateValidityPeriod: 20 })
  t.after(() => b.stop())
  const name = 'second-ca.acme.test'
  const failures: Array<{ code: string; at: number }> = []
  const app = await startApp({
    port: firstRun.tlsPort,
    acme: {
      names: [name],
      issuers: [{ directory: a.directoryUrl }, { directory: b.directoryUrl }],
      issuerAttempts: 2,
      termsOfServiceAgreed: true,
      caRoots: [caA, b.caBundle],
      cacheDir: await mkdtemp(join(tmpdir(), 'facme-issuers-')),
      retryMinMs: 200,
      retryMaxMs: 1000,
    },
  })
  t.after(() => app.close())
  app.acme.on('order-failed', (e) => failures.push({ code: e.error.code, at: Date.now() }))
  const issued = await new Promise<{ serial: string }>((resolve) => app.acme.once('certificate-issued', resolve))
  const first = await httpsGet(firstRun.tlsPort, name, await b.issuingRoot())
  assert.equal(first.cert.serialNumber.toLowerCase(), issued.serial.toLowerCase())
  console.log(
    `# first CA down: ${failures.length} failed attempts (${failures.map((f) => f.code).join(', ')}), then issued by the second CA (${countOrders(b)} order)`,
  )
  assert.deepEqual(
    failures.map((f) => f.code),
    ['FACME_CA_UNREACHABLE', 'FACME_CA_UNREACHABLE'],
    'issuerAttempts failures at the first CA, then the second',
  )
  assert.equal(countOrders(b), 1)

  // CA A is back, on the same URL with the same listener certificate (a new issuing root: Pebble's is per start).
  const aBack = await startPebble({
    listenPort: a.listenPort,
    listenerCertificates: a.certs,
    tlsPort: firstRun.tlsPort,
    certificateValidityPeriod: 20,
  })
  t.after(() => aBack.stop())
  const renewed = await new Promise<{ serial: string; renewal: boolean }>((resolve) =>
    app.acme.once('certificate-issued', resolve),
  )
  assert.equal(renewed.renewal, true)
  const served = await httpsGet(firstRun.tlsPort, name, await aBack.issuingRoot())
  assert.equal(served.cert.serialNumber.toLowerCase(), renewed.serial.toLowerCase())
  assert.ok(
    await issuedBy(
      aBack,
      `-----BEGIN CERTIFICATE-----\n${served.cert.raw.toString('base64')}\n-----END CERTIFICATE-----`,
    ),
  )
  console.log(
    `# the first CA back: the renewal came from it (${countOrders(aBack)} order there, ${countOrders(b)} at the second)`,
  )
  assert.equal(countOrders(aBack), 1)
  assert.equal(countOrders(b), 1)
})
