// Check 17: size limits and slow clients at the proxy. Oversized header blocks (one big header, many small ones, a
// long URL, a big cookie; HTTP/1.1 and HTTP/2) get 431 (or the HTTP/2 stream is refused); oversized bodies (declared,
// chunked, HTTP/2, behind Expect: 100-continue) get 413 and never reach the upstream in full. Then 2,000 slowloris
// connections (1,800 trickling their headers, 200 trickling a body) are all closed within the configured timeouts
// while a normal client keeps making requests, >= 99% of which must succeed.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { type TLSSocket, connect as tlsConnect } from 'node:tls'
import { createProxy, type ProxyHandle } from '@autotls/proxy-preset'
import { figure, percentile, sleep } from './helpers.js'
import {
  type CertFiles,
  h2Request,
  proxyCertificate,
  rawTls,
  recordingUpstream,
  type Upstream,
} from './proxy-fixture.js'

const HOST = 'limits.reliability.test'
const HEADER_BYTES = 8 * 1024
const BODY_BYTES = 64 * 1024
const HEADERS_TIMEOUT_MS = 2000
const REQUEST_TIMEOUT_MS = 5000
const SLOW_HEADERS = 1800
const SLOW_BODIES = 200

let certs: CertFiles
let upstream: Upstream
let proxy: ProxyHandle
let port: number

before(async () => {
  certs = await proxyCertificate([HOST])
  upstream = await recordingUpstream()
  proxy = await createProxy({
    logger: false,
    http: false,
    https: { host: '127.0.0.1', port: 0 },
    certificates: [{ cert: certs.cert, key: certs.key }],
    limits: {
      headerBytes: HEADER_BYTES,
      bodyBytes: BODY_BYTES,
      headersTimeoutMs: HEADERS_TIMEOUT_MS,
      requestTimeoutMs: REQUEST_TIMEOUT_MS,
      handshakeTimeoutMs: 3000,
    },
    routes: [{ host: HOST, upstream: upstream.url }],
  })
  port = (await proxy.listen()).https.port
})
after(async () => {
  await proxy?.close()
  await Promise.all([upstream?.close(), certs?.remove()])
})

