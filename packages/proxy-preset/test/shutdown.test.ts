// Graceful shutdown: in-flight requests finish, new connections are refused, the whole close is bounded by
// shutdown.graceMs, and SIGTERM does all of it in a real process that then exits 0.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { connect } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { createProxy } from '../src/index.js'
import { type CertFiles, certFiles, h1, h2, rawTls, startUpstream, type Upstream } from './helpers.js'

const HOST = 'signal.test.local'

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    socket.once('connect', () => {
      socket.destroy()
      resolve(false)
    })
    socket.once('error', () => resolve(true))
  })
}

describe('graceful shutdown', () => {
  let certs: CertFiles
  let slow: Upstream
  let hang: Upstream
  before(async () => {
    certs = await certFiles([HOST])
    slow = await startUpstream('slow', (_req, res) => {
      setTimeout(() => res.end('finished'), 400)
    })
    hang = await startUpstream('hang', () => {})
  })
  after(async () => {
    await Promise.all([slow?.close(), hang?.close(), certs?.remove()])
  })

  async function proxyFor(upstream: string, graceMs: number) {
    const proxy = await createProxy({
      logger: false,
      https: { host: '127.0.0.1', port: 0 },
      http: false,
      certificates: [{ cert: certs.cert, key: certs.key }],
      shutdown: { graceMs, signals: false },
      routes: [{ host: HOST, upstream }],
    })
    return { proxy, port: (await proxy.listen()).https.port }
  }

  test('in-flight requests (HTTP/1.1 and HTTP/2) finish; new connections are refused', async () => {
    const { proxy, port } = await proxyFor(slow.url, 5_000)
    const inFlight = [h1({ port, host: HOST, ca: certs.ca }), h2({ port, host: HOST, ca: certs.ca })]
    while (slow.seen.length < 2) await new Promise((r) => setTimeout(r, 5))
    const started = Date.now()
    const closing = proxy.close()
    // close() stops listening once its pre-close work has run: wait for that, not for a fixed time.
    const deadline = Date.now() + 3_000
    while (proxy.app.server.listening && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5))
    assert.equal(proxy.app.server.listening, false, 'close() stopped listening')
    assert.ok(await refused(port), 'still accepting after close()')
    const replies = await Promise.all(inFlight)
    for (const reply of replies) {
      assert.equal(reply.status, 200)
      assert.equal(reply.body, 'finished')
    }
    await closing
    assert.ok(Date.now() - started < 3_000, `close took ${Date.now() - started} ms`)
  })

  test('HTTP/1.1 keep-alive: a response finished while draining ends its connection; no per-request hook', async () => {
    const { proxy, port } = await proxyFor(slow.url, 5_000)
    // Draining costs nothing per request until it starts: no onSend hook of ours on any route.
    const routes = proxy.app.printRoutes({ includeHooks: true, commonPrefix: false }).split('\n')
    const onSend = routes.filter((l) => l.includes('(onSend)') && !l.trim().endsWith('["headRouteOnSendHandler()"]'))
    assert.deepEqual(onSend, [])
    const payload = `GET / HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`
    const before = slow.seen.length
    const inFlight = rawTls({ port, servername: HOST, ca: certs.ca, payload, timeoutMs: 3_000 })
    while (slow.seen.length === before) await new Promise((r) => setTimeout(r, 5))
    const closing = proxy.close()
    const reply = await inFlight
    assert.match(reply.text, /^HTTP\/1\.1 200 /)
    assert.match(reply.text, /\r\nconnection: close\r\n/i)
    assert.ok(reply.closed, 'the proxy ended the connection')
    await closing
  })

  test('HTTP/1.1 keep-alive: not draining, the connection stays open', async () => {
    const { proxy, port } = await proxyFor(slow.url, 5_000)
    try {
      const payload = `GET / HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`
      const reply = await rawTls({ port, servername: HOST, ca: certs.ca, payload, timeoutMs: 1_000 })
      assert.match(reply.text, /^HTTP\/1\.1 200 /)
      assert.match(reply.text, /\r\nconnection: keep-alive\r\n/i)
      assert.equal(reply.closed, false)
    } finally {
      await proxy.close()
    }
  })

  test('the grace period bounds the close when an upstream never answers', async () => {
    const { proxy, port } = await proxyFor(hang.url, 500)
    const stuck = h1({ port, host: HOST, ca: certs.ca }).then(
      () => 'answered',
      () => 'cut',
    )
    while (hang.seen.length < 1) await new Promise((r) => setTimeout(r, 5))
    const started = Date.now()
    await proxy.close()
    const ms = Date.now() - started
    assert.ok(ms >= 400 && ms < 3_000, `close took ${ms} ms with graceMs 500`)
    assert.equal(await stuck, 'cut')
  })

  test('SIGTERM: the in-flight request finishes and the process exits 0', async () => {
    const fixture = fileURLToPath(new URL('./fixtures/signal-proxy.ts', import.meta.url))
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', '--conditions=source', fixture, certs.cert, certs.key, slow.url],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    )
    try {
      const [line] = (await once(child.stdout!, 'data')) as [Buffer]
      const { port } = JSON.parse(line.toString()) as { port: number }
      const before = slow.seen.length
      const inFlight = h1({ port, host: HOST, ca: certs.ca })
      while (slow.seen.length === before) await new Promise((r) => setTimeout(r, 5))
      child.kill('SIGTERM')
      const reply = await inFlight
      assert.equal(reply.status, 200)
      assert.equal(reply.body, 'finished')
      const [code] = (await once(child, 'exit')) as [number | null]
      assert.equal(code, 0)
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL')
    }
  })
})
