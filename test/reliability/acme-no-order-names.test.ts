// Check 7: names that must never trigger an order. After the managed name is issued, hostile server names arrive
// every way they can: raw ClientHellos with exactly these SNI bytes (unknown names, IP literals, an empty name, odd
// bytes, over-long names), Node TLS clients, HTTP Host headers, and the decorator's issue()/waitForCertificate(),
// with the ClientHello peek off and on. Figure: orders Pebble received (0), resolver entries added (0).
import assert from 'node:assert/strict'
import { isIP, connect as netConnect } from 'node:net'
import { test } from 'node:test'
import { MemoryStorage } from '@autotls/fastify-acme'
import { countOrders, startPebble } from '@autotls/pebble-harness'
import { captureHello, withServerName } from './fuzz-corpus.js'
import { challengeCertificate, figure, handshake, httpsGet, startAcmeApp } from './helpers.js'

const MANAGED = 'managed.names.reliability.test'

const HOSTILE: Array<[string, Buffer]> = [
  ['unknown name', Buffer.from('unknown.names.reliability.test')],
  ['sub-domain of the managed name', Buffer.from(`x.${MANAGED}`)],
  ['managed name with a suffix', Buffer.from(`${MANAGED}.evil`)],
  ['parent of the managed name', Buffer.from('names.reliability.test')],
  ['IPv4 literal', Buffer.from('127.0.0.1')],
  ['IPv4 public literal', Buffer.from('8.8.8.8')],
  ['IPv6 literal', Buffer.from('::1')],
  ['bracketed IPv6', Buffer.from('[::1]')],
  ['IPv4-mapped IPv6', Buffer.from('::ffff:127.0.0.1')],
  ['decimal IP', Buffer.from('2130706433')],
  ['empty name', Buffer.alloc(0)],
  ['single dot', Buffer.from('.')],
  ['NUL inside', Buffer.from(`${MANAGED}\0.evil`)],
  ['NUL at the end', Buffer.from(`${MANAGED}\0`)],
  ['0xff bytes', Buffer.from([0xff, 0xfe, 0x2e, 0x74, 0x65, 0x73, 0x74])],
  ['UTF-8 (not punycode)', Buffer.from('bücher.names.reliability.test')],
  ['space', Buffer.from('a b.names.reliability.test')],
  ['slash and dots', Buffer.from('../../etc/passwd')],
  ['percent-encoded', Buffer.from('%2e%2e.names.reliability.test')],
  ['wildcard', Buffer.from('*.names.reliability.test')],
  ['label of 64 bytes', Buffer.from(`${'a'.repeat(64)}.names.reliability.test`)],
  ['name of 255 bytes', Buffer.from(`${'a.'.repeat(127)}t`)],
  ['name of 1000 bytes', Buffer.from('b'.repeat(1000))],
  ['control characters', Buffer.from('\r\nHost: evil\r\n')],
  ['trailing dots', Buffer.from('unknown.names.reliability.test..')],
  ['leading dot', Buffer.from(`.${MANAGED}`)],
  ['underscore', Buffer.from('_acme-challenge.names.reliability.test')],
  ['localhost', Buffer.from('localhost')],
]

function rawHello(port: number, hello: Buffer): Promise<void> {
  return new Promise((resolve) => {
    const socket = netConnect(port, '127.0.0.1', () => socket.write(hello))
    socket.setTimeout(2000, () => socket.destroy())
    socket.on('error', () => {})
    socket.on('close', () => resolve())
    socket.resume()
  })
}

test('check 7: unknown, IP, empty and odd server names never trigger an order', async (t) => {
  const pebble = await startPebble()
  t.after(() => pebble.stop())
  const app = await startAcmeApp({
    port: pebble.tlsPort,
    acme: {
      names: [MANAGED],
      directory: pebble.directoryUrl,
      termsOfServiceAgreed: true,
      caRoots: pebble.caBundle,
      storage: new MemoryStorage(),
    },
  })
  t.after(() => app.close())
  await app.acme.waitForCertificate(MANAGED)
  const root = await pebble.issuingRoot()
  const ordersBefore = countOrders(pebble)
  const sentBefore = app.acme.ordersSent
  const entriesBefore = app.acme.resolver.size
  const bases = await Promise.all([
    captureHello({ servername: MANAGED, alpn: ['h2', 'http/1.1'], version: 'TLSv1.3' }),
    captureHello({ servername: MANAGED, alpn: ['acme-tls/1'], version: 'TLSv1.2' }),
  ])
  let attempts = 0
  for (const peek of [false, true]) {
    // A pending challenge for another name turns the ClientHello peek on, so these bytes also meet our parser.
    if (peek)
      app.acme.resolver.setChallenge(
        'other.names.reliability.test',
        await challengeCertificate('other.names.reliability.test'),
      )
    for (const [, name] of HOSTILE) {
      for (const base of bases) {
        await rawHello(pebble.tlsPort, withServerName(base, name))
        attempts++
      }
      const text = name.toString('latin1')
      if (/^[\x21-\x7e]+$/.test(text) && isIP(text) === 0) {
        await handshake({ port: pebble.tlsPort, servername: text, alpn: ['http/1.1'] })
        await handshake({ port: pebble.tlsPort, servername: text, alpn: ['acme-tls/1'] })
        attempts += 2
      }
    }
    await rawHello(pebble.tlsPort, withServerName(bases[0]!, undefined))
    await handshake({ port: pebble.tlsPort, alpn: ['acme-tls/1'] })
    attempts += 2
    if (peek) app.acme.resolver.deleteChallenge('other.names.reliability.test')
  }
  // Host headers on a valid connection, and the decorator.
  for (const [, name] of HOSTILE) {
    const host = name.toString('latin1')
    if (/^[\x21-\x7e]+$/.test(host)) {
      const res = await new Promise<number>((resolve) => {
        httpsGet(pebble.tlsPort, MANAGED, root, '/', host).then(
          (r) => resolve(r.status),
          () => resolve(0),
        )
      })
      assert.ok(res === 200 || res === 400, `Host ${JSON.stringify(host)}: ${res}`)
      attempts++
    }
    await assert.rejects(app.acme.issue(host), { code: 'FACME_UNKNOWN_NAME' })
    await assert.rejects(app.acme.waitForCertificate(host), { code: 'FACME_UNKNOWN_NAME' })
    attempts += 2
  }
  const orders = countOrders(pebble) - ordersBefore
  const added = app.acme.resolver.size - entriesBefore
  figure(
    `check 7: ${HOSTILE.length} hostile names (unknown, IP literals, empty, NUL/0xff/UTF-8/control bytes, over-long) x raw hellos, TLS clients, ` +
      `Host headers and issue()/waitForCertificate(), peek off and on: ${attempts} attempts, ${orders} orders at the CA, ` +
      `${app.acme.ordersSent - sentBefore} sent, ${added} resolver entries added, process up`,
  )
  assert.equal(orders, 0)
  assert.equal(app.acme.ordersSent, sentBefore)
  assert.equal(added, 0)
  assert.equal((await httpsGet(pebble.tlsPort, MANAGED, root)).status, 200)
})
