// Regression: load() read every managed name's cached certificate at once; with tens of thousands of names the
// process ran out of file descriptors (EMFILE) and the failed reads were taken for missing certificates.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import Fastify from 'fastify'
import { acmeServerFactory, fastifyAcme, MemoryStorage } from '../src/index.js'
import { LOAD_CONCURRENCY } from '../src/lifecycle/load.js'

test('load() keeps a bounded number of storage reads in flight', async (t) => {
  const storage = new MemoryStorage()
  const get = storage.get.bind(storage)
  let inFlight = 0
  let most = 0
  storage.get = async (key: string) => {
    inFlight++
    most = Math.max(most, inFlight)
    try {
      await new Promise((resolve) => setImmediate(resolve))
      return await get(key)
    } finally {
      inFlight--
    }
  }
  const names = Array.from({ length: LOAD_CONCURRENCY * 3 + 7 }, (_, i) => `n${i}.load.test`)
  const app = Fastify({ serverFactory: acmeServerFactory() })
  t.after(() => app.close())
  await app.register(fastifyAcme, {
    names,
    directory: 'https://127.0.0.1:9/dir',
    termsOfServiceAgreed: true,
    storage,
    issueOnStart: false,
  })
  await app.ready()
  assert.ok(most <= LOAD_CONCURRENCY, `${most} reads in flight`)
  assert.ok(most > 1, 'names are still read concurrently')
  assert.equal(app.acme.statuses().length, names.length)
})
