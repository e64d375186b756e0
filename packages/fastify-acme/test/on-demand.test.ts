// On-demand TLS and runtime names against a real CA (Pebble) with real TLS clients: a scan of random, IP, malformed
// and denied names orders nothing; an allowed name's first handshake completes with its new certificate; concurrent
// first handshakes share one order; an ask endpoint that is down affects only new names; the limits hold under a
// burst; add/remove under load keeps the other names served.
import assert from 'node:assert/strict'
import { mkdtemp } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { connect as tlsConnect } from 'node:tls'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { countOrders, type Pebble, startPebble } from '@autotls/pebble-harness'
import type { FastifyInstance } from 'fastify'
import type { FastifyAcmeOptions } from '../src/index.js'
import { httpsGet, startApp, startLoad } from './helpers.js'

// A collection on demand, to read memory after a scan rather than garbage not yet collected.
setFlagsFromString('--expose-gc')

/** A Caddy-style ask endpoint: allows names under `.allowed.test`, counts asks per name. */
async function startAsk(): Promise<{ url: string; asks: Map<string, number>; server: Server; stop(): Promise<void> }> {
  const asks = new Map<string, number>()
  const server = createServer((req, res) => {
    const domain = new URL(req.url ?? '/', 'http://x').searchParams.get('domain') ?? ''
    asks.set(domain, (asks.get(domain) ?? 0) + 1)
    res.writeHead(domain.endsWith('.allowed.test') ? 200 : 403).end()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  return {
    url: `http://127.0.0.1:${port}/check`,
    asks,
    server,
    stop: () => new Promise((resolve) => server.close(() => resolve())),
  }
}

interface Attempt {
  ok: boolean
  error?: string
  ms: number
}

/** One TLS handshake with `servername`, verifying against `ca` when given. */
function handshakeWith(port: number, servername: string, ca?: string): Promise<Attempt> {
  const started = performance.now()
  return new Promise((resolve) => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port,
      servername,
      ...(ca ? { ca } : { rejectUnauthorized: false }),
    })
    const done = (a: Omit<Attempt, 'ms'>) => {
      socket.destroy()
      resolve({ ...a, ms: performance.now() - started })
    }
    socket.once('secureConnect', () => done({ ok: true }))
    socket.once('error', (err) => done({ ok: false, error: err.message }))
    socket.setTimeout(40_000, () => done({ ok: false, error: 'timeout' }))
  })
}

async function pool<T>(items: T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await fn(items[next++]!)
    }),
  )
}

