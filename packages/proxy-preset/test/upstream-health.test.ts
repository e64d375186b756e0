// Upstream health: two real upstreams behind one route, one killed under load (GET never fails, POST at most 0.1%),
// the health check seeing it up again after a restart on the same port; everything down -> 502 without internal
// addresses; a websocket upgrade to an unreachable upstream -> 502 before any 101.
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { Pool, request } from 'undici'
import { createProxy, type ProxyHandle, type ProxyOptions } from '../src/index.js'
import { type CertFiles, certFiles, rawTls, startUpstream, type Upstream } from './helpers.js'

const HOST = 'lb.test.local'
const INTERVAL_MS = 200

/** An upstream that can be killed (listener closed, every socket destroyed) and restarted on the same port. */
class KillableUpstream {
  server: Server | undefined
  port = 0
  readonly sockets = new Set<Socket>()
  served = 0
  constructor(readonly name: string) {}
  async start(): Promise<void> {
    const server = createServer((req, res) => {
      if (req.url === '/healthz') {
        res.end('ok')
        return
      }
      req.resume()
      req.on('end', () => {
        this.served++
        res.setHeader('content-type', 'text/plain')
        res.end(this.name)
      })
    })
    server.on('connection', (socket) => {
      this.sockets.add(socket)
      socket.on('close', () => this.sockets.delete(socket))
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.port, '127.0.0.1', () => resolve())
    })
    this.port = (server.address() as AddressInfo).port
    this.server = server
  }
  kill(): void {
    this.server?.close()
    for (const socket of this.sockets) socket.destroy()
    this.server = undefined
  }
  get url(): string {
    return `http://127.0.0.1:${this.port}`
  }
}

async function unusedPort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

