// Proxy correctness and hardening, one test per concern: forwarded headers (untrusted and trusted peers), hop-by-hop
// stripping, request smuggling shapes, prefix-escape shapes, header and body size limits, slow clients, and
// upstream failures (502 / 504). Raw TLS sockets send what well-behaved clients refuse to.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { createProxy, type ProxyHandle } from '../src/index.js'
import { type CertFiles, certFiles, h1, h2, json, rawTls, startUpstream, type Upstream } from './helpers.js'

const HOST = 'sec.test.local'

describe('proxy correctness and limits', () => {
  let certs: CertFiles
  let upstream: Upstream
  let slow: Upstream
  let proxy: ProxyHandle
  let trusting: ProxyHandle
  let port: number
  let trustingPort: number

  before(async () => {
    certs = await certFiles([HOST])
    upstream = await startUpstream('sec', (req, res, body) => {
      if (req.url === '/hop-response') {
        res.setHeader('x-internal', 'secret')
        res.setHeader('connection', 'x-internal')
        res.setHeader('keep-alive', 'timeout=99')
        res.setHeader('proxy-authenticate', 'Basic')
        res.end('ok')
        return
      }
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ url: req.url, headers: req.headers, bodyLength: body.length }))
    })
    slow = await startUpstream('slow', (_req, res) => {
      setTimeout(() => res.end('too late'), 2_000).unref()
    })
    const common = {
      logger: false,
      http: false as const,
      certificates: [{ cert: certs.cert, key: certs.key }],
      limits: { bodyBytes: 1024, headerBytes: 8 * 1024, headersTimeoutMs: 500, requestTimeoutMs: 2_000 },
    }
    proxy = await createProxy({
      ...common,
      https: { host: '127.0.0.1', port: 0 },
      routes: [
        { host: HOST, upstream: upstream.url },
        { host: HOST, path: '/api', upstream: upstream.url, rewritePrefix: '/internal/api' },
        { host: HOST, path: '/down', upstream: 'http://127.0.0.1:9', rewritePrefix: '' },
        { host: HOST, path: '/slow', upstream: slow.url, timeouts: { responseMs: 300 } },
      ],
    })
    port = (await proxy.listen()).https.port
    trusting = await createProxy({
      ...common,
      https: { host: '127.0.0.1', port: 0 },
      trustedProxies: ['loopback'],
      routes: [{ host: HOST, upstream: upstream.url }],
    })
    trustingPort = (await trusting.listen()).https.port
  })
  after(async () => {
    await Promise.all([proxy?.close(), trusting?.close()])
    await Promise.all([upstream?.close(), slow?.close(), certs?.remove()])
  })

  const lying = {
    'x-forwarded-for': '6.6.6.6',
    'x-forwarded-proto': 'http',
    'x-forwarded-host': 'evil.example',
    'x-real-ip': '6.6.6.6',
    forwarded: 'for=6.6.6.6;proto=http',
  }

  test('forwarded headers come from the connection; a client cannot forge them', async () => {
    for (const send of [h1, h2]) {
      const res = await send({ port, host: HOST, path: '/fwd', headers: lying, ca: certs.ca })
      const headers = json(res)['headers'] as Record<string, string>
      assert.equal(headers['x-forwarded-for'], '127.0.0.1')
      assert.equal(headers['x-real-ip'], '127.0.0.1')
      assert.equal(headers['x-forwarded-proto'], 'https')
      assert.equal(headers['x-forwarded-host'], HOST)
      assert.equal(headers['forwarded'], undefined)
      assert.equal(headers['host'], HOST, 'the client Host is preserved by default')
    }
  })

  test('from a trusted proxy, the chain is kept and extended', async () => {
    const res = await h1({ port: trustingPort, host: HOST, path: '/fwd', headers: lying, ca: certs.ca })
    const headers = json(res)['headers'] as Record<string, string>
    assert.equal(headers['x-forwarded-for'], '6.6.6.6, 127.0.0.1')
    assert.equal(headers['x-forwarded-proto'], 'http')
    assert.equal(headers['x-forwarded-host'], 'evil.example')
    assert.equal(headers['forwarded'], 'for=6.6.6.6;proto=http')
  })

  test('hop-by-hop headers are stripped both ways, including those named in Connection', async () => {
    const res = await rawTls({
      port,
      servername: HOST,
      ca: certs.ca,
      payload: [
        'GET /hop HTTP/1.1',
        `Host: ${HOST}`,
        'Connection: keep-alive, X-Hop-Secret',
        'X-Hop-Secret: 1',
        'Keep-Alive: timeout=5',
        'Proxy-Connection: keep-alive',
        'Proxy-Authorization: Basic Zm9vOmJhcg==',
        'TE: trailers',
        'Trailer: X-Foo',
        'X-End-To-End: kept',
        '',
        '',
      ].join('\r\n'),
      timeoutMs: 1000,
    })
    const body = res.text.slice(res.text.indexOf('\r\n\r\n') + 4)
    const headers = (JSON.parse(body) as { headers: Record<string, string> }).headers
    for (const name of ['x-hop-secret', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer']) {
      assert.equal(headers[name], undefined, `${name} reached the upstream`)
    }
    assert.equal(headers['x-end-to-end'], 'kept')

    for (const send of [h1, h2]) {
      const back = await send({ port, host: HOST, path: '/hop-response', ca: certs.ca })
      assert.equal(back.status, 200)
      assert.equal(back.headers['x-internal'], undefined, 'header named in the upstream Connection leaked')
      assert.equal(back.headers['proxy-authenticate'], undefined)
      assert.notEqual(back.headers['keep-alive'], 'timeout=99')
    }
  })

  test('request smuggling shapes are rejected with 400 and a closed connection; the upstream sees nothing', async () => {
    const before = upstream.seen.length
    const shapes: Record<string, string[]> = {
      'Content-Length + Transfer-Encoding': ['Content-Length: 4', 'Transfer-Encoding: chunked'],
      'duplicate Content-Length (different)': ['Content-Length: 4', 'Content-Length: 5'],
      'duplicate Content-Length (same)': ['Content-Length: 4', 'Content-Length: 4'],
      'Content-Length list': ['Content-Length: 4, 4'],
      'Transfer-Encoding not ending in chunked': ['Transfer-Encoding: chunked, identity'],
      'obfuscated Transfer-Encoding': ['Transfer-Encoding: xchunked'],
      'Transfer-Encoding with obs-fold': ['Transfer-Encoding:', ' chunked'],
      'space before colon': ['Transfer-Encoding : chunked'],
    }
    for (const [name, lines] of Object.entries(shapes)) {
      const res = await rawTls({
        port,
        servername: HOST,
        ca: certs.ca,
        payload: [
          `POST /smuggle HTTP/1.1`,
          `Host: ${HOST}`,
          ...lines,
          '',
          '0\r\n\r\nGET /smuggled HTTP/1.1',
          `Host: ${HOST}`,
          '',
          '',
        ].join('\r\n'),
        timeoutMs: 2000,
      })
      assert.match(res.text, /^HTTP\/1\.1 400 /, `${name}: ${res.text.slice(0, 80)}`)
      assert.ok(res.closed, `${name}: connection left open`)
    }
    assert.equal(upstream.seen.length, before, 'a smuggling shape reached the upstream')
  })

  test('prefix rewrites cannot escape their prefix', async () => {
    const before = upstream.seen.length
    const shapes = [
      '/api/../admin',
      '/api/./admin',
      '/api/%2e%2e/admin',
      '/api/%2E%2E/admin',
      '/api/.%2e/admin',
      '/api/..%2fadmin',
      '/api/%2e%2e%2fadmin',
      '/api/..%5cadmin',
      '/api\\..\\admin',
      '/api/..;/admin',
      '/api/;/admin',
      '/api/%252e%252e/admin',
      '/api/%00/admin',
      '/api/%zz',
      '/..',
    ]
    for (const path of shapes) {
      const res = await rawTls({
        port,
        servername: HOST,
        ca: certs.ca,
        payload: `GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`,
      })
      assert.match(res.text, /^HTTP\/1\.1 400 /, `${path}: ${res.text.slice(0, 120)}`)
    }
    for (const path of ['/api/%2e%2e/admin', '/api/..;/admin']) {
      const res = await h2({ port, host: HOST, path, ca: certs.ca })
      assert.equal(res.status, 400, `h2 ${path}`)
    }
    assert.equal(upstream.seen.length, before, 'an escape shape reached the upstream')
    // A legitimate path with dots still works, rewritten under its prefix.
    const ok = await h1({ port, host: HOST, path: '/api/v1.2/file..name/.well-known', ca: certs.ca })
    assert.equal(json(ok)['url'], '/internal/api/v1.2/file..name/.well-known')
  })

  test('header and body size limits: 431 and 413', async () => {
    const big = 'x'.repeat(10 * 1024)
    const headerRes = await rawTls({
      port,
      servername: HOST,
      ca: certs.ca,
      payload: `GET / HTTP/1.1\r\nHost: ${HOST}\r\nX-Big: ${big}\r\n\r\n`,
    })
    assert.match(headerRes.text, /^HTTP\/1\.1 431 /)
    // HTTP/2: 431 from the proxy before the client acknowledged our SETTINGS, a stream reset after.
    const h2Header = await h2({ port, host: HOST, headers: { 'x-big': big }, ca: certs.ca }).then(
      (r) => r.status,
      (err: Error) => err.message,
    )
    assert.ok(h2Header === 431 || /ENHANCE_YOUR_CALM|REFUSED|PROTOCOL/.test(String(h2Header)), String(h2Header))

    const declared = await h1({
      port,
      host: HOST,
      method: 'POST',
      path: '/upload',
      body: 'y'.repeat(2048),
      ca: certs.ca,
    })
    assert.equal(declared.status, 413)
    assert.equal(json(declared)['code'], 'FPROXY_BODY_TOO_LARGE')
    const chunked = await rawTls({
      port,
      servername: HOST,
      ca: certs.ca,
      payload: `POST /upload HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n${'800\r\n'}${'z'.repeat(2048)}\r\n0\r\n\r\n`,
    })
    assert.match(chunked.text, /^HTTP\/1\.1 413 /)
    const h2Body = await h2({ port, host: HOST, method: 'POST', path: '/upload', body: 'w'.repeat(4096), ca: certs.ca })
    assert.equal(h2Body.status, 413)
    const small = await h2({ port, host: HOST, method: 'POST', path: '/upload', body: 'small', ca: certs.ca })
    assert.equal(json(small)['bodyLength'], 5)
  })

  test('slow clients are timed out (headers not finished within headersTimeoutMs)', async () => {
    const res = await rawTls({
      port,
      servername: HOST,
      ca: certs.ca,
      payload: `GET / HTTP/1.1\r\nHost: ${HOST}\r\nX-Slow: `,
      timeoutMs: 5000,
    })
    assert.ok(res.closed, 'the server kept a stalled request open')
    assert.ok(res.ms < 4000, `closed after ${res.ms} ms`)
    assert.match(res.text, /^(HTTP\/1\.1 408 |$)/)
  })

  test('upstream down: 502; upstream slow: 504; clear bodies', async () => {
    for (const send of [h1, h2]) {
      const down = await send({ port, host: HOST, path: '/down/x', ca: certs.ca })
      assert.equal(down.status, 502)
      assert.equal(json(down)['code'], 'FPROXY_UPSTREAM_UNAVAILABLE')
      assert.match(String(json(down)['message']), /sec\.test\.local\/down is unavailable \(connection refused\)/)
      const late = await send({ port, host: HOST, path: '/slow/x', ca: certs.ca })
      assert.equal(late.status, 504)
      assert.equal(json(late)['code'], 'FPROXY_UPSTREAM_TIMEOUT')
    }
  })
})