describe('on-demand TLS', () => {
  let pebble: Pebble
  let ask: Awaited<ReturnType<typeof startAsk>>
  before(async () => {
    pebble = await startPebble()
    ask = await startAsk()
  })
  after(async () => {
    await ask?.stop()
    await pebble?.stop()
  })

  async function onDemandApp(cacheDir: string, onDemand: Partial<NonNullable<FastifyAcmeOptions['onDemand']>> = {}) {
    return startApp({
      port: pebble.tlsPort,
      acme: {
        names: [],
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: pebble.caBundle,
        cacheDir,
        onDemand: { ask: ask.url, ...onDemand },
      },
    })
  }

  test('enabling on-demand without a policy is refused at start', async () => {
    await assert.rejects(
      startApp({
        port: 0,
        acme: { names: [], directory: pebble.directoryUrl, termsOfServiceAgreed: true, onDemand: {} },
      }),
      { code: 'FACME_ON_DEMAND_NO_POLICY' },
    )
  })

  test('1,000 handshakes with random, IP, malformed and denied names: 0 orders, one ask per name', async (t) => {
    const app = await onDemandApp(await mkdtemp(join(tmpdir(), 'facme-od-scan-')))
    t.after(() => app.close())
    const ordersBefore = countOrders(pebble)
    const asksBefore = [...ask.asks.values()].reduce((a, b) => a + b, 0)
    const names: string[] = []
    for (let i = 0; i < 1000; i++) {
      const kind = i % 5
      if (kind === 0) names.push(`r${i}-${Math.random().toString(36).slice(2, 10)}.scan.test`)
      else if (kind === 1) names.push(`10.${i % 256}.${(i * 7) % 256}.1`)
      else if (kind === 2) names.push(`${'x'.repeat(64)}.too-long-label.test`)
      else if (kind === 3) names.push(['localhost', 'under_score.test', '-bad.test', 'bad-.test', '1.2.3'][i % 5]!)
      else names.push(`denied${Math.floor(i / 5) % 20}.scan.test`) // 20 distinct names, asked again and again
    }
    let succeeded = 0
    const started = performance.now()
    await pool(names, 20, async (name) => {
      if ((await handshakeWith(pebble.tlsPort, name)).ok) succeeded++
    })
    const seconds = (performance.now() - started) / 1000
    // Memory of this process (server and clients) over three more scans of new random names, after a collection.
    const gc = runInNewContext('gc') as () => void
    const rss: number[] = []
    const heap: number[] = []
    for (let round = 0; round < 3; round++) {
      const more = Array.from(
        { length: 1000 },
        (_, i) => `s${round}x${i}-${Math.random().toString(36).slice(2, 8)}.scan.test`,
      )
      await pool(more, 20, async (name) => {
        if ((await handshakeWith(pebble.tlsPort, name)).ok) succeeded++
      })
      gc()
      rss.push(process.memoryUsage().rss / 1024 / 1024)
      heap.push(process.memoryUsage().heapUsed / 1024 / 1024)
    }
    const asked = [...ask.asks.entries()].filter(([d]) => d.endsWith('.scan.test'))
    const maxPerName = Math.max(...asked.map(([, n]) => n))
    console.log(
      `# on-demand scan: 1000 handshakes in ${seconds.toFixed(1)} s, ${succeeded} succeeded, ${countOrders(pebble) - ordersBefore} orders, ${[...ask.asks.values()].reduce((a, b) => a + b, 0) - asksBefore} asks for ${asked.length} distinct names (at most ${maxPerName} per name), after 3 more scans of 1000 new names each (collected): RSS ${rss.map((m) => m.toFixed(0)).join(' / ')} MiB, heap ${heap.map((m) => m.toFixed(1)).join(' / ')} MiB`,
    )
    assert.equal(succeeded, 0)
    assert.equal(countOrders(pebble), ordersBefore)
    assert.equal(maxPerName, 1, 'each denied name asked once within the negative TTL')
    // Only valid DNS names reach the ask endpoint: 200 random + 20 repeated ones, then 1000 new ones.
    assert.equal(asked.length, 3220)
    assert.deepEqual(app.acme.names, [])
  })

  test('an allowed new name: the first handshake completes with its new certificate; 50 concurrent share one order', async (t) => {
    const app = await onDemandApp(await mkdtemp(join(tmpdir(), 'facme-od-first-')))
    t.after(() => app.close())
    const root = await pebble.issuingRoot()
    const ordersBefore = countOrders(pebble)
    const first = await handshakeWith(pebble.tlsPort, 'first.allowed.test', root)
    assert.equal(first.ok, true, first.error)
    const served = await httpsGet(pebble.tlsPort, 'first.allowed.test', root)
    assert.match(served.cert.subjectaltname ?? '', /DNS:first\.allowed\.test/)
    const crowd = await Promise.all(
      Array.from({ length: 50 }, () => handshakeWith(pebble.tlsPort, 'crowd.allowed.test', root)),
    )
    const orders = countOrders(pebble) - ordersBefore
    console.log(
      `# on-demand: first handshake for a new name finished in ${first.ms.toFixed(0)} ms (ClientHello to Finished, Pebble without validation sleeps); 50 concurrent first handshakes: ${crowd.filter((a) => a.ok).length} succeeded, ${orders - 1} order`,
    )
    assert.equal(crowd.filter((a) => a.ok).length, 50, JSON.stringify(crowd.find((a) => !a.ok)))
    assert.equal(orders, 2, 'one order per name')
    assert.deepEqual([...app.acme.names].sort(), ['crowd.allowed.test', 'first.allowed.test'])
  })

  test('ask endpoint down: stored on-demand names still served after a restart, new names denied, no order', async (t) => {
    const cacheDir = await mkdtemp(join(tmpdir(), 'facme-od-down-'))
    const own = await startAsk()
    const app = await startApp({
      port: pebble.tlsPort,
      acme: {
        names: [],
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: pebble.caBundle,
        cacheDir,
        onDemand: { ask: own.url },
      },
    })
    const root = await pebble.issuingRoot()
    assert.equal((await handshakeWith(pebble.tlsPort, 'kept.allowed.test', root)).ok, true)
    await app.close()
    await own.stop()
    const again = await startApp({
      port: pebble.tlsPort,
      acme: {
        names: [],
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: pebble.caBundle,
        cacheDir,
        onDemand: { ask: own.url },
      },
    })
    t.after(() => again.close())
    const ordersBefore = countOrders(pebble)
    const kept = await handshakeWith(pebble.tlsPort, 'kept.allowed.test', root)
    const fresh = await handshakeWith(pebble.tlsPort, 'new.allowed.test', root)
    console.log(`# ask endpoint down: stored name ${kept.ok ? 'served' : 'NOT served'}; new name: ${fresh.error}`)
    assert.equal(kept.ok, true, kept.error)
    assert.equal(fresh.ok, false)
    assert.equal(countOrders(pebble), ordersBefore)
  })

  test('a burst of 200 allowed names: the per-minute limit and the certificate cap hold', async (t) => {
    const logLines: string[] = []
    const app = await startApp({
      port: pebble.tlsPort,
      logLines,
      acme: {
        names: [],
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: pebble.caBundle,
        cacheDir: await mkdtemp(join(tmpdir(), 'facme-od-burst-')),
        onDemand: {
          allowSuffixes: ['*.burst.test'],
          maxConcurrentOrders: 4,
          ordersPerMinute: 10,
          ordersPerMinutePerClient: 200,
          maxCertificates: 6,
        },
      },
    })
    t.after(() => app.close())
    const ordersBefore = countOrders(pebble)
    const names = Array.from({ length: 200 }, (_, i) => `b${i}.burst.test`)
    const results = await Promise.all(names.map((n) => handshakeWith(pebble.tlsPort, n)))
    const ok = results.filter((r) => r.ok).length
    const orders = countOrders(pebble) - ordersBefore
    console.log(
      `# on-demand burst: 200 allowed names at once, ${ok} handshakes succeeded, ${orders} orders (limits: 4 at once, 10 per minute, cap 6)`,
    )
    assert.ok(orders <= 4, `${orders} orders: no more than the concurrent limit in one burst`)
    assert.ok(app.acme.names.length <= 6)
    // A second burst after those orders: the cap (6) is reached before the per-minute limit (10).
    const second = await Promise.all(names.map((n) => handshakeWith(pebble.tlsPort, `again-${n}`)))
    const third = await Promise.all(names.map((n) => handshakeWith(pebble.tlsPort, `more-${n}`)))
    const total = countOrders(pebble) - ordersBefore
    console.log(
      `# on-demand burst: after two more bursts ${total} orders in all, ${app.acme.names.length} on-demand names, ${second.filter((r) => r.ok).length + third.filter((r) => r.ok).length} more handshakes succeeded`,
    )
    assert.ok(total <= 6, `${total} orders`)
    assert.ok(logLines.some((l) => l.includes('on-demand certificate cap reached')))
  })
})

