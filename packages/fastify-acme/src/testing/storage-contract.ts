// `@autotls/fastify-acme/testing`: the Storage contract as a test suite (node:test + node:assert), one set of cases
// that FileStorage, MemoryStorage, @autotls/storage-redis and anyone writing their own storage run against their
// implementation. What the plugin relies on, and nothing about how a store keeps it.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, test } from 'node:test'
import type { Storage, StorageChange } from '../storage/index.js'

/** What a storage under test needs, made fresh for each case. */
export interface StorageFixture {
  /** An empty store (or one that looks empty: e.g. under a fresh key prefix). */
  storage: Storage
  /**
   * A second store on the same backend, as another process sharing it would have: the lock must exclude it.
   * Default: `storage` itself (right for an in-memory store, whose lock is per instance).
   */
  peer?: Storage
  /** Called after the case, pass or fail: close clients, remove temp folders. */
  close?(): Promise<void>
}

export interface StorageContractOptions {
  /** How long a lock that cannot be had is waited for before FACME_LOCK_TIMEOUT is expected. Default 300 ms. */
  lockTimeoutMs?: number
  /** Extra time allowed beyond `lockTimeoutMs` (a store that polls may overshoot by one poll). Default 1500 ms. */
  slackMs?: number
  /** How long a change may take to reach a watch() listener (only for stores with watch()). Default 5 s. */
  watchMs?: number
}

/** Keys that could escape a store or do not name one record: every method must refuse them (FACME_STORAGE_KEY). */
export const BAD_KEYS: readonly string[] = [
  '',
  '../x',
  '/abs',
  'a/../b',
  'a//b',
  'a/./b',
  'a/',
  '.hidden',
  'a\\b',
  'a/b\0',
  'a b',
  'a:b',
  'a*',
  'x'.repeat(513),
]

async function rejectsWithin(promise: Promise<unknown>, ms: number): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<'late'>((resolve) => {
    timer = setTimeout(() => resolve('late'), ms)
  })
  try {
    const outcome = await Promise.race([
      promise.then(
        () => ({ resolved: true as const }),
        (error: unknown) => ({ error }),
      ),
      late,
    ])
    assert.notEqual(outcome, 'late', `still pending after ${ms} ms`)
    assert.ok(typeof outcome === 'object' && 'error' in outcome, 'expected a rejection')
    return outcome.error
  } finally {
    clearTimeout(timer)
  }
}

/**
 * Registers one `describe(name)` block with the contract's cases, each against a fresh fixture from `make()`.
 *
 * ```ts
 * import { storageContract } from '@autotls/fastify-acme/testing'
 * storageContract('MyStorage', async () => ({ storage: new MyStorage(url), peer: new MyStorage(url) }))
 * ```
 */
