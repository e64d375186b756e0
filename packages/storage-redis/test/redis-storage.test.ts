// RedisStorage against the shared Storage contract (@autotls/fastify-acme/testing), then what is Redis's own: a lease
// that stops being extended is lost, an outage rejects with FACME_STORAGE within a bound and the store recovers
// after a restart, keys stay under the prefix.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import type { StorageChange } from '@autotls/fastify-acme'
import { storageContract } from '@autotls/fastify-acme/testing'
import { freePort, type RedisServer, startRedis } from '@autotls/pebble-harness'
import { createClient } from '@redis/client'
import { RedisStorage } from '../src/index.js'

let redis: RedisServer
before(async () => {
  redis = await startRedis()
})
after(() => redis?.stop())

storageContract('RedisStorage', () => {
  // A fresh prefix per case: an empty store on the shared server. Two stores (two clients) stand for two processes.
  const prefix = `t${randomBytes(4).toString('hex')}:`
  const storage = new RedisStorage({ url: redis.url, prefix })
  const peer = new RedisStorage({ url: redis.url, prefix })
  return { storage, peer, close: async () => void (await Promise.all([storage.close(), peer.close()])) }
})

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Resolves with the time `signal` took to abort, or rejects after `ms`. */
function abortedWithin(signal: AbortSignal, ms: number): Promise<number> {
  const started = Date.now()
  return new Promise((resolve, reject) => {
    if (signal.aborted) return resolve(0)
    const timer = setTimeout(() => reject(new Error(`not aborted after ${ms} ms`)), ms)
    signal.addEventListener('abort', () => {
      clearTimeout(timer)
      resolve(Date.now() - started)
    })
  })
}

