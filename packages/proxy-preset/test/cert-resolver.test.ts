// Manual certificates in the SNI resolver: a certificate with several names is one secure context (built once per
// load or reload, shared by its names, swapped for all of them at once), and a pair the TLS stack refuses after
// validation changes nothing served.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { test } from 'node:test'
import { promisify } from 'node:util'
import { makeTestCertificates } from '@autotls/pebble-harness'
import { createProxy } from '../src/index.js'
import { certFiles, h1, startUpstream } from './helpers.js'

const NAMES = ['a.multi.test.local', 'b.multi.test.local', '*.w.multi.test.local']
/** One host per name (the wildcard through one of its names). */
const HOSTS = ['a.multi.test.local', 'b.multi.test.local', 'x.w.multi.test.local']

test('a certificate with several names: one context per (re)load, shared by its names, swapped for all at once', async () => {
  const up = await startUpstream('multi')
  const files = await certFiles(NAMES)
  const proxy = await createProxy({
    logger: false,
    https: { host: '127.0.0.1', port: 0 },
    http: false,
    certificates: [{ cert: files.cert, key: files.key }],
    reload: { pollIntervalMs: 0 },
    routes: NAMES.map((host) => ({ host, upstream: up.url })),
  })
  try {
    const { resolver } = proxy
    const contexts = () => HOSTS.map((host) => resolver.lookup(host))
    assert.equal(resolver.stats.contextsBuilt, 1, 'one secure context for three names at start')
    const first = contexts()
    assert.ok(first[0])
    for (const context of first) assert.equal(context, first[0], 'every name serves the same context')

    // A good replacement: one more context, installed for every name.
    const next = await makeTestCertificates({ names: NAMES })
    await writeFile(files.key, next.key)
    await writeFile(files.cert, next.cert)
    await proxy.certificates!.reloadAll()
    assert.equal(resolver.stats.contextsBuilt, 2, 'one secure context for three names per reload')
    const second = contexts()
    assert.notEqual(second[0], first[0])
    for (const context of second) assert.equal(context, second[0])

    // A pair that passes validation but that OpenSSL refuses to serve (a 768-bit RSA key): refused as a whole,
    // every name keeps the pair it had.
    const weak = await weakPair(files.dir, NAMES)
    const rejected = new Promise<Error>((resolve) => proxy.certificates!.on('rejected', ({ error }) => resolve(error)))
    await writeFile(files.key, weak.key)
    await writeFile(files.cert, weak.cert)
    await proxy.certificates!.reloadAll()
    assert.match((await rejected).message, /too small/)
    assert.deepEqual(contexts(), second)
    assert.equal(proxy.certificates!.status()[0]!.serial.toUpperCase(), serialOf(next.cert))

    // And the handshakes say the same.
    const { port } = (await proxy.listen()).https
    for (const host of HOSTS) {
      const res = await h1({ port, host, ca: next.caCert })
      assert.equal(res.status, 200, host)
      assert.equal(res.cert?.serialNumber.toUpperCase(), serialOf(next.cert), host)
    }
  } finally {
    await proxy.close()
    await Promise.all([up.close(), files.remove()])
  }
})

function serialOf(pem: string): string {
  return new X509Certificate(pem).serialNumber.toUpperCase()
}

/** A self-signed leaf with a 768-bit RSA key: it parses and matches its key, but OpenSSL refuses to serve it. */
async function weakPair(dir: string, names: string[]): Promise<{ key: string; cert: string }> {
  const key = join(dir, 'weak-key.pem')
  const cert = join(dir, 'weak-cert.pem')
  await promisify(execFile)('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:768',
    '-nodes',
    '-keyout',
    key,
    '-out',
    cert,
    '-days',
    '2',
    '-subj',
    `/CN=${names[0]}`,
    '-addext',
    `subjectAltName=${names.map((n) => `DNS:${n}`).join(',')}`,
  ])
  return { key: await readFile(key, 'utf8'), cert: await readFile(cert, 'utf8') }
}
