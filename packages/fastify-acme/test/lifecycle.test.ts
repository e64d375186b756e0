// Lifecycle against a real CA: renewal with live swap under load, a CA outage at renewal time, and a fleet of
// names renewing spread over the window. Real time against Pebble with short-lived certificates.
import assert from 'node:assert/strict'
import { mkdtemp } from 'node:fs/promises'
import { Agent, request } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { startPebble } from '@autotls/pebble-harness'
import { FileStorage, MemoryStorage } from '../src/index.js'
import { handshake, httpsGet, pebbleAcme, startApp, startLoad, until } from './helpers.js'

function keepAliveGet(
  agent: Agent,
  port: number,
  name: string,
  ca: string[],
): Promise<{ status: number; localPort: number }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, servername: name, headers: { host: name }, ca, agent, path: '/' },
      (res) => {
        res.resume()
        res.on('end', () => resolve({ status: res.statusCode ?? 0, localPort: res.socket?.localPort ?? -1 }))
      },
    )
    req.on('error', reject)
    req.end()
  })
}

describe('renewal and live swap', () => {
  test('two renewals under continuous load: 0 failed requests, the served serial changes, open connections kept', async () => {
    const pebble = await startPebble({ certificateValidityPeriod: 20 })
    const name = 'renew.acme.test'
    const app = await startApp({
      port: pebble.tlsPort,
      acme: {
        ...pebbleAcme(pebble, [name]),
        storage: new FileStorage(await mkdtemp(join(tmpdir(), 'facme-renew-'))),
        renewBeforeRatio: 0.5,
        retryMinMs: 500,
        retryMaxMs: 2000,
      },
    })
    const events: string[] = []
    for (const e of ['order-started', 'challenge-presented', 'certificate-issued', 'order-failed'] as const) {
      app.acme.on(e, (p) => events.push(`${e}:${'renewal' in p ? p.renewal : ''}`))
    }
    const agent = new Agent({ keepAlive: true, maxSockets: 1 })
    try {
      await app.acme.waitForCertificate(name)
      const roots = [await pebble.issuingRoot()]
      const first = await keepAliveGet(agent, pebble.tlsPort, name, roots)
      const load = startLoad(pebble.tlsPort, name, () => roots)
      await until(() => load.result.serials.length >= 3, 60_000, 'two renewals seen by the client')
      const result = await load.stop()
      const last = await keepAliveGet(agent, pebble.tlsPort, name, roots)
      console.log(
        `# renewal under load: ${result.ok} requests, ${result.failed} failed, serials ${result.serials.join(' -> ')}`,
      )
      assert.equal(result.failed, 0, result.errors.join('; '))
      assert.ok(result.serials.length >= 3)
      assert.equal(
        last.localPort,
        first.localPort,
        'the keep-alive connection opened before the renewals is still in use',
      )
      assert.equal(last.status, 200)
      assert.ok(events.filter((e) => e === 'certificate-issued:true').length >= 2, events.join(','))
      assert.ok(!events.some((e) => e.startsWith('order-failed')), events.join(','))
      const status = app.acme.status(name)
      assert.equal(status?.state, 'valid')
      assert.equal(status?.nextAction?.kind, 'renew')
      assert.equal(status?.serial?.toUpperCase(), result.serials.at(-1)?.toUpperCase())
    } finally {
      agent.destroy()
      await app.close()
      await pebble.stop()
    }
  })

  test('CA down at renewal time: old certificate served throughout, backoff grows, renewal succeeds when it returns', async () => {
    let pebble = await startPebble({ certificateValidityPeriod: 30 })
    const name = 'outage.acme.test'
    const app = await startApp({
      port: pebble.tlsPort,
      acme: {
        ...pebbleAcme(pebble, [name]),
        storage: new MemoryStorage(),
        renewBeforeRatio: 0.8,
        retryMinMs: 500,
        retryMaxMs: 4000,
      },
    })
    const failures: Array<{ at: number; next: number; message: string }> = []
    app.acme.on('order-failed', (e) =>
      failures.push({ at: Date.now(), next: Date.parse(e.nextAttemptAt), message: e.error.message }),
    )
    const restarted = { value: undefined as Awaited<ReturnType<typeof startPebble>> | undefined }
    try {
      const initial = await app.acme.waitForCertificate(name)
      const roots = [await pebble.issuingRoot()]
      await pebble.stop()
      const load = startLoad(pebble.tlsPort, name, () => roots, 50)
      await until(() => failures.length >= 3, 30_000, 'three failed renewal attempts')
      const during = { ...load.result, serials: [...load.result.serials] }
      const delays = failures.map((f) => f.next - f.at)
      console.log(
        `# CA outage: retry delays ${delays.map((d) => `${d} ms`).join(', ')}; ${during.ok} requests served meanwhile`,
      )
      assert.ok(delays[1]! > delays[0]! && delays[2]! > delays[1]!, `backoff grows: ${delays.join(', ')}`)
      assert.deepEqual(
        during.serials.map((s) => s.toUpperCase()),
        [initial.serial?.toUpperCase()],
      )
      assert.equal(app.acme.status(name)?.state, 'valid', 'still valid: the old certificate has not expired')
      // The CA comes back: a new instance on the same directory URL (it has lost our account).
      restarted.value = await startPebble({
        listenPort: pebble.listenPort,
        tlsPort: pebble.tlsPort,
        httpPort: pebble.httpPort,
        listenerCertificates: pebble.listenerCertificates,
        certificateValidityPeriod: 30,
      })
      pebble = restarted.value
      roots.push(await pebble.issuingRoot())
      await until(() => app.acme.status(name)?.serial !== initial.serial, 20_000, 'the renewal after the outage')
      await until(() => load.result.serials.length >= 2, 5_000, 'the client to see the new certificate')
      const result = await load.stop()
      assert.equal(result.failed, 0, result.errors.join('; '))
      assert.equal(app.acme.status(name)?.failures, 0)
    } finally {
      await app.close()
      await pebble.stop()
    }
  })
})