describe('RedisStorage on Redis', () => {
  const fresh = (options: { lockTtlMs?: number; commandTimeoutMs?: number } = {}) => {
    const prefix = `r${randomBytes(4).toString('hex')}:`
    return { prefix, storage: new RedisStorage({ url: redis.url, prefix, ...options }) }
  }

  test('records and locks live under the prefix; list() leaves out locks and keys that are no records', async (t) => {
    const { prefix, storage } = fresh()
    const raw = createClient({ url: redis.url })
    await raw.connect()
    t.after(async () => {
      await storage.close()
      await raw.close()
    })
    await storage.put('dir/certificates/a.example.json', 'x')
    const lease = await storage.lock('dir/locks/a.example')
    await raw.set(`${prefix}foreign:thing`, '1')
    await raw.set(`${prefix}dir/odd key`, '1')
    await raw.set('elsewhere/dir/x.json', '1')
    assert.deepEqual((await raw.keys(`${prefix}*`)).sort(), [
      `${prefix}dir/certificates/a.example.json`,
      `${prefix}dir/odd key`,
      `${prefix}foreign:thing`,
      `${prefix}lock:dir/locks/a.example`,
    ])
    const ttl = await raw.pTTL(`${prefix}lock:dir/locks/a.example`)
    assert.ok(ttl > 0 && ttl <= storage.options.lockTtlMs, `the lock has a TTL (${ttl} ms)`)
    assert.deepEqual(await storage.list(''), ['dir/certificates/a.example.json'])
    await lease.release()
    assert.equal(await raw.exists(`${prefix}lock:dir/locks/a.example`), 0, 'release deletes the lock key')
    await raw.del(['elsewhere/dir/x.json'])
  })

  test('a held lease is extended past its TTL; one that can no longer be extended is lost', async (t) => {
    const { prefix, storage } = fresh({ lockTtlMs: 300, commandTimeoutMs: 100 })
    const { storage: peer } = { storage: new RedisStorage({ url: redis.url, prefix, lockTtlMs: 300 }) }
    const raw = createClient({ url: redis.url })
    await raw.connect()
    t.after(async () => {
      await Promise.all([storage.close(), peer.close()])
      await raw.close()
    })
    const lease = await storage.lock('d/locks/n')
    await sleep(1_000)
    assert.equal(lease.lost.aborted, false, 'extended every ttl/3 for more than three TTLs')
    await assert.rejects(peer.lock('d/locks/n', { timeoutMs: 200 }), { code: 'FACME_LOCK_TIMEOUT' })

    // Another holder takes the key (as after a pause longer than the TTL): the next extension is refused.
    await raw.set(`${prefix}lock:d/locks/n`, 'someone-else', { expiration: { type: 'PX', value: 5_000 } })
    const lostAfter = await abortedWithin(lease.lost, 1_000)
    assert.equal((lease.lost.reason as { code?: string }).code, 'FACME_STORAGE')
    assert.match(String(lease.lost.reason.message), /taken by another holder|expired/)
    await lease.release()
    assert.equal(await raw.get(`${prefix}lock:d/locks/n`), 'someone-else', "a lost lease never releases another's lock")

    // The key simply expires (deleted here): also lost.
    await raw.del(`${prefix}lock:d/locks/n`)
    const second = await storage.lock('d/locks/n', { timeoutMs: 1_000 })
    await raw.del(`${prefix}lock:d/locks/n`)
    await abortedWithin(second.lost, 1_000)
    await second.release()
    console.log(`# a taken-over lease (ttl 300 ms) was reported lost after ${lostAfter} ms`)
  })

  test('lock take + release latency', async (t) => {
    const { storage } = fresh()
    t.after(() => storage.close())
    const times: number[] = []
    for (let i = 0; i < 200; i++) {
      const started = performance.now()
      const lease = await storage.lock('d/locks/fast')
      await lease.release()
      times.push(performance.now() - started)
    }
    times.sort((a, b) => a - b)
    const at = (q: number) => times[Math.floor(q * (times.length - 1))]!.toFixed(2)
    console.log(`# lock+release round trip over loopback: median ${at(0.5)} ms, p95 ${at(0.95)} ms, max ${at(1)} ms`)
    assert.ok(Number(at(0.5)) < 20)
  })

  test('a client passed in is connected when needed and left open on close() unless closeClient', async () => {
    const client = createClient({ url: redis.url })
    client.on('error', () => {})
    const storage = new RedisStorage({ client, prefix: `c${randomBytes(4).toString('hex')}:` })
    await storage.put('a/b.json', 'one')
    assert.equal(client.isReady, true)
    await storage.close()
    assert.equal(client.isOpen, true, 'not the store to close')
    const owning = new RedisStorage({ client, closeClient: true })
    await owning.close()
    assert.equal(client.isOpen, false)
  })

  test('bad options are FACME_INVALID_OPTIONS', () => {
    const client = createClient({ url: redis.url })
    for (const options of [
      {},
      { client, url: redis.url },
      { url: 'http://127.0.0.1:6379' },
      { url: redis.url, lockTtlMs: 50 },
      { url: redis.url, lockTtlMs: 1_000, commandTimeoutMs: 1_000 },
      { url: redis.url, prefix: 3 },
    ]) {
      assert.throws(
        () => new RedisStorage(options as never),
        { code: 'FACME_INVALID_OPTIONS' },
        JSON.stringify(options),
      )
    }
  })
})

