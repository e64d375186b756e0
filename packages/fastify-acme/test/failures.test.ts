// Failure paths against a real CA: a crash-looping process never re-orders before the stored retry time, a CA's
// Retry-After is honoured without freezing close(), and close() in the middle of an order is prompt and leaves a
// consistent cache.
import assert from 'node:assert/strict'
import { mkdtemp, readdir, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { countOrders, freePort, startCaProxy, startPebble } from '@autotls/pebble-harness'
import { FileStorage, MemoryStorage } from '../src/index.js'
import { pebbleAcme, recordingClock, startApp, until } from './helpers.js'

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = []
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) out.push(join(entry.parentPath ?? (entry as unknown as { path: string }).path, entry.name))
  }
  return out
}

describe('crash loop', () => {
  test('10 restarts after a failed validation send no new order before the stored next-attempt time', async () => {
    const pebble = await startPebble()
    const cacheDir = await mkdtemp(join(tmpdir(), 'facme-crash-'))
    const name = 'crash.acme.test'
    const options = {
      ...pebbleAcme(pebble, [name]),
      cacheDir,
      retryMinMs: 1000,
    }
    try {
      // Listening on a port the CA does not dial: the validation fails (connection refused at pebble.tlsPort).
      const first = await startApp({ port: await freePort(), acme: options })
      let failedAt = ''
      await new Promise<void>((resolve) =>
        first.acme.once('order-failed', (e) => {
          failedAt = e.nextAttemptAt
          resolve()
        }),
      )
      const status = first.acme.status(name)
      await first.close()
      assert.equal(status?.failures, 1)
      assert.ok(Date.parse(failedAt) - Date.now() > 10 * 60_000, 'a failed validation waits at least 15 minutes')
      const orders = countOrders(pebble)
      for (let i = 0; i < 10; i++) {
        const { clock, nextWake } = recordingClock()
        const armed = nextWake()
        const app = await startApp({ port: await freePort(), acme: { ...options, clock } })
        // Start-up has scheduled the name once the scheduler arms its timer: that first wake-up is the stored
        // next-attempt time, so nothing can order before it.
        const wake = await armed
        assert.equal(new Date(wake).toISOString(), failedAt, 'the first wake-up is the stored next-attempt time')
        const s = app.acme.status(name)
        assert.equal(s?.nextAction?.kind, 'retry')
        assert.equal(s?.nextAction?.at, failedAt, 'the stored next-attempt time is kept across restarts')
        assert.equal(s?.failures, 1)
        assert.equal(app.acme.ordersSent, 0)
        await app.close()
      }
      assert.equal(countOrders(pebble), orders, 'no order reached the CA during the crash loop')
    } finally {
      await pebble.stop()
    }
  })
})

describe('Retry-After', () => {
  test('a 429 with Retry-After delays the next attempt accordingly; a long one does not block close()', async () => {
    const pebble = await startPebble()
    const proxy = await startCaProxy({ upstreamPort: pebble.listenPort, upstreamCa: pebble.caBundle })
    const name = 'retryafter.acme.test'
    const rateLimited = {
      type: 'urn:ietf:params:acme:error:rateLimited',
      detail: 'too many new orders recently',
      status: 429,
    }
    proxy.inject({
      method: 'POST',
      path: /^\/order-plz/,
      status: 429,
      headers: { 'retry-after': '3' },
      body: rateLimited,
      times: 1,
    })
    const app = await startApp({
      port: pebble.tlsPort,
      acme: {
        names: [name],
        directory: proxy.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: [proxy.caBundle],
        storage: new MemoryStorage(),
        retryMinMs: 100,
        retryMaxMs: 60_000,
      },
    })
    try {
      const failed = await new Promise<{ at: number; next: number; code: string; problemType: string | undefined }>(
        (resolve) =>
          app.acme.once('order-failed', (e) =>
            resolve({
              at: Date.now(),
              next: Date.parse(e.nextAttemptAt),
              code: e.error.code,
              problemType: (e.error as { problemType?: string }).problemType,
            }),
          ),
      )
      assert.equal(failed.code, 'FACME_RATE_LIMITED')
      assert.equal(failed.problemType, rateLimited.type)
      assert.ok(failed.next - failed.at >= 2900, `waited ${failed.next - failed.at} ms for a 3 s Retry-After`)
      assert.equal(app.acme.status(name)?.lastError?.code, 'FACME_RATE_LIMITED')
      assert.equal(app.acme.status(name)?.lastError?.problemType, rateLimited.type)
      assert.equal(app.acme.status(name)?.lastError?.status, 429)
      assert.equal(proxy.requests.filter((r) => r.injected).length, 1, 'acme-client did not retry on its own')
      // The order goes through once the Retry-After has passed.
      const issued = await app.acme.waitForCertificate(name)
      assert.equal(issued.state, 'valid')
      const newOrders = proxy.requests.filter((r) => r.path.startsWith('/order-plz'))
      assert.equal(newOrders.length, 2)

      // Now a 2-hour Retry-After on a manual renewal: the next attempt is 2 h away and close() returns at once.
      proxy.inject({
        method: 'POST',
        path: /^\/order-plz/,
        status: 503,
        headers: { 'retry-after': '7200' },
        body: { type: 'urn:ietf:params:acme:error:serverInternal', detail: 'maintenance', status: 503 },
      })
      await assert.rejects(app.acme.issue(name))
      const next = Date.parse(app.acme.status(name)!.nextAction!.at)
      assert.ok(next - Date.now() > 7000_000, 'next attempt about two hours away')
      assert.equal(app.acme.status(name)?.state, 'valid', 'the current certificate is still served')
    } finally {
      const started = Date.now()
      await app.close()
      const took = Date.now() - started
      console.log(`# close() with a 2 h Retry-After pending took ${took} ms`)
      assert.ok(took < 2000, `close() took ${took} ms`)
      await proxy.stop()
      await pebble.stop()
    }
  })
})