describe('expired at start', () => {
  test('an expired cached certificate is served at once while its renewal runs', async () => {
    let pebble = await startPebble({ certificateValidityPeriod: 2 })
    const name = 'expired.acme.test'
    const storage = new FileStorage(await mkdtemp(join(tmpdir(), 'facme-expired-')))
    const acme = {
      ...pebbleAcme(pebble, [name]),
      storage,
      retryMinMs: 300,
      retryMaxMs: 1000,
    }
    const first = await startApp({ port: pebble.tlsPort, acme })
    const issued = await first.acme.waitForCertificate(name)
    await first.close()
    await pebble.stop()
    await until(() => Date.now() > Date.parse(issued.notAfter!) + 500, 10_000, 'the certificate to expire')
    // Restart with the CA down: the expired certificate is what we have, and it is served.
    const app = await startApp({ port: pebble.tlsPort, acme })
    try {
      assert.equal(app.acme.status(name)?.state, 'expired')
      const res = await handshake({ port: pebble.tlsPort, servername: name, alpn: ['http/1.1'] })
      assert.ok(res.ok, 'handshake with the expired certificate')
      assert.equal(res.cert.serialNumber.toUpperCase(), issued.serial?.toUpperCase())
      await until(() => (app.acme.status(name)?.failures ?? 0) >= 1, 10_000, 'a failed renewal attempt')
      pebble = await startPebble({
        listenPort: pebble.listenPort,
        tlsPort: pebble.tlsPort,
        httpPort: pebble.httpPort,
        listenerCertificates: pebble.listenerCertificates,
      })
      await until(() => app.acme.status(name)?.state === 'valid', 15_000, 'the renewal')
      const root = await pebble.issuingRoot()
      const fresh = await httpsGet(pebble.tlsPort, name, root)
      assert.equal(fresh.status, 200)
      assert.notEqual(fresh.cert.serialNumber.toUpperCase(), issued.serial?.toUpperCase())
    } finally {
      await app.close()
      await pebble.stop()
    }
  })
})

describe('issueOnStart: false', () => {
  test('cached certificates are still renewed; missing ones wait for issue()', async () => {
    const pebble = await startPebble({ certificateValidityPeriod: 6 })
    const storage = new MemoryStorage()
    const acme = {
      ...pebbleAcme(pebble, ['manual1.acme.test', 'manual2.acme.test']),
      storage,
      renewBeforeRatio: 0.5,
      issueOnStart: false,
    }
    const first = await startApp({ port: pebble.tlsPort, acme })
    const issued = await first.acme.issue('manual1.acme.test')
    await first.close()
    const app = await startApp({ port: pebble.tlsPort, acme })
    try {
      assert.equal(app.acme.status('manual1.acme.test')?.nextAction?.kind, 'renew')
      assert.equal(app.acme.status('manual2.acme.test')?.nextAction, undefined, 'nothing planned for the missing one')
      await until(() => app.acme.status('manual1.acme.test')?.serial !== issued.serial, 15_000, 'the renewal')
      assert.equal(app.acme.status('manual2.acme.test')?.state, 'pending', 'the missing name was not ordered')
    } finally {
      await app.close()
      await pebble.stop()
    }
  })
})

describe('many names', () => {
  test('50 names issued together get renewal times spread over the jitter window', async () => {
    const pebble = await startPebble()
    const names = Array.from({ length: 50 }, (_, i) => `fleet${i}.acme.test`)
    const app = await startApp({
      port: pebble.tlsPort,
      acme: {
        names,
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: pebble.caBundle,
        storage: new MemoryStorage(),
      },
    })
    try {
      const started = Date.now()
      await Promise.all(names.map((n) => app.acme.waitForCertificate(n)))
      console.log(`# 50 names issued in ${Date.now() - started} ms`)
      const statuses = app.acme.statuses()
      const at = statuses.map((s) => Date.parse(s.nextAction!.at))
      const lifetime = Date.parse(statuses[0]!.notAfter!) - Date.parse(statuses[0]!.notBefore!)
      const jitterSpan = 0.05 * lifetime
      const spread = Math.max(...at) - Math.min(...at)
      assert.ok(new Set(at).size >= 45, 'renewal times are (nearly) all distinct')
      assert.ok(spread > 0.5 * jitterSpan, `spread ${spread} ms over a ${jitterSpan} ms jitter span`)
      for (const s of statuses) assert.equal(s.nextAction?.kind, 'renew')
    } finally {
      await app.close()
      await pebble.stop()
    }
  })
})
