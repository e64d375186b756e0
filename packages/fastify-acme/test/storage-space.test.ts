// Regressions from the reliability suite (check 5): with a cache that has some room but not enough for a certificate,
// an order used to be sent, issued, and then lost because it could not be stored (and ordered again at the next
// start); an account could be registered and not stored. A storage with a byte quota stands in for a full disk.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { countOrders, startPebble } from '@autotls/pebble-harness'
import { ERR_STORAGE, type Lease, type LockOptions, MemoryStorage, type Storage } from '../src/index.js'
import { pebbleAcme, startApp } from './helpers.js'

/** MemoryStorage that refuses a write which would take the total size of the stored values over `quota` bytes. */
class QuotaStorage implements Storage {
  readonly inner = new MemoryStorage()
  readonly sizes = new Map<string, number>()
  constructor(readonly quota: number) {}
  used(): number {
    return [...this.sizes.values()].reduce((a, b) => a + b, 0)
  }
  get(key: string) {
    return this.inner.get(key)
  }
  async put(key: string, value: string | Uint8Array): Promise<void> {
    const size = Buffer.byteLength(value)
    if (this.used() - (this.sizes.get(key) ?? 0) + size > this.quota) {
      throw new ERR_STORAGE(`write of ${key}`, 'ENOSPC: no space left on device')
    }
    await this.inner.put(key, value)
    this.sizes.set(key, size)
  }
  async delete(key: string): Promise<void> {
    await this.inner.delete(key)
    this.sizes.delete(key)
  }
  list(prefix: string) {
    return this.inner.list(prefix)
  }
  lock(key: string, options?: LockOptions): Promise<Lease> {
    return this.inner.lock(key, options)
  }
}

test('a storage without room for the certificate never gets an order sent, nor an account registered', async (t) => {
  const pebble = await startPebble()
  t.after(() => pebble.stop())
  const name = 'space.acme.test'
  const rows: string[] = []
  for (const quota of [1_000, 3_000, 6_000, 9_000, 64_000]) {
    const storage = new QuotaStorage(quota)
    const before = countOrders(pebble)
    const accountsBefore = (pebble.logs().match(/There are now \d+ accounts/g) ?? []).length
    const app = await startApp({
      port: pebble.tlsPort,
      acme: {
        ...pebbleAcme(pebble, [name]),
        storage,
      },
    })
    try {
      await Promise.race([
        app.acme.waitForCertificate(name),
        new Promise((resolve) => app.acme.once('order-failed', resolve)),
      ])
      const orders = countOrders(pebble) - before
      const accounts = (pebble.logs().match(/There are now \d+ accounts/g) ?? []).length - accountsBefore
      const keys = await storage.list('')
      const storedCert = keys.some((k) => k.includes('/certificates/'))
      const storedAccount = keys.some((k) => k.endsWith('/account.json'))
      rows.push(`${quota} B: ${orders} orders, certificate stored ${storedCert}`)
      assert.equal(orders > 0, storedCert, `quota ${quota}: ${orders} orders, certificate stored: ${storedCert}`)
      assert.ok(accounts === 0 || storedAccount, `quota ${quota}: an account was registered and not stored`)
      if (!storedCert) assert.equal(app.acme.status(name)?.lastError?.code, 'FACME_STORAGE')
      assert.ok(!keys.some((k) => k.includes('/reserved/')), 'no reservation left behind')
    } finally {
      await app.close()
    }
  }
  assert.match(rows.at(-1)!, /1 orders, certificate stored true/)
})