describe('runtime names', () => {
  test('add/remove under client load: 0 failed requests for the names that stay', async (t) => {
    const pebble = await startPebble()
    t.after(() => pebble.stop())
    const app: FastifyInstance = await startApp({
      port: pebble.tlsPort,
      acme: {
        names: ['stay.runtime.test'],
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: pebble.caBundle,
        storage: undefined,
        cacheDir: await mkdtemp(join(tmpdir(), 'facme-runtime-')),
      },
    })
    t.after(() => app.close())
    await app.acme.waitForCertificate('stay.runtime.test')
    const root = await pebble.issuingRoot()
    const load = startLoad(pebble.tlsPort, 'stay.runtime.test', () => [root], 5)
    await assert.rejects(app.acme.add(['1.2.3.4']), { code: 'FACME_INVALID_NAME' })
    for (let i = 0; i < 5; i++) {
      const name = `added${i}.runtime.test`
      const [status] = await app.acme.add([name])
      assert.equal(status?.name, name)
      await app.acme.waitForCertificate(name)
      assert.equal((await httpsGet(pebble.tlsPort, name, root)).status, 200)
      await app.acme.remove(name, { deleteStored: i % 2 === 0 })
      assert.equal((await handshakeWith(pebble.tlsPort, name, root)).ok, false, 'a removed name is no longer served')
      assert.equal(app.acme.status(name), undefined)
    }
    const result = await load.stop()
    console.log(
      `# runtime names: 5 names added, issued, served and removed under load: ${result.ok} requests ok, ${result.failed} failed`,
    )
    assert.equal(result.failed, 0, result.errors.join('; '))
    assert.ok(result.ok > 0)
    assert.deepEqual(app.acme.names, ['stay.runtime.test'])
  })
})
