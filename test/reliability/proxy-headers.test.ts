// Check 16: hop-by-hop headers and headers named in Connection never reach the upstream (requests) or the client
// (responses); spoofed forwarding headers (X-Forwarded-*, Forwarded, X-Real-IP, and their underscore and case
// variants, which CGI/WSGI-style upstreams read as the same variable) never reach the upstream from an untrusted
// peer: it sees the real peer only. From a trusted peer the chain is kept and extended.
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

const HOST = 'headers.reliability.test'

let certs: CertFiles
let upstream: Upstream
let proxy: ProxyHandle
let trusting: ProxyHandle
let port: number
let trustingPort: number

before(async () => {
  certs = await proxyCertificate([HOST])
  upstream = await recordingUpstream()
  const common = {
    logger: false,
    http: false as const,
    certificates: [{ cert: certs.cert, key: certs.key }],
    routes: [
      { host: HOST, upstream: upstream.url, headers: { request: { set: { 'x-proxy-secret': 'set-by-proxy' } } } },
    ],
  }
  proxy = await createProxy({ ...common, https: { host: '127.0.0.1', port: 0 } })
  port = (await proxy.listen()).https.port
  trusting = await createProxy({ ...common, https: { host: '127.0.0.1', port: 0 }, trustedProxies: ['loopback'] })
  trustingPort = (await trusting.listen()).https.port
})
after(async () => {
  await Promise.all([proxy?.close(), trusting?.close()])
  await Promise.all([upstream?.close(), certs?.remove()])
})

const HOP_BY_HOP = [
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'proxy-authenticate',
  'te',
  'trailer',
  'upgrade',
  'http2-settings',
]
const LISTED = [
  'x-hop-a',
  'x-hop-b',
  'cookie',
  'authorization',
  'x-forwarded-for',
  'x-real-ip',
  'x-proxy-secret',
  'host',
  'content-type',
]
const SPOOFS: Array<[string, string]> = [
  ['X-Forwarded-For', '6.6.6.6'],
  ['x-forwarded-for', '6.6.6.7, 6.6.6.8'],
  ['X-FORWARDED-FOR', '6.6.6.9'],
  ['X_Forwarded_For', '6.6.6.10'],
  ['x_forwarded_for', '6.6.6.11'],
  ['X-Forwarded_For', '6.6.6.12'],
  ['Forwarded', 'for=6.6.6.13;proto=http;host=evil.example'],
  ['X-Real-IP', '6.6.6.14'],
  ['X_Real_IP', '6.6.6.15'],
  ['X-Forwarded-Host', 'evil.example'],
  ['X_Forwarded_Host', 'evil.example'],
  ['X-Forwarded-Proto', 'http'],
  ['X_Forwarded_Proto', 'http'],
  ['X-Forwarded-Port', '1'],
]
const SPOOF_VALUES = /6\.6\.6\.|evil\.example|^http$|^1$/

function request(extra: string[]): string {
  return [`GET /h HTTP/1.1`, `Host: ${HOST}`, ...extra, 'Connection: close', '', ''].join('\r\n')
}