describe('RedisStorage through an outage', () => {
  test('a store watching a Redis that never answered closes at once (the subscription stops connecting)', {
    timeout: 20_000,
  }, async () => {
    const port = await freePort()
    const storage = new RedisStorage({ url: `redis://127.0.0.1:${port}`, commandTimeoutMs: 200 })
    const changes: StorageChange[] = []
    const watching = storage.watch('d/', (change) => changes.push(change))
    // The subscription keeps trying to connect; close() must not wait for a connection that never comes.
    await storage.close()
    watching.close()
    assert.ok(changes.every((c) => c.type === 'unreachable'))
  })

  test('Redis down: operations reject with FACME_STORAGE within a bound, a held lease is lost; all recover', async (t) => {
    const own = await startRedis()
    t.after(() => own.stop())
    const storage = new RedisStorage({ url: own.url, lockTtlMs: 600, commandTimeoutMs: 200 })
    t.after(() => storage.close())
    await storage.put('d/account.json', 'before')
    const lease = await storage.lock('d/locks/n')

    await own.kill()
    const rows: string[] = []
    for (const [what, op] of [
      ['get', () => storage.get('d/account.json')],
      ['put', () => storage.put('d/account.json', 'during')],
      ['delete', () => storage.delete('d/x.json')],
      ['list', () => storage.list('d/')],
      ['getMany', () => storage.getMany(['d/account.json'])],
      ['lock', () => storage.lock('d/locks/other', { timeoutMs: 5_000 })],
    ] as Array<[string, () => Promise<unknown>]>) {
      const started = Date.now()
      await assert.rejects(op(), { code: 'FACME_STORAGE' }, what)
      const took = Date.now() - started
      rows.push(`${what} ${took} ms`)
      assert.ok(took < 1_500, `${what} rejected after ${took} ms`)
    }
    const lostAfter = await abortedWithin(lease.lost, 2_000)
    assert.equal((lease.lost.reason as { code?: string }).code, 'FACME_STORAGE')
    await lease.release()

    // Back, empty (no persistence), as after a crash: the same store works again without being recreated.
    await own.restart()
    const started = Date.now()
    for (;;) {
      try {
        await storage.put('d/account.json', 'after')
        break
      } catch (err) {
        if (Date.now() - started > 5_000) throw err
        await sleep(50)
      }
    }
    const recovered = Date.now() - started
    assert.equal((await storage.get('d/account.json'))?.toString(), 'after')
    const again = await storage.lock('d/locks/n', { timeoutMs: 1_000 })
    assert.equal(again.lost.aborted, false)
    await again.release()
    console.log(
      `# outage: ${rows.join(', ')}; lease lost after ${lostAfter} ms; recovered ${recovered} ms after restart`,
    )
  })
})

