// The admin listener and the access log against what a test did: requests by route and status (200 over HTTP/1.1
// and HTTP/2, 404 without a matching prefix, 502 from a dead upstream), upstream latency observations, TLS
// handshakes for known and unknown names, certificate expiry, reloads applied and refused, scraped from /metrics
// with a Prometheus text parser; /status as JSON and as the HTML page rendered by headless Chromium; the bearer
// token; one access-log JSON line per request with its fields.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { accessSync, constants } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { after, before, describe, test } from 'node:test'
import { connect as tlsConnect } from 'node:tls'
import { createProxy, type ProxyHandle, type ProxyOptions } from '../src/index.js'
import { type CertFiles, certFiles, h1, h2, startUpstream, type Upstream } from './helpers.js'
import { histogramTotal, parseMetrics, sample } from './prometheus.js'

const HOST = 'metrics.admin.test'
const DEAD = 'dead.admin.test'
const CHROMIUM = process.env['CHROMIUM_BIN'] ?? '/usr/bin/chromium'

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}

async function deadUrl(): Promise<string> {
  const server = createServer()
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as { port: number }).port
  await new Promise<void>((r) => server.close(() => r()))
  return `http://127.0.0.1:${port}`
}

/** A TLS handshake for a name no certificate covers: refused by the server. */
function unknownHandshake(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'unknown.admin.test', rejectUnauthorized: false })
    socket.on('secureConnect', () => reject(new Error('an unknown name must not get a certificate')))
    socket.on('error', () => resolve())
    socket.on('close', () => resolve())
  })
}

