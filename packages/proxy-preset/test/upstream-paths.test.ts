// The path and query an upstream receives, for every request shape around a route prefix, with and without a
// rewrite, over HTTP/1.1, HTTP/2 and websockets. The contract: rewritePrefix + the path after the route's prefix +
// the client's query, byte for byte ('/' when the path would be empty); the internal `/_vhost/<id>` prefix never
// reaches an upstream. A path that would start with `//` upstream is refused (400) and reaches nothing.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import WebSocket, { WebSocketServer } from 'ws'
import { createProxy, type ProxyHandle } from '../src/index.js'
import { type CertFiles, certFiles, h1, h2, json, startUpstream, type Upstream } from './helpers.js'

const QUERY = '?q=1&r=%2F+%20&flag'

interface Case {
  host: string
  path: string
  rewritePrefix: string
}

const CASES: Case[] = []
for (const path of ['/', '/api']) {
  for (const rewritePrefix of ['', '/v2', path]) {
    CASES.push({ host: `p${CASES.length}.paths.test.local`, path, rewritePrefix })
  }
}

/** The request paths tried against a route prefix P: P, P?q, P/, P/?q, P/x, P/x?q, P//x. */
function shapes(path: string): string[] {
  const base = path === '/' ? '' : path
  return [path, `${path}${QUERY}`, `${base}/`, `${base}/${QUERY}`, `${base}/x`, `${base}/x${QUERY}`, `${base}//x`]
}

/** What the upstream must receive for `url` on a route, or undefined when the proxy must refuse it (400). */
function expected({ path, rewritePrefix }: Case, url: string): string | undefined {
  const q = url.indexOf('?')
  const pathname = q < 0 ? url : url.slice(0, q)
  const query = q < 0 ? '' : url.slice(q)
  const prefix = path === '/' ? '' : path
  const rewrite = rewritePrefix === '/' ? '' : rewritePrefix
  assert.ok(pathname.startsWith(prefix))
  const upstreamPath = rewrite + pathname.slice(prefix.length) || '/'
  return upstreamPath.startsWith('//') ? undefined : upstreamPath + query
}

describe('upstream paths: rewritePrefix x request shape', () => {
  let up: Upstream
  let other: Upstream
  let certs: CertFiles
  let proxy: ProxyHandle
  let port: number
  const wsSeen: string[] = []

  before(async () => {
    up = await startUpstream('up')
    other = await startUpstream('other')
    new WebSocketServer({ server: up.server }).on('connection', (socket, req) => {
      wsSeen.push(req.url ?? '')
      socket.close()
    })
    certs = await certFiles(['*.paths.test.local'])
    proxy = await createProxy({
      logger: false,
      https: { host: '127.0.0.1', port: 0 },
      http: false,
      certificates: [{ cert: certs.cert, key: certs.key }],
      routes: CASES.flatMap(({ host, path, rewritePrefix }) => [
        { host, path, rewritePrefix, upstream: up.url, websocket: true },
        // A `/` route beside the prefix, as in the reported configuration.
        ...(path === '/' ? [] : [{ host, upstream: other.url }]),
      ]),
    })
    port = (await proxy.listen()).https.port
  })
  after(async () => {
    await proxy?.close()
    await Promise.all([up?.close(), other?.close(), certs?.remove()])
  })

  for (const [name, send] of [
    ['HTTP/1.1', h1],
    ['HTTP/2', h2],
  ] as const) {
    test(`${name}: exact path and query upstream, never the internal prefix`, async () => {
      for (const c of CASES) {
        for (const url of shapes(c.path)) {
          const label = `${c.path} rewritePrefix ${JSON.stringify(c.rewritePrefix)}: ${url}`
          const before = up.seen.length + other.seen.length
          const res = await send({ port, host: c.host, path: url, ca: certs.ca })
          const want = expected(c, url)
          if (want === undefined) {
            assert.equal(res.status, 400, label)
            assert.equal(up.seen.length + other.seen.length, before, `${label}: reached an upstream`)
            continue
          }
          assert.equal(res.status, 200, `${label}: ${res.body}`)
          assert.equal(json(res)['upstream'], 'up', label)
          assert.equal(json(res)['url'], want, label)
        }
      }
      for (const seen of [...up.seen, ...other.seen]) assert.doesNotMatch(seen.url, /_vhost/)
    })
  }

  test('the reported case: /api?x=1 with rewritePrefix "" reaches the upstream as /?x=1', async () => {
    const res = await h1({ port, host: CASES[3]!.host, path: '/api?x=1', ca: certs.ca })
    assert.equal(CASES[3]!.rewritePrefix, '')
    assert.equal(json(res)['url'], '/?x=1')
  })

  test('websocket: the same shapes, the same upstream paths', async () => {
    const upgrade = (host: string, url: string) =>
      new Promise<number>((resolve, reject) => {
        const ws = new WebSocket(`wss://127.0.0.1:${port}${url}`, {
          ca: certs.ca,
          servername: host,
          headers: { host },
        } as WebSocket.ClientOptions)
        ws.once('unexpected-response', (_req, res) => {
          resolve(res.statusCode ?? 0)
          ws.terminate()
        })
        ws.once('open', () => resolve(101))
        ws.once('error', reject)
      })
    for (const c of CASES) {
      for (const url of shapes(c.path)) {
        const label = `ws ${c.path} rewritePrefix ${JSON.stringify(c.rewritePrefix)}: ${url}`
        const before = wsSeen.length
        const status = await upgrade(c.host, url)
        const want = expected(c, url)
        if (want === undefined) {
          assert.equal(status, 400, label)
          assert.equal(wsSeen.length, before, `${label}: reached the upstream`)
          continue
        }
        assert.equal(status, 101, label)
        while (wsSeen.length === before) await new Promise((r) => setTimeout(r, 5))
        assert.equal(wsSeen.at(-1), want, label)
      }
    }
    for (const url of wsSeen) assert.doesNotMatch(url, /_vhost/)
  })
})

