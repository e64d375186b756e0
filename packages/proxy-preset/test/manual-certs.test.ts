// Manual certificate files: replaced on disk while a client loops (new serial within a bound, no failed request),
// broken replacements refused with the old pair kept, and the validation rules on their own.
import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { copyFile, readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { connect as tlsConnect } from 'node:tls'
import { makeTestCertificates } from '@autotls/pebble-harness'
import { createProxy, type ProxyHandle } from '../src/index.js'
import { validatePair } from '../src/internal.js'
import { type CertFiles, certFiles, h1, startUpstream, type Upstream } from './helpers.js'

const HOST = 'reload.test.local'
const RELOAD_BOUND_MS = 5_000

function serialOf(pem: string): string {
  return new X509Certificate(pem).serialNumber
}

describe('manual certificates: reload on change', () => {
  let upstream: Upstream
  let first: CertFiles
  let proxy: ProxyHandle
  let port: number
  const cas: string[] = []

  before(async () => {
    upstream = await startUpstream('reload')
    first = await certFiles([HOST])
    cas.push(first.ca)
    proxy = await createProxy({
      logger: false,
      https: { host: '127.0.0.1', port: 0 },
      http: false,
      certificates: [{ cert: first.cert, key: first.key }],
      reload: { debounceMs: 50, pollIntervalMs: 1000 },
      routes: [{ host: HOST, upstream: upstream.url }],
    })
    port = (await proxy.listen()).https.port
  })
  after(async () => {
    await proxy?.close()
    await upstream?.close()
    await first?.remove()
  })

  test('replaced files are served within a bound with 0 failed requests; a broken replacement is refused', async (t) => {
    const serials: string[] = []
    const failures: string[] = []
    let looping = true
    const loop = (async () => {
      while (looping) {
        try {
          // A new connection each time: each request sees the certificate served at that moment.
          const res = await h1({ port, host: HOST, ca: cas })
          if (res.status !== 200) failures.push(`status ${res.status}`)
          serials.push(res.cert!.serialNumber)
        } catch (err) {
          failures.push((err as Error).message)
        }
      }
    })()
    try {
      const oldSerial = serialOf(await readFile(first.cert, 'utf8'))
      while (serials.length < 5) await new Promise((r) => setTimeout(r, 10))
      assert.equal(serials.at(-1)?.toUpperCase(), oldSerial.toUpperCase())

      // 1. A good replacement, written the way certbot and most tools do: new files renamed over the old ones.
      const second = await makeTestCertificates({ names: [HOST] })
      cas.push(second.caCert)
      const newSerial = serialOf(second.cert)
      const seenReload = waitFor(proxy, 'reloaded')
      const started = Date.now()
      await writeFile(join(first.dir, 'cert.tmp'), second.cert)
      await writeFile(join(first.dir, 'key.tmp'), second.key)
      await rename(join(first.dir, 'cert.tmp'), first.cert)
      await rename(join(first.dir, 'key.tmp'), first.key)
      await seenReload
      const countAtReload = serials.length
      while (!serials.slice(countAtReload).some((s) => s.toUpperCase() === newSerial.toUpperCase())) {
        assert.ok(Date.now() - started < RELOAD_BOUND_MS, `new serial not served within ${RELOAD_BOUND_MS} ms`)
        await new Promise((r) => setTimeout(r, 10))
      }
      const elapsed = Date.now() - started
      t.diagnostic(`new certificate served ${elapsed} ms after the files were replaced`)
      assert.ok(elapsed < RELOAD_BOUND_MS)

      // 2. A broken replacement: a certificate whose key is not the one on disk. Refused; the old pair stays.
      const third = await makeTestCertificates({ names: [HOST] })
      const seenReject = waitFor(proxy, 'rejected')
      await writeFile(first.cert, third.cert)
      const rejected = await seenReject
      assert.match(rejected.error.message, /private key does not match/)
      const countAtReject = serials.length
      while (serials.length < countAtReject + 5) await new Promise((r) => setTimeout(r, 10))
      for (const s of serials.slice(countAtReject)) assert.equal(s.toUpperCase(), newSerial.toUpperCase())
      const status = proxy.certificates!.status()[0]!
      assert.match(status.lastError?.message ?? '', /private key does not match/)
      assert.equal(status.serial.toUpperCase(), newSerial.toUpperCase())

      // 3. Garbage in place of the certificate: refused too.
      const seenGarbage = waitFor(proxy, 'rejected')
      await writeFile(first.cert, 'not a certificate\n')
      assert.match((await seenGarbage).error.message, /no PEM certificate/)

      // 4. A good pair written in place (key first, then certificate): accepted again.
      const fourth = await makeTestCertificates({ names: [HOST] })
      cas.push(fourth.caCert)
      const seenBack = waitFor(proxy, 'reloaded')
      await writeFile(first.key, fourth.key)
      await writeFile(first.cert, fourth.cert)
      assert.equal((await seenBack).serial.toUpperCase(), serialOf(fourth.cert).toUpperCase())
      assert.equal(failures.length, 0, `failed requests: ${failures.slice(0, 3).join('; ')}`)
      t.diagnostic(`${serials.length} requests during the reloads, 0 failed`)
    } finally {
      looping = false
      await loop
    }
  })

  test('copying over the files (no rename) is noticed too', async () => {
    const next = await certFiles([HOST])
    try {
      cas.push(next.ca)
      const seen = waitFor(proxy, 'reloaded')
      await copyFile(next.key, first.key)
      await copyFile(next.cert, first.cert)
      const event = await seen
      assert.equal(event.serial.toUpperCase(), serialOf(await readFile(next.cert, 'utf8')).toUpperCase())
      const res = await h1({ port, host: HOST, ca: cas })
      assert.equal(res.cert?.serialNumber.toUpperCase(), event.serial.toUpperCase())
    } finally {
      await next.remove()
    }
  })
})

function waitFor<K extends 'reloaded' | 'rejected'>(
  proxy: ProxyHandle,
  event: K,
): Promise<import('../src/index.js').ManualCertificateEvents[K]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} event within ${RELOAD_BOUND_MS} ms`)), RELOAD_BOUND_MS)
    const off = proxy.certificates!.on(event, (payload) => {
      clearTimeout(timer)
      off()
      resolve(payload)
    })
  })
}

describe('validatePair', () => {
  test('refuses expired, not-yet-valid, mismatched, uncovered; accepts a good pair', async () => {
    const a = await makeTestCertificates({ names: ['v.test.local', '*.w.test.local'], days: 2 })
    const b = await makeTestCertificates({ names: ['v.test.local'] })
    assert.ok(validatePair('a', a.key, a.cert, ['v.test.local', '*.w.test.local', 'x.w.test.local']))
    const in3days = Date.now() + 3 * 86_400_000
    assert.throws(() => validatePair('a', a.key, a.cert, [], in3days), {
      code: 'FPROXY_BAD_CERTIFICATE',
      message: /expired/,
    })
    const lastYear = Date.now() - 365 * 86_400_000
    assert.throws(() => validatePair('a', a.key, a.cert, [], lastYear), /not valid before/)
    assert.throws(() => validatePair('a', b.key, a.cert, []), /private key does not match/)
    assert.throws(() => validatePair('a', a.key, a.cert, ['other.test.local']), /does not cover other\.test\.local/)
    assert.throws(
      () => validatePair('a', a.key, `${a.cert}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n`, []),
      /chain certificate does not parse/,
    )
  })

  test('a bad file at start is a startup error, with the code to switch on', async () => {
    const files = await certFiles(['start.test.local'])
    try {
      await writeFile(files.key, (await makeTestCertificates({ names: ['start.test.local'] })).key)
      await assert.rejects(
        createProxy({
          logger: false,
          https: { port: 0 },
          http: false,
          certificates: [{ cert: files.cert, key: files.key }],
          routes: [{ host: 'start.test.local', upstream: 'http://127.0.0.1:9' }],
        }),
        { code: 'FPROXY_BAD_CERTIFICATE' },
      )
    } finally {
      await files.remove()
    }
  })
})

describe('default certificate', () => {
  test('served without SNI and for uncovered names; reloaded like the others', async () => {
    const upstream = await startUpstream('default')
    const site = await certFiles(['site.test.local'])
    const fallback = await certFiles(['fallback.test.local'])
    const proxy = await createProxy({
      logger: false,
      https: { host: '127.0.0.1', port: 0 },
      http: false,
      certificates: [{ cert: site.cert, key: site.key }],
      defaultCertificate: { cert: fallback.cert, key: fallback.key },
      reload: { debounceMs: 20, pollIntervalMs: 500 },
      routes: [{ host: 'site.test.local', upstream: upstream.url }],
    })
    try {
      const { port } = (await proxy.listen()).https
      const peer = (servername?: string) =>
        new Promise<string>((resolve, reject) => {
          const socket = tlsConnect({
            host: '127.0.0.1',
            port,
            rejectUnauthorized: false,
            ...(servername ? { servername } : {}),
          })
          socket.once('secureConnect', () => {
            resolve(socket.getPeerCertificate().subjectaltname ?? '')
            socket.destroy()
          })
          socket.once('error', reject)
        })
      assert.equal(await peer('site.test.local'), 'DNS:site.test.local')
      assert.equal(await peer('other.test.local'), 'DNS:fallback.test.local')
      assert.equal(await peer(), 'DNS:fallback.test.local', 'no SNI: the server default')
      const next = await makeTestCertificates({ names: ['fallback2.test.local'] })
      const seen = waitFor(proxy, 'reloaded')
      await writeFile(fallback.key, next.key)
      await writeFile(fallback.cert, next.cert)
      await seen
      assert.equal(await peer('other.test.local'), 'DNS:fallback2.test.local')
      assert.equal(await peer(), 'DNS:fallback2.test.local', 'no SNI: the server default follows the reload')
    } finally {
      await proxy.close()
      await Promise.all([upstream.close(), site.remove(), fallback.remove()])
    }
  })
})