describe('shutdown', () => {
  test('close() in the middle of an order returns within the bound; a restart finds a consistent cache', async () => {
    // Pebble's validation sleeps 0-4 s when VA_NOSLEEP is off: orders are in flight long enough to close in them.
    const pebble = await startPebble({ vaNoSleep: false })
    const cacheDir = await mkdtemp(join(tmpdir(), 'facme-shutdown-'))
    const names = ['stop1.acme.test', 'stop2.acme.test', 'stop3.acme.test']
    const options = {
      names,
      directory: pebble.directoryUrl,
      termsOfServiceAgreed: true as const,
      caRoots: pebble.caBundle,
      cacheDir,
    }
    try {
      const app = await startApp({ port: pebble.tlsPort, acme: options })
      await new Promise<void>((resolve) => app.acme.once('challenge-presented', () => resolve()))
      const started = Date.now()
      await app.close()
      const took = Date.now() - started
      console.log(`# close() mid-order took ${took} ms`)
      assert.ok(took < 2500, `close() took ${took} ms`)
      // Consistent cache: no temp files, every JSON file parses, every stored certificate is complete.
      const files = await listFiles(cacheDir)
      assert.equal(files.filter((f) => f.includes('.tmp-')).length, 0)
      for (const f of files.filter((f) => f.endsWith('.json'))) JSON.parse(await readFile(f, 'utf8'))
      // A restart completes the job with the same account.
      const account = files.find((f) => f.endsWith('account.json'))
      assert.ok(account, 'the account was stored before the order')
      const accountBefore = await readFile(account, 'utf8')
      const again = await startApp({ port: pebble.tlsPort, acme: options })
      await Promise.all(names.map((n) => again.acme.waitForCertificate(n)))
      assert.equal(await readFile(account, 'utf8'), accountBefore, 'no new account')
      await again.close()
      const storage = new FileStorage(cacheDir)
      const certs = await storage.list('')
      assert.equal(certs.filter((k) => k.includes('/certificates/')).length, 3)
    } finally {
      await pebble.stop()
    }
  })

  test('close() while an order waits on an unreachable CA returns promptly', async () => {
    const port = await freePort()
    const app = await startApp({
      port: await freePort(),
      acme: {
        names: ['unreachable.acme.test'],
        directory: `https://127.0.0.1:${port}/dir`,
        termsOfServiceAgreed: true,
        storage: new MemoryStorage(),
      },
    })
    await until(() => app.acme.status('unreachable.acme.test')?.state !== 'pending', 5000, 'the first attempt')
    const status = app.acme.status('unreachable.acme.test')
    assert.equal(status?.lastError?.code, 'FACME_CA_UNREACHABLE', JSON.stringify(status?.lastError))
    assert.equal(status?.lastError?.networkCode, 'ECONNREFUSED')
    assert.match(status?.lastError?.message ?? '', /ECONNREFUSED/)
    const started = Date.now()
    await app.close()
    assert.ok(Date.now() - started < 2000)
  })
})

describe('rate-limit safety', () => {
  test('a failed order deactivates its pending authorization', async () => {
    const pebble = await startPebble()
    const proxy = await startCaProxy({ upstreamPort: pebble.listenPort, upstreamCa: pebble.caBundle })
    // The CA fails the challenge response request: the authorization stays pending unless we deactivate it.
    proxy.inject({
      method: 'POST',
      path: /^\/chalZ\//,
      status: 500,
      body: { type: 'urn:ietf:params:acme:error:serverInternal', detail: 'boom', status: 500 },
      times: 1,
    })
    const lines: string[] = []
    const name = 'deactivate.acme.test'
    const app = await startApp({
      port: pebble.tlsPort,
      logLines: lines,
      acme: {
        names: [name],
        directory: proxy.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: [proxy.caBundle],
        storage: new MemoryStorage(),
        issueOnStart: false,
      },
    })
    try {
      await assert.rejects(app.acme.issue(name))
      const authzPosts = proxy.requests.filter(
        (r) => r.method === 'POST' && r.path.startsWith('/authZ/') && r.status === 200,
      )
      assert.ok(
        lines.some((l) => l.includes('authorization deactivated')),
        'deactivation logged',
      )
      assert.ok(authzPosts.length >= 2, 'the authorization was fetched and then deactivated')
      assert.equal(app.acme.status(name)?.nextAction?.kind, 'retry')
    } finally {
      await app.close()
      await proxy.stop()
      await pebble.stop()
    }
  })
})