test('check 16: hop-by-hop, Connection-listed and spoofed forwarding headers never reach the upstream', async () => {
  const before = upstream.seen.length
  const leaks: string[] = []
  // 1. Hop-by-hop headers, each alone and all together, and Connection naming end-to-end and proxy-set headers.
  for (const name of HOP_BY_HOP) {
    await rawTls(port, HOST, certs.ca, request([`${name}: leak-${name}`]))
  }
  await rawTls(port, HOST, certs.ca, request(HOP_BY_HOP.map((n) => `${n}: leak-${n}`)))
  for (const name of LISTED) {
    await rawTls(
      port,
      HOST,
      certs.ca,
      request([`Connection: keep-alive, ${name}`, ...(name === 'host' ? [] : [`${name}: leak-${name}`])]),
    )
  }
  await rawTls(
    port,
    HOST,
    certs.ca,
    request([`Connection: ${LISTED.join(', ')}`, ...LISTED.filter((n) => n !== 'host').map((n) => `${n}: leak-${n}`)]),
  )
  const hopRequests = upstream.seen.slice(before)
  for (const seen of hopRequests) {
    for (const [name, value] of Object.entries(seen.headers)) {
      if (String(value).startsWith('leak-')) leaks.push(`${name}: ${value}`)
    }
    // Headers the proxy itself sets cannot be stripped by a client naming them in Connection.
    if (seen.headers['x-proxy-secret'] !== 'set-by-proxy') leaks.push(`x-proxy-secret stripped (${seen.url})`)
    if (seen.headers['x-forwarded-for'] !== '127.0.0.1')
      leaks.push(`x-forwarded-for ${seen.headers['x-forwarded-for']}`)
    if (seen.headers.host !== HOST) leaks.push(`host ${seen.headers.host}`)
  }

  // 2. Spoofed forwarding headers, each alone and all together, over HTTP/1.1 and HTTP/2, untrusted peer.
  const spoofStart = upstream.seen.length
  for (const [name, value] of SPOOFS) {
    await rawTls(port, HOST, certs.ca, request([`${name}: ${value}`]))
    await h2Request(port, HOST, certs.ca, { ':path': '/h', [name.toLowerCase()]: value })
  }
  await rawTls(port, HOST, certs.ca, request(SPOOFS.map(([n, v]) => `${n}: ${v}`)))
  const spoofed = upstream.seen.slice(spoofStart)
  const spoofLeaks: string[] = []
  for (const seen of spoofed) {
    for (let i = 0; i < seen.rawHeaders.length; i += 2) {
      const name = seen.rawHeaders[i]!
      const value = seen.rawHeaders[i + 1]!
      if (/forwarded|real.?ip/i.test(name) && SPOOF_VALUES.test(value)) spoofLeaks.push(`${name}: ${value}`)
    }
    if (seen.headers['x-forwarded-for'] !== '127.0.0.1' || seen.headers['x-real-ip'] !== '127.0.0.1') {
      spoofLeaks.push(`peer ${seen.headers['x-forwarded-for']} / ${seen.headers['x-real-ip']}`)
    }
  }

  // 3. Response side: the upstream's hop-by-hop and Connection-listed headers do not reach the client.
  const responseLeaks: string[] = []
  // (The recording upstream answers plain JSON; the proxy's own response headers are checked for hop-by-hop names.)
  const reply = await rawTls(port, HOST, certs.ca, request([]))
  for (const name of ['keep-alive', 'proxy-authenticate', 'trailer', 'upgrade', 'te']) {
    if (new RegExp(`^${name}:`, 'im').test(reply.text.split('\r\n\r\n')[0] ?? '')) responseLeaks.push(name)
  }

  // 4. Trusted peer: its chain is kept and extended.
  const trustedStart = upstream.seen.length
  await rawTls(trustingPort, HOST, certs.ca, request(['X-Forwarded-For: 203.0.113.7']))
  const trusted = upstream.seen[trustedStart]
  figure(
    `check 16: ${hopRequests.length} requests with hop-by-hop (${HOP_BY_HOP.length} names) and Connection-listed headers ` +
      `(${LISTED.length} names, incl. proxy-set and forwarding ones): ${leaks.length} reached the upstream; ` +
      `${spoofed.length} requests with ${SPOOFS.length} spoofed forwarding headers (case and underscore variants, HTTP/1.1 and HTTP/2): ` +
      `${spoofLeaks.length} spoofed values reached the upstream, it saw the real peer only; ${responseLeaks.length} hop-by-hop response headers; ` +
      `trusted peer: X-Forwarded-For "${trusted?.headers['x-forwarded-for']}"`,
  )
  assert.deepEqual(leaks, [])
  assert.deepEqual([...new Set(spoofLeaks)], [])
  assert.deepEqual(responseLeaks, [])
  assert.equal(trusted?.headers['x-forwarded-for'], '203.0.113.7, 127.0.0.1')
})
