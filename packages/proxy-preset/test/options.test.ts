// Pure logic, no network: option validation and defaults, certificate planning, host parsing and lookup, the path
// guard and the trusted-proxies predicate.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { DEFAULT_HEALTH_PATH } from '../src/index.js'
import {
  compileTrust,
  HostTable,
  parseRouteHost,
  pathProblem,
  planCertificates,
  requestHost,
  resolveProxyOptions,
} from '../src/internal.js'

const route = { host: 'app.example.com', upstream: 'http://127.0.0.1:3000' }

describe('resolveProxyOptions', () => {
  test('the shortest configuration gets documented defaults', () => {
    const o = resolveProxyOptions({ routes: [route] })
    assert.deepEqual(o.https, { host: '::', port: 443, http2: true })
    assert.deepEqual(o.http, { host: '::', port: 80, redirect: true, acmeChallenges: true, redirectPort: 443 })
    assert.equal(o.health?.path, DEFAULT_HEALTH_PATH)
    assert.deepEqual(o.shutdown.signals, ['SIGINT', 'SIGTERM'])
    const r = o.routes[0]!
    assert.equal(r.path, '')
    assert.equal(r.rewritePrefix, '')
    assert.deepEqual(r.upstreams, ['http://127.0.0.1:3000'])
    assert.equal(r.websocket, false)
    assert.equal(r.preserveHost, true)
    assert.equal(r.label, 'app.example.com/')
    assert.equal(r.healthCheck, undefined, 'health checks are off unless given')
    assert.equal(r.ejectMs, 10_000)
  })

  test('healthCheck: given fields kept, the rest defaulted', () => {
    const o = resolveProxyOptions({
      routes: [{ ...route, healthCheck: { path: '/healthz?deep=1', intervalMs: 1000 } }],
    })
    assert.deepEqual(o.routes[0]!.healthCheck, {
      path: '/healthz?deep=1',
      intervalMs: 1000,
      timeoutMs: 2000,
      healthyThreshold: 2,
      unhealthyThreshold: 2,
    })
    assert.deepEqual(resolveProxyOptions({ routes: [{ ...route, healthCheck: {} }] }).routes[0]!.healthCheck?.path, '/')
  })

  test('paths, rewrites, upstream lists, header changes are normalised', () => {
    const o = resolveProxyOptions({
      routes: [
        {
          host: 'API.Example.com.',
          path: '/v1/',
          upstream: ['http://a:1/', 'http://b:2'],
          rewritePrefix: '/',
          headers: { request: { set: { 'X-Env': 'prod' }, remove: ['Cookie'] } },
        },
      ],
      http: { port: 8080 },
      https: { port: 8443 },
    })
    const r = o.routes[0]!
    assert.equal(r.host, 'api.example.com')
    assert.equal(r.path, '/v1')
    assert.equal(r.rewritePrefix, '')
    assert.deepEqual(r.upstreams, ['http://a:1', 'http://b:2'])
    assert.deepEqual(r.requestHeaders, { set: [['x-env', 'prod']], remove: ['cookie'] })
    assert.equal(o.http?.redirectPort, 8443)
  })

  const refusals: Array<[string, unknown, string, RegExp]> = [
    ['no routes', { routes: [] }, 'FPROXY_INVALID_OPTIONS', /routes/],
    ['unknown option', { routes: [route], prot: 1 }, 'FPROXY_INVALID_OPTIONS', /prot|additional/i],
    ['bad port', { routes: [route], https: { port: 70000 } }, 'FPROXY_INVALID_OPTIONS', /https\.port/],
    [
      'upstream with a path',
      { routes: [{ ...route, upstream: 'http://x:1/api' }] },
      'FPROXY_INVALID_OPTIONS',
      /rewritePrefix/,
    ],
    ['upstream scheme', { routes: [{ ...route, upstream: 'ftp://x' }] }, 'FPROXY_INVALID_OPTIONS', /upstream/],
    ['router syntax in path', { routes: [{ ...route, path: '/:id' }] }, 'FPROXY_INVALID_OPTIONS', /path/],
    ['dot-segment in path', { routes: [{ ...route, path: '/a/../b' }] }, 'FPROXY_INVALID_OPTIONS', /dot-segment/],
    [
      'duplicate',
      { routes: [route, { ...route, host: 'APP.example.com' }] },
      'FPROXY_DUPLICATE_ROUTE',
      /app\.example\.com\//,
    ],
    ['bad wildcard', { routes: [{ ...route, host: 'a.*.example.com' }] }, 'FPROXY_INVALID_HOST', /wildcard/],
    ['wildcard on a TLD', { routes: [{ ...route, host: '*.com' }] }, 'FPROXY_INVALID_HOST', /two labels/],
    [
      'bad header value',
      { routes: [{ ...route, headers: { response: { set: { a: 'x\r\ny' } } } }] },
      'FPROXY_INVALID_OPTIONS',
      /CR, LF/,
    ],
    [
      'health check interval below 100 ms',
      { routes: [{ ...route, healthCheck: { intervalMs: 10 } }] },
      'FPROXY_INVALID_OPTIONS',
      /intervalMs/,
    ],
    [
      'health check path without a slash',
      { routes: [{ ...route, healthCheck: { path: 'healthz' } }] },
      'FPROXY_INVALID_OPTIONS',
      /path/,
    ],
    [
      'unknown health check field',
      { routes: [{ ...route, healthCheck: { every: 5 } }] },
      'FPROXY_INVALID_OPTIONS',
      /every|healthCheck/,
    ],
    ['bad trusted proxy', { routes: [route], trustedProxies: ['10.0.0.0/33'] }, 'FPROXY_INVALID_OPTIONS', /prefix/],
    [
      'http that does nothing',
      { routes: [route], http: { redirect: false, acmeChallenges: false } },
      'FPROXY_INVALID_OPTIONS',
      /http: false/,
    ],
  ]
  for (const [name, input, code, message] of refusals) {
    test(`refused: ${name}`, () => {
      assert.throws(
        () => resolveProxyOptions(input),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, code)
          assert.match(err.message, message)
          return true
        },
      )
    })
  }

  test('acme options pass through; non-data (storage) is kept outside the schema', () => {
    const storage = { get() {}, put() {}, delete() {}, list() {}, lock() {} }
    const o = resolveProxyOptions({
      routes: [route],
      acme: {
        directory: 'letsencrypt-staging',
        termsOfServiceAgreed: true,
        contact: ['mailto:a@b.c'],
        storage,
      } as never,
    })
    assert.equal(o.acme?.directory, 'letsencrypt-staging')
    assert.equal((o.acme as { storage?: unknown }).storage, storage)
    assert.throws(
      () => resolveProxyOptions({ routes: [route], acme: { directory: 'x', termsOfServiceAgreed: true, bogus: 1 } }),
      {
        code: 'FPROXY_INVALID_OPTIONS',
      },
    )
  })
})

