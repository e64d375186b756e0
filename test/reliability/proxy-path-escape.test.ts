// Check 14: a path-escape corpus built from the published advisories of @fastify/http-proxy and @fastify/reply-from
// (prefix bypass with `..` (CVE-2021-21322), crafted URLs reaching another host (CVE-2021-21321), absolute-form and
// `//host` request targets), their encoded, double-encoded, backslash, `;` and overlong-UTF-8 variants, over raw
// HTTP/1.1, HTTP/2 and websocket upgrades. Every request the upstreams receive is checked against the prefix of the
// route it came through, after the upstream's own normalisation (URL resolution and percent-decoding).
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { createProxy, type ProxyHandle } from '@autotls/proxy-preset'
import { figure } from './helpers.js'
import {
  type CertFiles,
  h2Request,
  proxyCertificate,
  rawTls,
  recordingUpstream,
  type Upstream,
} from './proxy-fixture.js'

const HOST = 'escape.reliability.test'
const SECRET = 'secret.reliability.test'

let certs: CertFiles
let upstream: Upstream
let secret: Upstream
let proxy: ProxyHandle
let port: number

const ROUTES = [
  { path: '/api', rewritePrefix: '/internal/api' },
  { path: '/pub', rewritePrefix: '/pub' },
  { path: '/ws', rewritePrefix: '/socket', websocket: true },
]

before(async () => {
  certs = await proxyCertificate([HOST, SECRET])
  upstream = await recordingUpstream()
  secret = await recordingUpstream()
  proxy = await createProxy({
    logger: false,
    http: false,
    https: { host: '127.0.0.1', port: 0 },
    certificates: [{ cert: certs.cert, key: certs.key }],
    routes: [
      ...ROUTES.map((r) => ({ host: HOST, upstream: upstream.url, ...r })),
      { host: SECRET, upstream: secret.url },
    ],
  })
  port = (await proxy.listen()).https.port
})
after(async () => {
  await proxy?.close()
  await Promise.all([upstream?.close(), secret?.close(), certs?.remove()])
})

const ESCAPES = [
  '/../admin',
  '/..',
  '/../',
  '/./../admin',
  '/x/../../admin',
  '/..//admin',
  '//../admin',
  '/%2e%2e/admin',
  '/%2E%2E/admin',
  '/.%2e/admin',
  '/%2e./admin',
  '/..%2fadmin',
  '/..%2Fadmin',
  '/%2e%2e%2fadmin',
  '/%2e%2e%2f%2e%2e%2fadmin',
  '/x/%2e%2e/%2e%2e/admin',
  '/..%5cadmin',
  '/%2e%2e%5cadmin',
  '/..\\admin',
  '\\..\\admin',
  '/x\\..\\..\\admin',
  '/..;/admin',
  '/;/../admin',
  '/..;jsessionid=1/admin',
  '/.;/../admin',
  '/%252e%252e/admin',
  '/%252e%252e%252fadmin',
  '/..%252fadmin',
  '/%25%32%65%25%32%65/admin',
  '/%c0%ae%c0%ae/admin',
  '/%e0%80%ae%e0%80%ae/admin',
  '/..%c0%afadmin',
  '/..%ef%bc%8fadmin',
  '/%u002e%u002e/admin',
  '/..%00/admin',
  '/%00/../admin',
  '/..%2500/admin',
  '/..%0d%0aX-Injected:%201',
  '/%2e%2e?x=1',
  '/..#/admin',
  '//secret.reliability.test/x',
  '/http://secret.reliability.test/',
  '/http:/secret.reliability.test',
  '/@secret.reliability.test/',
  '/%40secret.reliability.test',
  '/%2f%2fsecret.reliability.test/x',
  '/%2F%2Fsecret.reliability.test',
]

/** Request targets that are not origin-form paths under a prefix at all. */
const TARGETS = [
  `http://${SECRET}/`,
  `https://${SECRET}/api/x`,
  `http://${HOST}@${SECRET}/api/x`,
  `//${SECRET}/api/x`,
  '*',
  `${SECRET}:443`,
  'api/../admin',
]

/** The path an upstream would act on: percent-decoding repeated until stable, backslashes as slashes, resolved. */
function effectivePath(url: string): string {
  let path = url.split('?')[0]!.split('#')[0]!
  for (let i = 0; i < 3; i++) {
    try {
      const decoded = decodeURIComponent(path)
      if (decoded === path) break
      path = decoded
    } catch {
      break
    }
  }
  path = path.replace(/\\/g, '/').replace(/;[^/]*/g, '')
  return new URL(path.startsWith('/') ? path : `/${path}`, 'http://x').pathname
}

function inside(prefix: string, url: string): boolean {
  const raw = url.split('?')[0]!
  const path = effectivePath(url)
  const ok = (p: string) => p === prefix || p.startsWith(`${prefix}/`)
  return ok(raw) && ok(path)
}

test('check 14: path-escape corpus: 0 upstream requests outside the route prefix', async () => {
  const statuses = new Map<number, number>()
  const count = (s: number) => statuses.set(s, (statuses.get(s) ?? 0) + 1)
  let sent = 0
  for (const route of ROUTES) {
    for (const shape of ESCAPES) {
      const path = `${route.path}${shape}`
      // HTTP/1.1, byte for byte.
      const h1 = await rawTls(
        port,
        HOST,
        certs.ca,
        `GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`,
      )
      count(h1.statuses[0] ?? 0)
      sent++
      // HTTP/2 (a client may send any :path).
      const h2 = await h2Request(port, HOST, certs.ca, { ':path': path })
      count(h2.status)
      sent++
      // A websocket upgrade on the same path.
      const ws = await rawTls(
        port,
        HOST,
        certs.ca,
        `GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
        1500,
      )
      count(ws.statuses[0] ?? 0)
      sent++
    }
  }
  for (const target of TARGETS) {
    for (const host of [HOST, SECRET]) {
      const res = await rawTls(
        port,
        HOST,
        certs.ca,
        `GET ${target} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
      )
      count(res.statuses[0] ?? 0)
      sent++
    }
  }
  // Upstream side: everything received, judged against the prefix of the route it was sent through.
  const outside = upstream.seen.filter((s) => !ROUTES.some((r) => inside(r.rewritePrefix, s.url)))
  const reached = upstream.seen.length
  // The secret host's own route is '/', so it only counts when the client did not ask for that host.
  const secretFromOtherHost = secret.seen.filter((s) => s.headers.host !== SECRET)
  figure(
    `check 14: ${sent} escape attempts (${ESCAPES.length} shapes x ${ROUTES.length} prefixes x HTTP/1.1 + HTTP/2 + websocket upgrade, ` +
      `+ ${TARGETS.length} absolute/authority/asterisk targets x 2 hosts): answers ${[...statuses.entries()]
        .sort((a, b) => a[0] - b[0])
        .map(([s, n]) => `${s || 'reset'}: ${n}`)
        .join(', ')}; ${reached} reached the upstream, all inside their prefix; ${outside.length} outside; ` +
      `${secretFromOtherHost.length} reached another host's upstream`,
  )
  assert.deepEqual(
    outside.map((s) => s.url),
    [],
  )
  assert.deepEqual(
    secretFromOtherHost.map((s) => s.url),
    [],
  )
})
