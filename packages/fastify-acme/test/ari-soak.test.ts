// 20 s certificates with a `shortlived` profile and ARI, renewed over and over while a client sends requests: not
// one request may fail. ARI_SOAK_SECONDS sets the length (45 s in the suite; the notes give a 10-minute run).
import assert from 'node:assert/strict'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { startAcmeFront, startPebble } from '@autotls/pebble-harness'
import { startApp, startLoad } from './helpers.js'

const SECONDS = Number(process.env['ARI_SOAK_SECONDS'] ?? 45)

test(`${SECONDS} s of 20 s shortlived certificates renewed under client load: 0 failed requests`, async (t) => {
  const pebble = await startPebble({ certificateValidityPeriod: 20 })
  t.after(() => pebble.stop())
  const front = await startAcmeFront({ upstreamPort: pebble.listenPort, upstreamCa: pebble.caBundle })
  t.after(() => front.stop())
  const names = ['a.soak.test', 'b.soak.test']
  const app = await startApp({
    port: pebble.tlsPort,
    acme: {
      names,
      directory: front.directoryUrl,
      termsOfServiceAgreed: true,
      caRoots: [front.caBundle],
      cacheDir: await mkdtemp(join(tmpdir(), 'facme-ari-soak-')),
      profile: 'shortlived',
      retryMinMs: 500,
      retryMaxMs: 2000,
    },
  })
  t.after(() => app.close())
  await Promise.all(names.map((n) => app.acme.waitForCertificate(n)))
  let renewals = 0
  let failedOrders = 0
  app.acme.on('certificate-issued', (e) => e.renewal && renewals++)
  app.acme.on('order-failed', () => failedOrders++)
  const root = await pebble.issuingRoot()
  const loads = names.map((n) => startLoad(pebble.tlsPort, n, () => [root], 10))
  await new Promise((r) => setTimeout(r, SECONDS * 1000))
  const results = await Promise.all(loads.map((l) => l.stop()))
  const ok = results.reduce((a, r) => a + r.ok, 0)
  const failed = results.reduce((a, r) => a + r.failed, 0)
  const serials = results.reduce((a, r) => a + r.serials.length, 0)
  const withReplaces = front.orders.filter((o) => o.replaces !== undefined && o.profile === 'shortlived').length
  console.log(
    `# ARI soak ${SECONDS} s: ${renewals} renewals (${withReplaces} orders with replaces, profile shortlived), ${failedOrders} failed orders, ${ok} requests ok, ${failed} failed, ${serials} certificates seen by clients`,
  )
  assert.equal(failed, 0, results.flatMap((r) => r.errors).join('; '))
  assert.ok(renewals >= 2 * Math.floor(SECONDS / 20) - 2, `${renewals} renewals`)
})