describe('planCertificates', () => {
  const acme = { directory: 'letsencrypt-staging', termsOfServiceAgreed: true }
  const none = { hosts: (): string[] => [] }
  const plan = (input: object, manual = none) => planCertificates(resolveProxyOptions(input), manual)

  test('ACME names default to the exact, ACME-eligible route hosts not served from files', () => {
    const p = plan(
      {
        acme,
        routes: [
          route,
          { ...route, path: '/x' },
          { host: 'files.example.com', upstream: 'http://u:1' },
          { host: '*.wild.example.com', upstream: 'http://u:1' },
        ],
      },
      { hosts: () => ['files.example.com', '*.wild.example.com'] },
    )
    assert.deepEqual(p.acmeNames, ['app.example.com'])
  })

  test('a wildcard host needs a certificate file (or a default); ACME cannot issue it', () => {
    assert.throws(() => plan({ acme, routes: [{ host: '*.example.com', upstream: 'http://u:1' }] }), {
      code: 'FPROXY_WILDCARD_NEEDS_CERTIFICATE',
    })
  })

  test('a host without any certificate source is refused at start', () => {
    assert.throws(() => plan({ routes: [route] }), { code: 'FPROXY_NO_CERTIFICATE' })
    assert.throws(() => plan({ acme, routes: [{ host: 'localhost', upstream: 'http://u:1' }] }), {
      code: 'FPROXY_NO_CERTIFICATE',
    })
    assert.deepEqual(plan({ routes: [route], defaultCertificate: { cert: 'c', key: 'k' } }).acmeNames, [])
  })

  test('a name both in acme.names and in a file is a conflict', () => {
    assert.throws(
      () =>
        plan({ acme: { ...acme, names: ['app.example.com'] }, routes: [route] }, { hosts: () => ['app.example.com'] }),
      { code: 'FPROXY_CERTIFICATE_CONFLICT' },
    )
  })
})