describe('admin listener and access log', () => {
  let upstream: Upstream
  let certs: CertFiles
  let proxy: ProxyHandle
  let port: number
  let admin: string
  let options: ProxyOptions
  const lines: Array<Record<string, unknown>> = []

  before(async () => {
    upstream = await startUpstream('metrics')
    certs = await certFiles([HOST, DEAD])
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line))
        done()
      },
    })
    options = {
      logger: { level: 'info', stream: sink },
      https: { host: '127.0.0.1', port: 0 },
      http: false,
      shutdown: { signals: false },
      admin: { host: '127.0.0.1', port: 0 },
      accessLog: true,
      certificates: [{ cert: certs.cert, key: certs.key }],
      routes: [
        { host: HOST, path: '/app', upstream: upstream.url },
        { host: DEAD, upstream: await deadUrl() },
      ],
    }
    proxy = await createProxy(options)
    port = (await proxy.listen()).https.port
    admin = `http://127.0.0.1:${proxy.adminAddress()!.port}`
  })
  after(async () => {
    await proxy?.close()
    await upstream?.close()
    await certs?.remove()
  })

  let lastText = ''
  const scrape = async () => {
    const res = await fetch(`${admin}/metrics`)
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type') ?? '', /text\/plain/)
    lastText = await res.text()
    return parseMetrics(lastText)
  }

  test('/metrics figures match what the test did', async () => {
    const before = await scrape()
    const hs = (outcome: string, families = before) =>
      sample(families, 'autotls_tls_handshakes_total', { outcome }) ?? 0
    // 7 HTTP/1.1 requests and 3 HTTP/2 requests on one session: 10 x 200 (8 handshakes).
    for (let i = 0; i < 7; i++)
      assert.equal((await h1({ port, host: HOST, path: `/app/${i}`, ca: certs.ca })).status, 200)
    const { connect } = await import('node:http2')
    const session = connect(`https://127.0.0.1:${port}`, { ca: certs.ca, servername: HOST })
    for (let i = 0; i < 3; i++) {
      await new Promise<void>((resolve, reject) => {
        const stream = session.request({ ':path': `/app/h2/${i}`, ':authority': HOST })
        stream.on('response', (h) => (h[':status'] === 200 ? undefined : reject(new Error(String(h[':status'])))))
        stream.resume()
        stream.on('end', resolve)
        stream.on('error', reject)
      })
    }
    session.close()
    // 2 x 404 (known host, no prefix), 4 x 502 (dead upstream), 3 handshakes for an unknown name.
    for (let i = 0; i < 2; i++) assert.equal((await h1({ port, host: HOST, path: '/other', ca: certs.ca })).status, 404)
    for (let i = 0; i < 4; i++) assert.equal((await h2({ port, host: DEAD, ca: certs.ca })).status, 502)
    for (let i = 0; i < 3; i++) await unknownHandshake(port)

    const after = await scrape()
    assert.equal(sample(after, 'autotls_proxy_requests_total', { route: `${HOST}/app`, status: '200' }), 10)
    assert.equal(sample(after, 'autotls_proxy_requests_total', { route: '(no route)', status: '404' }), 2)
    assert.equal(sample(after, 'autotls_proxy_requests_total', { route: `${DEAD}/`, status: '502' }), 4)
    // Observed for proxied answers only (not the 404s nor the 502s): all 10 are the /app route's.
    assert.equal(histogramTotal(after, 'autotls_upstream_response_seconds'), 10)
    assert.match(lastText, new RegExp(`^autotls_upstream_response_seconds_count\\{route="${HOST}/app"\\} 10$`, 'm'))
    assert.equal(hs('certificate', after) - hs('certificate'), 7 + 1 + 2 + 4)
    assert.equal(hs('unknown_name', after) - hs('unknown_name'), 3)
    const notAfter = new X509Certificate(await readFile(certs.cert)).validTo
    assert.equal(
      sample(after, 'autotls_certificate_not_after_seconds', { name: HOST, source: 'file' }),
      Date.parse(notAfter) / 1000,
    )
    assert.equal(sample(after, 'autotls_upstream_healthy', { route: `${HOST}/app`, upstream: upstream.url }), 1)

    // Reloads: one applied, one refused.
    assert.equal((await proxy.reload({ ...options })).applied, true)
    assert.equal((await proxy.reload({ ...options, routes: [{ host: HOST, upstream: 'nope' }] })).applied, false)
    const reloaded = await scrape()
    assert.equal(sample(reloaded, 'autotls_config_reloads_total', { result: 'applied' }), 1)
    assert.equal(sample(reloaded, 'autotls_config_reloads_total', { result: 'refused' }), 1)

    // The access log: one JSON line per request, with its fields.
    const access = lines.filter((l) => l['type'] === 'access')
    assert.equal(access.length, 16)
    const first = access.find((l) => l['path'] === '/app/0')!
    assert.deepEqual(
      { host: first['host'], method: first['method'], status: first['status'], route: first['route'] },
      { host: HOST, method: 'GET', status: 200, route: `${HOST}/app` },
    )
    assert.equal(first['upstream'], upstream.url)
    assert.ok(typeof first['time'] === 'number' && typeof first['durationMs'] === 'number')
    assert.ok((first['bytes'] as number) > 50, 'bytes of the proxied body counted')
    assert.equal(access.filter((l) => l['status'] === 502).length, 4)
  })

  test('/status as JSON; as HTML rendered by headless Chromium', { skip: !executable(CHROMIUM) }, async () => {
    const status = (await (await fetch(`${admin}/status`)).json()) as {
      certificates: Array<{ name: string; source: string; issuer: string }>
      routes: Array<{ route: string; upstreams: Array<{ url: string; healthy: boolean }> }>
    }
    assert.deepEqual(status.certificates.map((c) => [c.name, c.source]).sort(), [
      [DEAD, 'file'],
      [HOST, 'file'],
    ])
    assert.equal(status.routes.find((r) => r.route === `${HOST}/app`)?.upstreams[0]?.healthy, true)
    const home = await mkdtemp(join(tmpdir(), 'admin-browser-'))
    try {
      const dom = await new Promise<string>((resolve, reject) => {
        execFile(
          CHROMIUM,
          [
            '--headless',
            '--no-sandbox',
            '--disable-gpu',
            '--no-first-run',
            '--disable-background-networking',
            '--disable-component-update',
            '--disable-dev-shm-usage',
            `--user-data-dir=${join(home, 'profile')}`,
            '--dump-dom',
            `${admin}/status?format=html`,
          ],
          { env: { ...process.env, HOME: home }, timeout: 60_000, maxBuffer: 16 * 1024 * 1024 },
          (error, stdout, stderr) => (error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(stdout)),
        )
      })
      const table = /<table id="certificates">([\s\S]*?)<\/table>/.exec(dom)?.[1] ?? ''
      const rows = table.match(/<tr><td>[^<]+<\/td><td>file<\/td>/g) ?? []
      assert.equal(rows.length, 2, dom)
      assert.match(table, new RegExp(`<td>${HOST.replace(/\./g, '\\.')}</td>`))
      assert.match(dom, /<table id="routes">[\s\S]*<td class="up">up<\/td>/)
    } finally {
      await rm(home, { recursive: true, force: true })
    }
  })

  test('a token, when set, is required', async () => {
    const secured = await createProxy({
      ...options,
      logger: false,
      accessLog: false,
      admin: { host: '127.0.0.1', port: 0, token: 'a-token-of-some-length-0123' },
    })
    try {
      await secured.listen()
      const url = `http://127.0.0.1:${secured.adminAddress()!.port}`
      assert.equal((await fetch(`${url}/metrics`)).status, 401)
      assert.equal((await fetch(`${url}/status`, { headers: { authorization: 'Bearer wrong' } })).status, 401)
      const ok = await fetch(`${url}/metrics`, { headers: { authorization: 'Bearer a-token-of-some-length-0123' } })
      assert.equal(ok.status, 200)
    } finally {
      await secured.close()
    }
  })
})
