// Host and path routing with manual certificates: exact and wildcard hosts, prefixes and rewrites, unknown hosts,
// many hosts, health, over HTTP/1.1 and HTTP/2 with real TLS clients.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { createProxy, type ProxyHandle } from '../src/index.js'
import { type CertFiles, certFiles, h1, h2, json, startUpstream, type Upstream } from './helpers.js'

describe('routing (manual certificates)', () => {
  let app: Upstream
  let api: Upstream
  let wild: Upstream
  let certs: CertFiles
  let proxy: ProxyHandle
  let port: number

  before(async () => {
    app = await startUpstream('app')
    api = await startUpstream('api')
    wild = await startUpstream('wild')
    certs = await certFiles(['app.test.local', 'api.test.local', '*.wild.test.local'])
    proxy = await createProxy({
      logger: false,
      https: { host: '127.0.0.1', port: 0 },
      http: false,
      certificates: [{ cert: certs.cert, key: certs.key }],
      routes: [
        { host: 'app.test.local', upstream: app.url },
        { host: 'app.test.local', path: '/api', upstream: api.url },
        { host: 'api.test.local', path: '/v1', upstream: api.url, rewritePrefix: '' },
        { host: 'api.test.local', path: '/legacy', upstream: api.url, rewritePrefix: '/v2/old' },
        { host: '*.wild.test.local', upstream: wild.url },
        {
          host: 'app.test.local',
          path: '/headers',
          upstream: app.url,
          preserveHost: false,
          headers: {
            request: { set: { 'x-env': 'test' }, remove: ['x-drop-me'] },
            response: { set: { 'x-served-by': 'preset' }, remove: ['content-type'] },
          },
        },
      ],
    })
    port = (await proxy.listen()).https.port
  })
  after(async () => {
    await proxy?.close()
    await Promise.all([app?.close(), api?.close(), wild?.close(), certs?.remove()])
  })

  for (const [name, send] of [
    ['HTTP/1.1', h1],
    ['HTTP/2', h2],
  ] as const) {
    test(`${name}: hosts and prefixes reach the right upstream with the right path`, async () => {
      const cases: Array<[string, string, string, string]> = [
        ['app.test.local', '/', 'app', '/'],
        ['app.test.local', '/x/y?q=1&r=%20', 'app', '/x/y?q=1&r=%20'],
        ['app.test.local', '/api', 'api', '/api'],
        ['app.test.local', '/api/users?id=7', 'api', '/api/users?id=7'],
        ['app.test.local', '/apix', 'app', '/apix'],
        ['api.test.local', '/v1/users', 'api', '/users'],
        ['api.test.local', '/legacy/a', 'api', '/v2/old/a'],
        ['one.wild.test.local', '/w', 'wild', '/w'],
        ['TWO.Wild.Test.Local', '/w', 'wild', '/w'],
      ]
      for (const [host, path, upstream, upstreamUrl] of cases) {
        const res = await send({ port, host, path, ca: certs.ca })
        assert.equal(res.status, 200, `${host}${path}: ${res.body}`)
        const body = json(res)
        assert.equal(body['upstream'], upstream, `${host}${path}`)
        assert.equal(body['url'], upstreamUrl, `${host}${path}`)
        assert.equal(res.alpn, name === 'HTTP/2' ? 'h2' : 'http/1.1')
      }
    })

    test(`${name}: unknown host is 421 with a clear body; known host, unrouted path is 404`, async () => {
      const before = app.seen.length + api.seen.length + wild.seen.length
      // SNI for a covered name, Host for another: no upstream may see it.
      const unknown = await send({ port, host: 'nope.test.local', servername: 'app.test.local', ca: certs.ca })
      assert.equal(unknown.status, 421)
      assert.equal(json(unknown)['code'], 'FPROXY_UNKNOWN_HOST')
      assert.match(String(json(unknown)['message']), /nope\.test\.local/)
      const deep = await send({ port, host: 'a.b.wild.test.local', servername: 'app.test.local', ca: certs.ca })
      assert.equal(deep.status, 421, 'a wildcard covers one label only')
      const noRoute = await send({ port, host: 'api.test.local', path: '/other', ca: certs.ca })
      assert.equal(noRoute.status, 404)
      assert.equal(json(noRoute)['code'], 'FPROXY_NO_ROUTE')
      assert.equal(app.seen.length + api.seen.length + wild.seen.length, before)
    })
  }

  test('a forged internal prefix cannot select another host', async () => {
    const before = api.seen.length
    const res = await h1({
      port,
      host: 'nope.test.local',
      servername: 'app.test.local',
      path: '/_vhost/1/v1/x',
      ca: certs.ca,
    })
    assert.equal(res.status, 421)
    const other = await h1({ port, host: 'app.test.local', path: '/_vhost/1/v1/x', ca: certs.ca })
    assert.equal(json(other)['upstream'], 'app', 'a known host keeps its own site whatever the path')
    assert.equal(json(other)['url'], '/_vhost/1/v1/x')
    assert.equal(api.seen.length, before)
  })

  test('per-route request and response header changes, preserveHost off', async () => {
    for (const send of [h1, h2]) {
      const res = await send({
        port,
        host: 'app.test.local',
        path: '/headers',
        headers: { 'x-drop-me': '1' },
        ca: certs.ca,
      })
      const seen = json(res)['headers'] as Record<string, string>
      assert.equal(seen['x-env'], 'test')
      assert.equal(seen['x-drop-me'], undefined)
      assert.equal(seen['host'], `127.0.0.1:${app.port}`, 'preserveHost: false sends the upstream host')
      assert.equal(seen['x-forwarded-host'], 'app.test.local')
      assert.equal(res.headers['x-served-by'], 'preset')
      assert.equal(res.headers['content-type'], undefined)
    }
  })

  test('health answers on any host without touching upstreams', async () => {
    const before = app.seen.length
    const res = await h2({ port, host: 'app.test.local', path: '/.well-known/proxy-health', ca: certs.ca })
    assert.equal(res.status, 200)
    assert.equal(json(res)['status'], 'ok')
    assert.equal(app.seen.length, before)
  })

  test('the served certificate follows SNI, wildcard included', async () => {
    const res = await h1({ port, host: 'zzz.wild.test.local', ca: certs.ca })
    assert.equal(res.status, 200)
    assert.match(res.cert?.subjectaltname ?? '', /\*\.wild\.test\.local/)
  })
})