describe('hosts', () => {
  test('parseRouteHost', () => {
    assert.deepEqual(parseRouteHost('Bücher.Example'), { host: 'xn--bcher-kva.example', wildcard: false })
    assert.deepEqual(parseRouteHost('*.Example.com'), { host: '*.example.com', wildcard: true })
    assert.deepEqual(parseRouteHost('127.0.0.1'), { host: '127.0.0.1', wildcard: false })
    assert.throws(() => parseRouteHost('a b.com'), { code: 'FPROXY_INVALID_HOST' })
  })

  test('requestHost normalises Host and :authority and refuses junk', () => {
    assert.equal(requestHost({ host: 'App.Example.com:8443' }), 'app.example.com')
    assert.equal(requestHost({ host: 'app.example.com.' }), 'app.example.com')
    assert.equal(requestHost({ ':authority': 'h2.example.com', host: 'other' }), 'h2.example.com')
    assert.equal(requestHost({ host: '[::1]:443' }), '[::1]')
    for (const junk of ['', 'user@host', 'a/b', 'host:port', 'a b', '*.x.com']) {
      assert.equal(requestHost({ host: junk }), undefined, junk)
    }
    assert.equal(requestHost({}), undefined)
  })

  test('HostTable: exact first, then one-label wildcard', () => {
    const t = new HostTable<string>()
    t.set('*.example.com', 'wild')
    t.set('app.example.com', 'exact')
    assert.equal(t.get('app.example.com'), 'exact')
    assert.equal(t.get('x.example.com'), 'wild')
    assert.equal(t.get('a.b.example.com'), undefined)
    assert.equal(t.get('example.com'), undefined)
  })
})

describe('pathProblem', () => {
  test('refuses escapes, accepts ordinary paths', () => {
    for (const ok of ['/', '/a/b', '/v1.2/file..name', '/a%20b', '/%E2%82%AC', '/...x']) {
      assert.equal(pathProblem(ok, false), undefined, ok)
    }
    for (const bad of [
      '/..',
      '/a/../b',
      '/a/%2e%2E/b',
      '/a/.%2e',
      '/a\\b',
      '/a%5cb',
      '/a;b',
      '/a/%252e%252e/',
      '/%00',
      '/%zz',
      '/./a',
    ]) {
      assert.notEqual(pathProblem(bad, false), undefined, bad)
    }
    assert.equal(pathProblem('/a;jsessionid=1/b', true), undefined)
    assert.notEqual(pathProblem('/a/..;x/b', true), undefined)
  })
})

describe('compileTrust', () => {
  test('addresses, ranges and names; IPv4-mapped IPv6 is unwrapped', () => {
    const trust = compileTrust(['loopback', '10.1.0.0/16', '2001:db8::1'])
    assert.equal(trust('127.0.0.1'), true)
    assert.equal(trust('::ffff:127.0.0.1'), true)
    assert.equal(trust('::1'), true)
    assert.equal(trust('10.1.2.3'), true)
    assert.equal(trust('10.2.0.1'), false)
    assert.equal(trust('2001:db8::1'), true)
    assert.equal(trust(undefined), false)
    assert.equal(compileTrust([])('127.0.0.1'), false)
  })
})