describe('upstream health', () => {
  let certs: CertFiles
  let proxy: ProxyHandle
  let port: number
  let admin: string
  let client: Pool
  const a = new KillableUpstream('a')
  const b = new KillableUpstream('b')
  let deadUrl: string
  let echo: Upstream
  let config: ProxyOptions
  let resetter: Upstream

  before(async () => {
    certs = await certFiles([HOST, 'down.test.local', 'ws.test.local', 'refused.test.local', 'reset.test.local'])
    await a.start()
    await b.start()
    deadUrl = `http://127.0.0.1:${await unusedPort()}`
    echo = await startUpstream('echo')
    // Reads the whole request, then resets the connection without a response byte.
    resetter = await startUpstream('resetter', (req) => req.socket.destroy())
    config = {
      logger: false,
      https: { host: '127.0.0.1', port: 0 },
      http: false,
      admin: { host: '127.0.0.1', port: 0 },
      certificates: [{ cert: certs.cert, key: certs.key }],
      routes: [
        {
          host: HOST,
          upstream: [a.url, b.url],
          healthCheck: { path: '/healthz', intervalMs: INTERVAL_MS, timeoutMs: 150 },
        },
        { host: 'down.test.local', upstream: [deadUrl, `http://127.0.0.1:${await unusedPort()}`] },
        { host: 'ws.test.local', upstream: deadUrl, websocket: true },
        // ejectMs 0: no passive ejection, every other request tries the failing upstream first.
        { host: 'refused.test.local', upstream: [deadUrl, echo.url], ejectMs: 0 },
        { host: 'reset.test.local', upstream: [resetter.url, echo.url], ejectMs: 0 },
      ],
    }
    proxy = await createProxy(config)
    port = (await proxy.listen()).https.port
    const adminAddress = proxy.adminAddress()!
    admin = `http://127.0.0.1:${adminAddress.port}`
    client = new Pool(`https://127.0.0.1:${port}`, {
      connections: 8,
      connect: { ca: certs.ca, servername: HOST },
    })
  })
  after(async () => {
    await client?.close()
    await proxy?.close()
    a.kill()
    b.kill()
    await echo?.close()
    await resetter?.close()
    await certs?.remove()
  })

  async function healthOf(
    upstream: string,
    label = `${HOST}/`,
  ): Promise<{ healthy: boolean; checked: boolean; lastError?: string }> {
    const res = await request(`${admin}/status?format=json`)
    const status = (await res.body.json()) as {
      routes: Array<{ route: string; upstreams: Array<{ url: string; healthy: boolean; checked: boolean }> }>
    }
    const route = status.routes.find((r) => r.route === label)!
    return route.upstreams.find((u) => u.url === upstream)!
  }

  async function until(what: () => Promise<boolean>): Promise<number> {
    const started = Date.now()
    while (!(await what())) await new Promise((resolve) => setTimeout(resolve, 10))
    return Date.now() - started
  }

  test('one of two upstreams killed under load: no GET fails, POST <= 0.1%; the health check sees it up again', async () => {
    await until(async () => (await healthOf(a.url)).checked && (await healthOf(b.url)).checked)
    const total = 4000
    const killAt = 1000
    let issued = 0
    let completed = 0
    let completedAfterKill = 0
    let killed = false
    let servedByABeforeKill = 0
    const failures = { GET: 0, POST: 0 }
    const counts = { GET: 0, POST: 0 }
    const errors = new Map<string, number>()
    const worker = async () => {
      while (issued < total) {
        const i = issued++
        const method = i % 2 === 0 ? 'GET' : 'POST'
        counts[method]++
        try {
          const res = await client.request({
            path: `/load/${i}`,
            method,
            headers: { host: HOST, 'content-type': 'text/plain' },
            ...(method === 'POST' ? { body: `body ${i}` } : {}),
          })
          const text = await res.body.text()
          if (res.statusCode !== 200) {
            failures[method]++
            const key = `${res.statusCode} ${text.slice(0, 80)}`
            errors.set(key, (errors.get(key) ?? 0) + 1)
          }
        } catch (err) {
          failures[method]++
          const key = String((err as { code?: string }).code ?? err)
          errors.set(key, (errors.get(key) ?? 0) + 1)
        }
        completed++
        if (killed) completedAfterKill++
        if (completed === killAt) {
          servedByABeforeKill = a.served
          a.kill()
          killed = true
        }
      }
    }
    const started = Date.now()
    await Promise.all(Array.from({ length: 8 }, worker))
    const ms = Date.now() - started
    const failed = failures.GET + failures.POST
    console.log(
      `# ${total} requests (${counts.GET} GET, ${counts.POST} POST) in ${ms} ms, upstream a killed after ${killAt}: ` +
        `failed GET ${failures.GET}, failed POST ${failures.POST} (${((failed / total) * 100).toFixed(3)}% of all)` +
        (errors.size > 0 ? `; ${[...errors].map(([k, n]) => `${k} x${n}`).join(', ')}` : ''),
    )
    assert.ok(servedByABeforeKill > 0, 'both upstreams took requests before the kill')
    assert.ok(completedAfterKill > 2000, 'the kill happened under load')
    assert.equal(failures.GET, 0, 'no idempotent request fails')
    assert.ok(failed <= total * 0.001, `failed requests <= 0.1% (${failed})`)
    assert.equal((await healthOf(a.url)).healthy, false, 'the killed upstream is reported down')
    assert.equal((await healthOf(b.url)).healthy, true)

    // Restart on the same port: the active check (healthyThreshold 2) marks it up again.
    await a.start()
    const restarted = Date.now()
    await until(async () => (await healthOf(a.url)).healthy)
    const recoveryMs = Date.now() - restarted
    console.log(
      `# upstream a back up ${recoveryMs} ms after its restart (interval ${INTERVAL_MS} ms, healthyThreshold 2: ` +
        `${(recoveryMs / INTERVAL_MS).toFixed(2)} intervals)`,
    )
    const before = a.served
    for (let i = 0; i < 20; i++) {
      const res = await client.request({ path: '/after', method: 'GET', headers: { host: HOST } })
      await res.body.text()
      assert.equal(res.statusCode, 200)
    }
    assert.ok(a.served - before >= 5, `requests reach the recovered upstream again (${a.served - before} of 20)`)
    const metrics = await (await request(`${admin}/metrics`)).body.text()
    assert.match(metrics, new RegExp(`autotls_upstream_healthy\\{[^}]*upstream="${a.url}"[^}]*\\} 1`))
  })

  test('connection refused: a POST with a body is sent to the other upstream, body intact', async () => {
    const before = echo.seen.length
    const statuses: number[] = []
    for (let i = 0; i < 6; i++) {
      const res = await client.request({
        path: `/refused/${i}`,
        method: 'POST',
        headers: { host: 'refused.test.local', 'content-type': 'text/plain' },
        body: `payload ${i}`,
      })
      await res.body.text()
      statuses.push(res.statusCode)
    }
    assert.deepEqual(statuses, [200, 200, 200, 200, 200, 200])
    const got = echo.seen.slice(before).map((r) => r.body)
    assert.deepEqual(
      got,
      [0, 1, 2, 3, 4, 5].map((i) => `payload ${i}`),
    )
  })

  test('reset before any response byte: GET retried on the other upstream, POST not retried', async () => {
    const echoBefore = echo.seen.length
    const resetBefore = resetter.seen.length
    const get: number[] = []
    const post: number[] = []
    for (let i = 0; i < 4; i++) {
      for (const [method, out] of [
        ['GET', get],
        ['POST', post],
      ] as const) {
        const res = await client.request({
          path: `/reset/${i}`,
          method,
          headers: { host: 'reset.test.local', 'content-type': 'text/plain' },
          ...(method === 'POST' ? { body: `p${i}` } : {}),
        })
        await res.body.text()
        out.push(res.statusCode)
      }
    }
    const resetPosts = resetter.seen.slice(resetBefore).filter((r) => r.method === 'POST').length
    const echoPosts = echo.seen.slice(echoBefore).filter((r) => r.method === 'POST').length
    const resetGets = resetter.seen.slice(resetBefore).filter((r) => r.method === 'GET').length
    console.log(`# reset upstream: GET ${get.join(',')} (${resetGets} reset, retried); POST ${post.join(',')}`)
    assert.deepEqual(get, [200, 200, 200, 200])
    assert.ok(resetGets > 0, 'some GETs met the reset')
    assert.ok(resetPosts > 0, 'some POSTs met the reset')
    assert.equal(post.filter((s) => s === 502).length, resetPosts, 'each reset POST is answered 502, not retried')
    assert.equal(echoPosts, 4 - resetPosts, 'a reset POST never reaches the other upstream')
  })

  test('every upstream down: 502 naming no internal address', async () => {
    const res = await client.request({ path: '/', method: 'GET', headers: { host: 'down.test.local' } })
    const text = await res.body.text()
    assert.equal(res.statusCode, 502)
    assert.doesNotMatch(text, /127\.0\.0\.1|\d{4,5}/)
    const down = await healthOf(deadUrl, 'down.test.local/')
    assert.equal(down.healthy, false, 'the refused upstream is ejected')
    assert.equal(down.lastError, 'ECONNREFUSED')
    // A reload keeps what it knew about upstreams that stay.
    const reloaded = await proxy.reload(config)
    assert.equal(reloaded.applied, true)
    assert.equal((await healthOf(deadUrl, 'down.test.local/')).healthy, false, 'still ejected after a reload')
  })

  test('a websocket upgrade to an unreachable upstream gets 502 before any 101, naming no internal address', async () => {
    const reply = await rawTls({
      port,
      servername: 'ws.test.local',
      ca: certs.ca,
      payload:
        'GET /chat HTTP/1.1\r\nHost: ws.test.local\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
      timeoutMs: 5000,
    })
    assert.match(reply.text, /^HTTP\/1\.1 502 /)
    assert.doesNotMatch(reply.text, /\b101\b/)
    assert.doesNotMatch(reply.text, /127\.0\.0\.1/)
    assert.doesNotMatch(reply.text, new RegExp(deadUrl.split(':').at(-1)!))
    assert.equal(reply.closed, true, 'the connection is closed after the 502')
  })
})