/** The next change a watch() listener hears that `accept` takes, or a rejection after `ms`. */
function nextChange(
  changes: StorageChange[],
  waiters: Array<() => void>,
  accept: (change: StorageChange) => boolean,
  ms = 5_000,
): Promise<StorageChange> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no matching change within ${ms} ms`)), ms)
    const look = () => {
      const found = changes.find(accept)
      if (!found) return false
      changes.splice(changes.indexOf(found), 1)
      clearTimeout(timer)
      resolve(found)
      return true
    }
    if (look()) return
    const waiter = () => {
      if (look()) waiters.splice(waiters.indexOf(waiter), 1)
    }
    waiters.push(waiter)
  })
}

function recorder() {
  const changes: StorageChange[] = []
  const waiters: Array<() => void> = []
  const listener = (change: StorageChange) => {
    changes.push(change)
    for (const w of [...waiters]) w()
  }
  return { changes, listener, next: (accept: (c: StorageChange) => boolean) => nextChange(changes, waiters, accept) }
}

describe('RedisStorage.watch', () => {
  test("another store's puts and deletes under the prefix reach the listener; other prefixes do not", async (t) => {
    const prefix = `w${randomBytes(4).toString('hex')}:`
    const a = new RedisStorage({ url: redis.url, prefix })
    const b = new RedisStorage({ url: redis.url, prefix })
    const other = new RedisStorage({ url: redis.url, prefix: `${prefix}x:` })
    t.after(() => Promise.all([a.close(), b.close(), other.close()]))
    const seen = recorder()
    const watch = a.watch('dir/certificates/', seen.listener)
    await a.watching()
    const started = performance.now()
    await b.put('dir/certificates/a.example.json', 'x')
    const put = await seen.next((c) => c.type === 'changed')
    const latency = performance.now() - started
    assert.deepEqual(put, { type: 'changed', key: 'dir/certificates/a.example.json' })
    // Outside the watched folder, and another prefix (another store on the same Redis): not heard.
    await b.put('dir/state/a.example.json', 'y')
    await other.put('dir/certificates/a.example.json', 'z')
    await b.delete('dir/certificates/a.example.json')
    assert.deepEqual(await seen.next((c) => c.type === 'changed'), {
      type: 'changed',
      key: 'dir/certificates/a.example.json',
    })
    assert.deepEqual(seen.changes, [])
    watch.close()
    await b.put('dir/certificates/b.example.json', 'x')
    // A watch that is closed hears nothing: a second listener still open proves the message went out.
    const second = recorder()
    a.watch('dir/', second.listener)
    await b.put('dir/certificates/c.example.json', 'x')
    await second.next((c) => c.type === 'changed' && c.key.endsWith('c.example.json'))
    assert.deepEqual(seen.changes, [])
    t.diagnostic(`put on one store heard by another after ${latency.toFixed(1)} ms`)
  })

  test('a Redis outage is reported as unreachable, then resync once subscribed again', async (t) => {
    const own = await startRedis()
    t.after(() => own.stop())
    const prefix = 'o:'
    const a = new RedisStorage({ url: own.url, prefix, lockTtlMs: 600, commandTimeoutMs: 200 })
    const b = new RedisStorage({ url: own.url, prefix, lockTtlMs: 600, commandTimeoutMs: 200 })
    t.after(() => Promise.all([a.close(), b.close()]))
    const seen = recorder()
    a.watch('d/', seen.listener)
    await a.watching()
    await own.kill()
    await seen.next((c) => c.type === 'unreachable')
    await own.restart()
    await seen.next((c) => c.type === 'resync')
    // Subscribed again: changes are heard as before.
    await b.put('d/k.json', '1').catch(async () => {
      await sleep(200)
      await b.put('d/k.json', '1')
    })
    assert.deepEqual(await seen.next((c) => c.type === 'changed'), { type: 'changed', key: 'd/k.json' })
  })
})

describe('RedisStorage with a local copy', () => {
  test('reads are served from the copy while Redis is down, also by a store created during the outage', async (t) => {
    const own = await startRedis()
    t.after(() => own.stop())
    const folder = await mkdtemp(join(tmpdir(), 'redis-copy-'))
    t.after(() => rm(folder, { recursive: true, force: true }))
    const options = { url: own.url, prefix: 'c:', lockTtlMs: 600, commandTimeoutMs: 200, localCopy: folder }
    const first = new RedisStorage(options)
    await first.put('d/certificates/a.example.json', 'cert-a')
    await first.put('d/certificates/b.example.json', 'cert-b')
    await first.delete('d/certificates/b.example.json')
    // Written by another instance (no copy of its own): this one copies it when it reads it.
    const peer = new RedisStorage({ url: own.url, prefix: 'c:' })
    await peer.put('d/state/a.example.json', 'state')
    await peer.close()
    assert.equal((await first.get('d/state/a.example.json'))?.toString(), 'state')
    await first.close()

    await own.kill()
    // A new process starting while Redis is down.
    const second = new RedisStorage(options)
    t.after(() => second.close())
    assert.equal((await second.get('d/certificates/a.example.json'))?.toString(), 'cert-a')
    assert.equal(await second.get('d/certificates/b.example.json'), undefined)
    assert.equal((await second.get('d/state/a.example.json'))?.toString(), 'state')
    assert.deepEqual(await second.list('d/certificates/'), ['d/certificates/a.example.json'])
    const many = await second.getMany(['d/certificates/a.example.json', 'd/certificates/b.example.json'])
    assert.deepEqual(
      many.map((v) => (v instanceof Error ? v.message : v?.toString())),
      ['cert-a', undefined],
    )
    // Writes and locks still need Redis: nothing is written to the copy alone.
    await assert.rejects(second.put('d/certificates/a.example.json', 'other'), { code: 'FACME_STORAGE' })
    await assert.rejects(second.lock('d/locks/a', { timeoutMs: 300 }), { code: 'FACME_STORAGE' })
    assert.equal((await second.get('d/certificates/a.example.json'))?.toString(), 'cert-a')
    // The copy holds private keys: files are 0600.
    const mode = (await stat(join(folder, 'd', 'certificates', 'a.example.json'))).mode & 0o777
    assert.equal(mode, 0o600)
  })
})
