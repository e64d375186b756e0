// ACME mode against a real ACME server (Pebble): two hosts x prefixes routed to two upstreams over HTTP/1.1 and
// HTTP/2 with certificates issued over TLS-ALPN-01; HTTP-01 through the port-80 listener and its 308 redirects;
// mixed mode (one host ACME, one from files).
import assert from 'node:assert/strict'
import { request as httpRequest } from 'node:http'
import { after, before, describe, test } from 'node:test'
import { MemoryStorage } from '@autotls/fastify-acme'
import { type Pebble, startPebble } from '@autotls/pebble-harness'
import { createProxy, type ProxyHandle } from '../src/index.js'
import { certFiles, h1, h2, json, startUpstream, type Upstream } from './helpers.js'

function plainGet(
  port: number,
  host: string,
  path: string,
): Promise<{ status: number; location?: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, headers: { host }, agent: false }, (res) => {
      let body = ''
      res.on('data', (c: Buffer) => {
        body += c.toString()
      })
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          ...(res.headers.location ? { location: res.headers.location } : {}),
          body,
        }),
      )
    })
    req.on('error', reject)
    req.end()
  })
}

describe('ACME mode (Pebble)', () => {
  let pebble: Pebble
  let root: string
  let web: Upstream
  let api: Upstream
  before(async () => {
    pebble = await startPebble()
    root = await pebble.issuingRoot()
    web = await startUpstream('web')
    api = await startUpstream('api')
  })
  after(async () => {
    await Promise.all([web?.close(), api?.close()])
    await pebble?.stop()
  })

  test('two hosts x prefixes, two upstreams, HTTP/1.1 and HTTP/2, certificates over TLS-ALPN-01', async () => {
    const proxy: ProxyHandle = await createProxy({
      logger: false,
      https: { host: '127.0.0.1', port: pebble.tlsPort },
      http: false,
      acme: {
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: pebble.caBundle,
        storage: new MemoryStorage(),
      },
      routes: [
        { host: 'www.proxy.test', upstream: web.url },
        { host: 'www.proxy.test', path: '/api', upstream: api.url },
        { host: 'api.proxy.test', upstream: api.url },
        { host: 'api.proxy.test', path: '/static', upstream: web.url, rewritePrefix: '/assets' },
      ],
    })
    try {
      assert.deepEqual(proxy.plan.acmeNames.sort(), ['api.proxy.test', 'www.proxy.test'])
      await proxy.listen()
      await Promise.all(proxy.plan.acmeNames.map((n) => proxy.acme!.waitForCertificate(n)))
      const cases: Array<[string, string, string, string]> = [
        ['www.proxy.test', '/index.html', 'web', '/index.html'],
        ['www.proxy.test', '/api/items?page=2', 'api', '/api/items?page=2'],
        ['api.proxy.test', '/v1/things', 'api', '/v1/things'],
        ['api.proxy.test', '/static/app.js', 'web', '/assets/app.js'],
      ]
      for (const send of [h1, h2]) {
        for (const [host, path, upstream, url] of cases) {
          const res = await send({ port: pebble.tlsPort, host, path, ca: root })
          assert.equal(res.status, 200, res.body)
          assert.equal(json(res)['upstream'], upstream)
          assert.equal(json(res)['url'], url)
          assert.equal(res.cert?.subjectaltname, `DNS:${host}`)
          assert.match(String(res.cert?.issuer?.CN ?? ''), /Pebble/i)
          assert.equal(res.alpn, send === h2 ? 'h2' : 'http/1.1')
        }
      }
      assert.ok(proxy.acme!.tlsAlpnStats.diverted >= 2, 'validated over TLS-ALPN-01 on the proxy port')
    } finally {
      await proxy.close()
    }
  })

  test('port 80: HTTP-01 issuance through it; everything else 308 to HTTPS with path and query kept', async () => {
    const proxy = await createProxy({
      logger: false,
      https: { host: '127.0.0.1', port: pebble.tlsPort },
      http: { host: '127.0.0.1', port: pebble.httpPort },
      acme: {
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: pebble.caBundle,
        storage: new MemoryStorage(),
        challenges: ['http-01'],
      },
      routes: [{ host: 'plain.proxy.test', upstream: web.url }],
    })
    try {
      await proxy.listen()
      await proxy.acme!.waitForCertificate('plain.proxy.test')
      assert.equal(proxy.acme!.tlsAlpnStats.diverted, 0, 'no TLS-ALPN-01 validation: HTTP-01 did it')
      const res = await h2({ port: pebble.tlsPort, host: 'plain.proxy.test', path: '/after', ca: root })
      assert.equal(res.status, 200)

      const redirect = await plainGet(pebble.httpPort, 'plain.proxy.test', '/a/b%20c?x=1&y=%2F')
      assert.equal(redirect.status, 308)
      assert.equal(redirect.location, `https://plain.proxy.test:${pebble.tlsPort}/a/b%20c?x=1&y=%2F`)
      const unknown = await plainGet(pebble.httpPort, 'evil.example', '/')
      assert.equal(unknown.status, 421, 'no redirect for hosts the proxy does not serve')
      const challenge = await plainGet(pebble.httpPort, 'plain.proxy.test', '/.well-known/acme-challenge/unknown')
      assert.equal(challenge.status, 404, 'challenge paths are answered, not redirected')
      const health = await plainGet(pebble.httpPort, 'anything', '/.well-known/proxy-health')
      assert.equal(health.status, 200)
    } finally {
      await proxy.close()
    }
  })

  test('redirect and challenges can be switched off', async () => {
    const redirectOff = await createProxy({
      logger: false,
      https: { host: '127.0.0.1', port: 0 },
      http: { host: '127.0.0.1', port: 0, redirect: false },
      acme: {
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        storage: new MemoryStorage(),
        issueOnStart: false,
      },
      routes: [{ host: 'off.proxy.test', upstream: web.url }],
    })
    try {
      const { http } = await redirectOff.listen()
      const res = await plainGet(http!.port, 'off.proxy.test', '/x')
      assert.equal(res.status, 404)
    } finally {
      await redirectOff.close()
    }
    const noHttp = await createProxy({
      logger: false,
      https: { host: '127.0.0.1', port: 0 },
      http: false,
      acme: {
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        storage: new MemoryStorage(),
        issueOnStart: false,
      },
      routes: [{ host: 'off.proxy.test', upstream: web.url }],
    })
    try {
      const addresses = await noHttp.listen()
      assert.equal(addresses.http, undefined)
      assert.equal(noHttp.redirectApp, undefined)
    } finally {
      await noHttp.close()
    }
  })

  test('mixed: one host over ACME, one from files', async () => {
    const files = await certFiles(['files.proxy.test'])
    const proxy = await createProxy({
      logger: false,
      https: { host: '127.0.0.1', port: pebble.tlsPort },
      http: false,
      acme: {
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: pebble.caBundle,
        storage: new MemoryStorage(),
      },
      certificates: [{ cert: files.cert, key: files.key }],
      routes: [
        { host: 'acme.proxy.test', upstream: web.url },
        { host: 'files.proxy.test', upstream: api.url },
      ],
    })
    try {
      assert.deepEqual(proxy.plan.acmeNames, ['acme.proxy.test'])
      assert.deepEqual(proxy.plan.manualHosts, ['files.proxy.test'])
      await proxy.listen()
      await proxy.acme!.waitForCertificate('acme.proxy.test')
      const fromAcme = await h1({ port: pebble.tlsPort, host: 'acme.proxy.test', ca: root })
      assert.equal(json(fromAcme)['upstream'], 'web')
      const fromFiles = await h2({ port: pebble.tlsPort, host: 'files.proxy.test', ca: files.ca })
      assert.equal(json(fromFiles)['upstream'], 'api')
    } finally {
      await proxy.close()
      await files.remove()
    }
  })
})