describe('many hosts', () => {
  test('200 hosts route by Map lookup (no 31-handler limit) and each reaches its upstream', async () => {
    const up = await startUpstream('many')
    const certs = await certFiles(['*.many.test.local'])
    const hosts = Array.from({ length: 200 }, (_, i) => `h${i}.many.test.local`)
    const proxy = await createProxy({
      logger: false,
      https: { host: '127.0.0.1', port: 0 },
      http: false,
      certificates: [{ cert: certs.cert, key: certs.key }],
      routes: hosts.flatMap((host, i) => [
        { host, upstream: up.url, headers: { request: { set: { 'x-site': String(i) } } } },
        { host, path: '/api', upstream: up.url, rewritePrefix: `/site${i}` },
      ]),
    })
    try {
      await proxy.app.ready()
      for (const i of [0, 17, 31, 32, 150, 199]) {
        const res = await proxy.app.inject({ url: '/hello', headers: { host: hosts[i]! } })
        assert.equal(res.statusCode, 200, res.body)
        assert.equal(JSON.parse(res.body).headers['x-site'], String(i))
        const apiRes = await proxy.app.inject({ url: '/api/x', headers: { host: hosts[i]! } })
        assert.equal(JSON.parse(apiRes.body).url, `/site${i}/x`)
      }
    } finally {
      await proxy.close()
      await up.close()
      await certs.remove()
    }
  })
})