test('check 17a: oversized headers get 431, oversized bodies 413; none reaches the upstream in full', async () => {
  const big = 'x'.repeat(HEADER_BYTES + 1024)
  const headerCases: Array<[string, string]> = [
    ['one big header', `GET / HTTP/1.1\r\nHost: ${HOST}\r\nX-Big: ${big}\r\nConnection: close\r\n\r\n`],
    [
      'many small headers',
      `GET / HTTP/1.1\r\nHost: ${HOST}\r\n${Array.from({ length: 300 }, (_, i) => `X-H${i}: ${'y'.repeat(30)}\r\n`).join('')}Connection: close\r\n\r\n`,
    ],
    ['long URL', `GET /${big} HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`],
    ['big cookie', `GET / HTTP/1.1\r\nHost: ${HOST}\r\nCookie: a=${big}\r\nConnection: close\r\n\r\n`],
  ]
  const results: string[] = []
  const before = upstream.seen.length
  for (const [name, payload] of headerCases) {
    const reply = await rawTls(port, HOST, certs.ca, payload)
    results.push(`${name}: ${reply.statuses[0] ?? 'closed'}`)
    assert.equal(reply.statuses[0], 431, `${name}: ${reply.text.slice(0, 80)}`)
  }
  const h2Big = await h2Request(port, HOST, certs.ca, { ':path': '/', 'x-big': big })
  results.push(`HTTP/2 big header: ${h2Big.status || 'stream refused'}`)
  assert.ok(h2Big.status === 431 || h2Big.status === 0, String(h2Big.status))

  const body = 'b'.repeat(BODY_BYTES + 4096)
  const chunked = `${(BODY_BYTES + 4096).toString(16)}\r\n${body}\r\n0\r\n\r\n`
  const bodyCases: Array<[string, string]> = [
    [
      'declared',
      `POST /u HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
    ],
    ['declared, body not sent', `POST /u HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: ${10 * BODY_BYTES}\r\n\r\n`],
    [
      'chunked',
      `POST /u HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${chunked}`,
    ],
    [
      'Expect: 100-continue',
      `POST /u HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`,
    ],
  ]
  for (const [name, payload] of bodyCases) {
    const reply = await rawTls(port, HOST, certs.ca, payload)
    results.push(`body ${name}: ${reply.statuses.join('/') || 'closed'}`)
    assert.equal(reply.statuses.at(-1), 413, `${name}: ${reply.text.slice(0, 80)}`)
  }
  const h2Body = await h2Request(port, HOST, certs.ca, { ':path': '/u', ':method': 'POST' }, body)
  results.push(`HTTP/2 body: ${h2Body.status}`)
  assert.equal(h2Body.status, 413)
  const fullBodies = upstream.seen.slice(before).filter((s) => s.body.length > BODY_BYTES).length
  const headerLeaks = upstream.seen.slice(before).filter((s) => JSON.stringify(s.headers).length > HEADER_BYTES).length
  figure(
    `check 17a: limits ${HEADER_BYTES / 1024} KiB headers / ${BODY_BYTES / 1024} KiB body: ${results.join(', ')}; ` +
      `${headerLeaks} oversized header blocks and ${fullBodies} oversized bodies reached the upstream`,
  )
  assert.equal(fullBodies, 0)
  assert.equal(headerLeaks, 0)
})

test(`check 17b: ${SLOW_HEADERS + SLOW_BODIES} slowloris connections closed in time; >= 99% of normal requests succeed`, async () => {
  const closedAfter: Array<{ kind: 'headers' | 'body'; ms: number }> = []
  const sockets = new Set<TLSSocket>()
  let opened = 0
  let openFailed = 0
  const open = (kind: 'headers' | 'body') =>
    new Promise<void>((resolve) => {
      const socket = tlsConnect({
        host: '127.0.0.1',
        port,
        servername: HOST,
        ca: certs.ca,
        ALPNProtocols: ['http/1.1'],
      })
      sockets.add(socket)
      let started = 0
      let trickle: NodeJS.Timeout | undefined
      socket.on('secureConnect', () => {
        opened++
        started = Date.now()
        socket.write(
          kind === 'headers'
            ? `GET / HTTP/1.1\r\nHost: ${HOST}\r\nX-Slow: `
            : `POST /u HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: ${BODY_BYTES - 1024}\r\n\r\n`,
        )
        // One byte every 500 ms: always active, never done.
        trickle = setInterval(() => socket.write('a'), 500)
        resolve()
      })
      socket.on('error', () => {})
      socket.on('close', () => {
        clearInterval(trickle)
        sockets.delete(socket)
        if (started > 0) closedAfter.push({ kind, ms: Date.now() - started })
        else {
          openFailed++
          resolve()
        }
      })
      socket.resume()
    })
  // A normal client all along: a new connection per request.
  let ok = 0
  let failed = 0
  let running = true
  const normal = (async () => {
    while (running) {
      const res = await h2Request(port, HOST, certs.ca, { ':path': '/normal' })
      if (res.status === 200) ok++
      else failed++
      await sleep(20)
    }
  })()
  const started = Date.now()
  const kinds = [...Array(SLOW_HEADERS).fill('headers'), ...Array(SLOW_BODIES).fill('body')] as Array<
    'headers' | 'body'
  >
  for (let i = 0; i < kinds.length; i += 100) await Promise.all(kinds.slice(i, i + 100).map(open))
  const openMs = Date.now() - started
  const deadline = Date.now() + REQUEST_TIMEOUT_MS + 10_000
  while (closedAfter.length + openFailed < kinds.length && Date.now() < deadline) await sleep(200)
  running = false
  await normal
  const stillOpen = sockets.size
  for (const s of sockets) s.destroy()
  const headerMs = closedAfter.filter((c) => c.kind === 'headers').map((c) => c.ms)
  const bodyMs = closedAfter.filter((c) => c.kind === 'body').map((c) => c.ms)
  const successRate = ok / Math.max(1, ok + failed)
  figure(
    `check 17b: ${opened} slowloris connections opened in ${(openMs / 1000).toFixed(1)} s (${openFailed} refused at TLS): ` +
      `${SLOW_HEADERS} trickling headers closed after p50 ${percentile(headerMs, 50)} / max ${Math.max(...headerMs)} ms ` +
      `(headersTimeout ${HEADERS_TIMEOUT_MS} ms), ${SLOW_BODIES} trickling a body after p50 ${percentile(bodyMs, 50)} / max ${Math.max(...bodyMs)} ms ` +
      `(requestTimeout ${REQUEST_TIMEOUT_MS} ms); ${stillOpen} still open; normal requests ${ok}/${ok + failed} ok (${(successRate * 100).toFixed(1)}%)`,
  )
  assert.equal(stillOpen, 0)
  // Node checks these timeouts every connectionsCheckingInterval (half the shortest): allow that plus load slack.
  assert.ok(Math.max(...headerMs) <= HEADERS_TIMEOUT_MS * 1.5 + 3000, `headers: ${Math.max(...headerMs)} ms`)
  assert.ok(Math.max(...bodyMs) <= REQUEST_TIMEOUT_MS + HEADERS_TIMEOUT_MS + 3000, `body: ${Math.max(...bodyMs)} ms`)
  assert.ok(successRate >= 0.99, `only ${(successRate * 100).toFixed(1)}% of normal requests succeeded`)
})