export function storageContract(
  name: string,
  make: () => StorageFixture | Promise<StorageFixture>,
  options: StorageContractOptions = {},
): void {
  const lockTimeoutMs = options.lockTimeoutMs ?? 300
  const slackMs = options.slackMs ?? 1_500
  const watchMs = options.watchMs ?? 5_000

  /** One case with its own fixture, closed whatever happens. */
  const cases = (title: string, body: (s: Storage, peer: Storage) => Promise<void>) =>
    test(title, async (t) => {
      const fixture = await make()
      t.after(() => fixture.close?.())
      await body(fixture.storage, fixture.peer ?? fixture.storage)
    })

  describe(`${name}: the Storage contract`, () => {
    cases('get of a missing key is undefined', async (s) => {
      assert.equal(await s.get('d/certificates/missing.example.json'), undefined)
    })

    cases('put/get round-trips bytes: binary, empty, 100 KiB, UTF-8 text', async (s) => {
      const every = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
      const large = randomBytes(100 * 1024)
      await s.put('d/binary.bin', every)
      await s.put('d/empty.bin', Buffer.alloc(0))
      await s.put('d/large.bin', large)
      await s.put('d/text.json', '{"name":"été.example","emoji":"🔒"}')
      const got = await s.get('d/binary.bin')
      assert.ok(Buffer.isBuffer(got), 'get() returns a Buffer')
      assert.deepEqual(got, every)
      const empty = await s.get('d/empty.bin')
      assert.ok(Buffer.isBuffer(empty), 'an empty value is stored, not missing')
      assert.equal(empty.length, 0)
      assert.ok(large.equals((await s.get('d/large.bin'))!), '100 KiB of random bytes')
      assert.equal((await s.get('d/text.json'))!.toString('utf8'), '{"name":"été.example","emoji":"🔒"}')
      // A Uint8Array that is a view into a larger buffer: only the view is stored.
      const backing = Buffer.from('xxhelloxx')
      await s.put('d/view.bin', new Uint8Array(backing.buffer, backing.byteOffset + 2, 5))
      assert.equal((await s.get('d/view.bin'))!.toString(), 'hello')
    })

    cases('put replaces the whole value (a shorter value leaves nothing of the longer one)', async (s) => {
      await s.put('d/state/a.example.json', 'a much longer first value')
      await s.put('d/state/a.example.json', 'short')
      assert.equal((await s.get('d/state/a.example.json'))!.toString(), 'short')
    })

    cases('a returned Buffer is a copy: changing it does not change the store', async (s) => {
      await s.put('d/k.json', 'abc')
      const first = (await s.get('d/k.json'))!
      first.fill(0x7a)
      assert.equal((await s.get('d/k.json'))!.toString(), 'abc')
    })

    cases('concurrent puts of one key: the result is one whole value, never a mix', async (s) => {
      const values = Array.from({ length: 8 }, (_, i) => Buffer.alloc(64 * 1024, 0x41 + i))
      await Promise.all(values.map((v) => s.put('d/race.json', v)))
      const final = (await s.get('d/race.json'))!
      assert.ok(
        values.some((v) => v.equals(final)),
        'one of the written values',
      )
    })

    cases('delete removes the key; deleting a missing key is not an error', async (s) => {
      await s.delete('d/never-written.json')
      await s.put('d/k.json', '1')
      await s.delete('d/k.json')
      await s.delete('d/k.json')
      assert.equal(await s.get('d/k.json'), undefined)
      assert.deepEqual(await s.list('d/'), [])
    })

    cases('list(prefix): only that prefix, nested keys, sorted, no lock or temp keys', async (s) => {
      const inside = [
        'd/certificates/b.example.json',
        'd/certificates/a.example.json',
        'd/certificates/sub/c.example.json',
      ]
      const outside = ['d/certificatesX.json', 'd/state/a.example.json', 'd/account.json', 'e/certificates/a.json']
      for (const key of [...inside, ...outside]) await s.put(key, key)
      // A held lock (and its key in the backend, if any) must not show up as a record.
      const lease = await s.lock('d/certificates/locked.example')
      const lease2 = await s.lock('d/locks/a.example')
      try {
        assert.deepEqual(await s.list('d/certificates/'), [...inside].sort())
        assert.deepEqual(await s.list('d/'), [...inside, ...outside.filter((k) => k.startsWith('d/'))].sort())
        assert.deepEqual(await s.list(''), [...inside, ...outside].sort())
        assert.deepEqual(await s.list('nothing/'), [])
        // Writes running while a listing runs never show up as half-written or temporary names.
        const writes = Array.from({ length: 10 }, (_, i) => s.put('d/certificates/busy.json', Buffer.alloc(8192, i)))
        const during = await s.list('d/certificates/')
        await Promise.all(writes)
        for (const key of during) assert.ok([...inside, 'd/certificates/busy.json'].includes(key), key)
      } finally {
        await lease.release()
        await lease2.release()
      }
    })

    cases('getMany (when implemented): bytes and undefined, in the order asked', async (s) => {
      if (!s.getMany) return
      await s.put('d/certificates/a.json', 'one')
      await s.put('d/certificates/c.json', Buffer.from([0, 255]))
      const got = await s.getMany(['d/certificates/a.json', 'd/certificates/b.json', 'd/certificates/c.json'])
      assert.equal(got.length, 3)
      assert.equal((got[0] as Buffer).toString(), 'one')
      assert.equal(got[1], undefined)
      assert.deepEqual(got[2], Buffer.from([0, 255]))
      assert.deepEqual(await s.getMany([]), [])
      const many = Array.from({ length: 300 }, (_, i) => `d/many/n${i}.json`)
      for (const key of many.slice(0, 150)) await s.put(key, key)
      const all = await s.getMany(many)
      assert.equal(all.filter((v) => Buffer.isBuffer(v)).length, 150)
      assert.equal((all[149] as Buffer).toString(), many[149])
      assert.equal(all[150], undefined)
    })

    cases('keys that could escape the store are refused with FACME_STORAGE_KEY', async (s) => {
      for (const bad of BAD_KEYS) {
        const label = JSON.stringify(bad.slice(0, 20))
        await assert.rejects(s.put(bad, 'x'), { code: 'FACME_STORAGE_KEY' }, `put ${label}`)
        await assert.rejects(s.get(bad), { code: 'FACME_STORAGE_KEY' }, `get ${label}`)
        await assert.rejects(s.delete(bad), { code: 'FACME_STORAGE_KEY' }, `delete ${label}`)
        await assert.rejects(s.lock(bad, { timeoutMs: 50 }), { code: 'FACME_STORAGE_KEY' }, `lock ${label}`)
      }
      assert.deepEqual(await s.list(''), [], 'nothing was written')
    })

    cases('the lock is exclusive across instances, and times out with FACME_LOCK_TIMEOUT', async (s, peer) => {
      const lease = await s.lock('d/locks/n.example')
      try {
        assert.equal(lease.lost.aborted, false)
        const started = Date.now()
        await assert.rejects(peer.lock('d/locks/n.example', { timeoutMs: lockTimeoutMs }), {
          code: 'FACME_LOCK_TIMEOUT',
        })
        const waited = Date.now() - started
        assert.ok(waited >= lockTimeoutMs - 20, `gave up after ${waited} ms, before timeoutMs`)
        assert.ok(waited < lockTimeoutMs + slackMs, `gave up after ${waited} ms`)
        // Another key is another lock.
        const other = await peer.lock('d/locks/other.example', { timeoutMs: lockTimeoutMs })
        await other.release()
        assert.equal(lease.lost.aborted, false, 'a waiter does not take the lock from its holder')
      } finally {
        await lease.release()
      }
    })

    cases('a released lock can be taken again, also by a waiter; releasing twice is harmless', async (s, peer) => {
      const lease = await s.lock('d/locks/n.example')
      await lease.release()
      await lease.release()
      const again = await peer.lock('d/locks/n.example', { timeoutMs: lockTimeoutMs })
      // A waiter gets the lock soon after the holder releases it.
      const waiting = s.lock('d/locks/n.example', { timeoutMs: 10_000 })
      await new Promise((resolve) => setTimeout(resolve, 100))
      const releasedAt = Date.now()
      await again.release()
      const third = await waiting
      const handover = Date.now() - releasedAt
      assert.ok(handover < slackMs, `the waiter got the lock ${handover} ms after its release`)
      // The old lease, released, must not release the new holder's lock.
      await lease.release()
      await again.release()
      await assert.rejects(peer.lock('d/locks/n.example', { timeoutMs: 100 }), { code: 'FACME_LOCK_TIMEOUT' })
      await third.release()
    })

    cases('contenders take turns: never two holders at once', async (s, peer) => {
      let inside = 0
      let most = 0
      let turns = 0
      await Promise.all(
        Array.from({ length: 4 }, async (_, i) => {
          for (let round = 0; round < 2; round++) {
            const lease = await (i % 2 === 0 ? s : peer).lock('d/locks/busy', { timeoutMs: 20_000 })
            inside += 1
            most = Math.max(most, inside)
            await new Promise((resolve) => setTimeout(resolve, 5))
            inside -= 1
            turns += 1
            await lease.release()
          }
        }),
      )
      assert.equal(most, 1)
      assert.equal(turns, 8)
    })

    cases('an abort signal ends a wait for the lock promptly (not as a timeout)', async (s, peer) => {
      const lease = await s.lock('d/locks/n.example')
      try {
        const controller = new AbortController()
        const waiting = peer.lock('d/locks/n.example', { timeoutMs: 30_000, signal: controller.signal })
        setTimeout(() => controller.abort(new Error('closing')), 100)
        const error = (await rejectsWithin(waiting, 100 + slackMs)) as { code?: string }
        assert.notEqual(error?.code, 'FACME_LOCK_TIMEOUT')
        // An already aborted signal: no lock is taken.
        await assert.rejects(
          peer.lock('d/locks/free.example', { signal: AbortSignal.abort(new Error('closed')) }),
          (err: { code?: string }) => err?.code !== 'FACME_LOCK_TIMEOUT',
        )
        assert.equal(lease.lost.aborted, false)
      } finally {
        await lease.release()
      }
    })
  })

  // Optional in the contract: a store without watch() skips these.
  describe(`${name}: Storage.watch (optional)`, () => {
    const watching = (title: string, body: (s: Storage, peer: Storage, changes: ChangeLog) => Promise<void>) =>
      test(title, async (t) => {
        const fixture = await make()
        t.after(() => fixture.close?.())
        if (fixture.storage.watch === undefined) {
          t.skip('this storage has no watch()')
          return
        }
        const log = new ChangeLog()
        const subscription = fixture.storage.watch('d/', (change) => log.push(change))
        t.after(() => subscription.close())
        await log.settle(fixture.storage)
        await body(fixture.storage, fixture.peer ?? fixture.storage, log)
        // Only final keys are ever reported (no temp files, no lock files), and only keys under the prefix.
        for (const key of log.keys()) assert.ok(log.written.has(key), `reported ${key}, which no one wrote`)
      })

    watching("a put by a peer is reported as 'changed' with its key", async (_s, peer, changes) => {
      changes.written.add('d/certificates/a.example.json')
      await peer.put('d/certificates/a.example.json', 'one')
      await changes.next((c) => c.type === 'changed' && c.key === 'd/certificates/a.example.json', watchMs)
      // A second put of the same key is a second change.
      const seen = changes.count('d/certificates/a.example.json')
      await peer.put('d/certificates/a.example.json', 'two')
      await changes.next(
        (c) => c.type === 'changed' && c.key === 'd/certificates/a.example.json',
        watchMs,
        (log) => log.count('d/certificates/a.example.json') > seen,
      )
    })

    watching(
      'a key in a folder-like prefix that did not exist yet is reported, then its delete',
      async (s, peer, changes) => {
        for (const key of ['d/new/deeper/x.example.json', 'd/new/deeper/y.example.json']) changes.written.add(key)
        await peer.put('d/new/deeper/x.example.json', 'x')
        await changes.next((c) => c.type === 'changed' && c.key === 'd/new/deeper/x.example.json', watchMs)
        await peer.put('d/new/deeper/y.example.json', 'y')
        await changes.next((c) => c.type === 'changed' && c.key === 'd/new/deeper/y.example.json', watchMs)
        const seen = changes.count('d/new/deeper/x.example.json')
        await peer.delete('d/new/deeper/x.example.json')
        await changes.next(
          (c) => c.type === 'changed' && c.key === 'd/new/deeper/x.example.json',
          watchMs,
          (log) => log.count('d/new/deeper/x.example.json') > seen,
        )
        assert.equal(await s.get('d/new/deeper/x.example.json'), undefined)
      },
    )

    watching('a lock taken and released by a peer is no change of a key', async (_s, peer, changes) => {
      const lease = await peer.lock('d/locks/n.example')
      await lease.release()
      // The put after the lock proves the notifications up to it were delivered (they arrive in order per key
      // folder at least); the check after the case says nothing else was reported.
      changes.written.add('d/locks-done.json')
      await peer.put('d/locks-done.json', 'done')
      await changes.next((c) => c.type === 'changed' && c.key === 'd/locks-done.json', watchMs)
    })
  })
}