describe('upstream redirects: Location as the client must see it', () => {
  test('moved from rewritePrefix to the route path; never the internal prefix', async () => {
    const up = await startUpstream('redirect', (req, res) => {
      res.statusCode = 302
      res.setHeader('location', String(req.headers['x-location']))
      res.end()
    })
    const certs = await certFiles(['*.loc.test.local'])
    // [route path, rewritePrefix, request path, upstream Location, Location the client gets]
    const cases: Array<[string, string, string, string, string]> = [
      ['/', '', '/a', '/login', '/login'],
      ['/', '', '/a', '/login?next=%2Fa', '/login?next=%2Fa'],
      ['/', '', '/a', 'relative', 'relative'],
      ['/', '', '/a', 'https://other.test/x', 'https://other.test/x'],
      ['/', '', '/a', '//other.test/x', '//other.test/x'],
      ['/api', '', '/api/a', '/login', '/api/login'],
      ['/api', '', '/api/a', '/', '/api/'],
      ['/api', '', '/api/a', 'relative', 'relative'],
      ['/api', '/v2', '/api/a', '/v2/b', '/api/b'],
      ['/api', '/v2', '/api/a', '/v2', '/api'],
      ['/api', '/v2', '/api/a', '/v2?x=1', '/api?x=1'],
      ['/api', '/v2', '/api/a', '/v2x', '/v2x'],
      ['/api', '/v2', '/api/a', '/elsewhere', '/elsewhere'],
      ['/api', '/api', '/api/a', '/api/b', '/api/b'],
      ['/', '/v2', '/a', '/v2/b', '/b'],
      ['/', '/v2', '/a', '/v2', '/'],
      ['/', '/v2', '/a', '/v2?x=1', '/?x=1'],
    ]
    const routes = [...new Set(cases.map(([path, rewritePrefix]) => `${path} ${rewritePrefix}`))].map((key, i) => {
      const [path, rewritePrefix] = key.split(' ') as [string, string]
      return { host: `r${i}.loc.test.local`, path, rewritePrefix, upstream: up.url }
    })
    const proxy = await createProxy({
      logger: false,
      https: { host: '127.0.0.1', port: 0 },
      http: false,
      certificates: [{ cert: certs.cert, key: certs.key }],
      routes,
    })
    try {
      const port = (await proxy.listen()).https.port
      for (const [path, rewritePrefix, url, location, want] of cases) {
        const { host } = routes.find((r) => r.path === path && r.rewritePrefix === rewritePrefix)!
        for (const send of [h1, h2]) {
          const res = await send({ port, host, path: url, headers: { 'x-location': location }, ca: certs.ca })
          assert.equal(res.status, 302)
          assert.equal(
            res.headers['location'],
            want,
            `${path} rewritePrefix ${JSON.stringify(rewritePrefix)}: ${location}`,
          )
        }
      }
    } finally {
      await proxy.close()
      await Promise.all([up.close(), certs.remove()])
    }
  })
})
