// Check 1: Pebble rejecting 50% of nonces, with its default validation sleeps (0-4 s per validation): every order
// succeeds at its first attempt; the figure is the p95 time from order start to certificate served.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { FileStorage } from '@autotls/fastify-acme'
import { countOrders, startPebble } from '@autotls/pebble-harness'
import { figure, httpsGet, percentile, startAcmeApp, tempDir } from './helpers.js'

const N = 12

test(`check 1: ${N} orders against 50% nonce rejection and default VA sleeps: N of N succeed, p95 issuance time`, async (t) => {
  const pebble = await startPebble({ nonceRejectPercent: 50, vaNoSleep: false })
  t.after(() => pebble.stop())
  const cache = await tempDir('nonce')
  t.after(() => cache.remove())
  const names = Array.from({ length: N }, (_, i) => `n${i}.nonce.reliability.test`)
  const started = new Map<string, number>()
  const took: number[] = []
  let failed = 0
  const app = await startAcmeApp({
    port: pebble.tlsPort,
    acme: {
      names,
      directory: pebble.directoryUrl,
      termsOfServiceAgreed: true,
      caRoots: pebble.caBundle,
      storage: new FileStorage(cache.path),
      issueOnStart: false,
    },
  })
  t.after(() => app.close())
  app.acme.on('order-started', ({ name }) => started.set(name, Date.now()))
  app.acme.on('certificate-issued', ({ name }) => took.push(Date.now() - started.get(name)!))
  app.acme.on('order-failed', () => failed++)
  const begin = Date.now()
  const results = await Promise.allSettled(names.map((name) => app.acme.issue(name)))
  const wall = Date.now() - begin
  const ok = results.filter((r) => r.status === 'fulfilled').length
  const root = await pebble.issuingRoot()
  for (const name of names) assert.equal((await httpsGet(pebble.tlsPort, name, root)).status, 200)
  figure(
    `check 1: ${ok} of ${N} orders succeeded at the first attempt (${failed} failed attempts) with 50% of nonces rejected and ` +
      `Pebble's 0-4 s validation sleeps; issuance p50 ${(percentile(took, 50) / 1000).toFixed(1)} s, ` +
      `p95 ${(percentile(took, 95) / 1000).toFixed(1)} s, max ${(Math.max(...took) / 1000).toFixed(1)} s; all ${N} in ${(wall / 1000).toFixed(1)} s; ` +
      `Pebble orders ${countOrders(pebble)}`,
  )
  assert.equal(ok, N, results.map((r) => (r.status === 'rejected' ? String(r.reason) : '')).join(' '))
  assert.equal(failed, 0)
  assert.equal(countOrders(pebble), N)
})