/** What a watch listener received, and a way to wait for the change that proves an outcome. */
class ChangeLog {
  readonly changes: StorageChange[] = []
  /** The keys the case wrote: the only keys that may be reported. */
  readonly written = new Set<string>()
  #waiters = new Set<() => void>()

  push(change: StorageChange): void {
    this.changes.push(change)
    for (const wake of this.#waiters) wake()
  }

  keys(): string[] {
    return this.changes.flatMap((c) => (c.type === 'changed' ? [c.key] : []))
  }

  count(key: string): number {
    return this.keys().filter((k) => k === key).length
  }

  /**
   * A watch may start asynchronously (a subscription round trip): write a marker key and wait for it, so the
   * watch is known to be live before the case writes.
   */
  async settle(storage: Storage): Promise<void> {
    const marker = `d/watch-ready-${randomBytes(4).toString('hex')}.json`
    this.written.add(marker)
    const deadline = Date.now() + 5_000
    for (let attempt = 0; ; attempt++) {
      await storage.put(marker, String(attempt))
      try {
        await this.next((c) => c.type === 'changed' && c.key === marker, 500)
        return
      } catch (err) {
        if (Date.now() > deadline) throw err
      }
    }
  }

  /** Resolves on the first change matching `match` (and `also` on the whole log), rejects after `ms`. */
  next(
    match: (change: StorageChange) => boolean,
    ms: number,
    also: (log: ChangeLog) => boolean = () => true,
  ): Promise<void> {
    const done = () => this.changes.some(match) && also(this)
    if (done()) return Promise.resolve()
    return new Promise<void>((resolve, reject) => {
      const wake = () => {
        if (!done()) return
        cleanup()
        resolve()
      }
      const timer = setTimeout(() => {
        cleanup()
        reject(new Error(`no matching change within ${ms} ms; got ${JSON.stringify(this.changes)}`))
      }, ms)
      const cleanup = () => {
        clearTimeout(timer)
        this.#waiters.delete(wake)
      }
      this.#waiters.add(wake)
    })
  }
}
