// Loading cached certificates from sealed records: served from their stored metadata without parsing keys at start,
// checked in full in the background after listening, and dropped (treated as missing) when a check fails, whether
// the background check or the first handshake finds it. Records without a seal are still checked before serving.
import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { createSecureContext } from 'node:tls'
import { makeTestCertificates, startPebble } from '@autotls/pebble-harness'
import Fastify from 'fastify'
import { type CertificateRecord, parseRecord, recordDigest, recordSeal } from '../src/certificate.js'
import { acmeServerFactory, CertResolver, FileStorage, fastifyAcme, MemoryStorage, type Storage } from '../src/index.js'
import { directoryKey, wiringOf } from '../src/internal.js'
import { handshake, httpsGet, pebbleAcme, startApp, until } from './helpers.js'

const DIRECTORY = 'https://127.0.0.1:9/dir'

function sealed(name: string, keyPem: string, chainPem: string, serial: string): CertificateRecord {
  const now = Date.now()
  const record: CertificateRecord = {
    name,
    keyPem,
    chainPem,
    keyType: 'P-256',
    notBefore: new Date(now - 3_600_000).toISOString(),
    notAfter: new Date(now + 30 * 86_400_000).toISOString(),
    serial,
    issuer: 'CN=test',
    issuedAt: new Date(now).toISOString(),
    digest: recordDigest(keyPem, chainPem),
  }
  record.seal = recordSeal(record)
  return record
}

/** Flips one base64 character of the leaf's signature (just before its END line). */
function damageLeafSignature(chainPem: string): string {
  const at = chainPem.indexOf('-----END CERTIFICATE-----') - 30
  return chainPem.slice(0, at) + (chainPem[at] === 'A' ? 'B' : 'A') + chainPem.slice(at + 1)
}

test('records: a seal covers name and metadata; a broken seal makes the record unreadable', async () => {
  const certs = await makeTestCertificates({ names: ['a.seal.test'] })
  const record = sealed('a.seal.test', certs.key, `${certs.cert}${certs.caCert}`, '01')
  assert.ok(parseRecord(Buffer.from(JSON.stringify(record)))?.seal)
  for (const change of [{ name: 'b.seal.test' }, { notAfter: new Date(0).toISOString() }, { serial: '02' }]) {
    assert.equal(parseRecord(Buffer.from(JSON.stringify({ ...record, ...change }))), undefined, JSON.stringify(change))
  }
  const { seal: _seal, ...unsealed } = record
  assert.ok(parseRecord(Buffer.from(JSON.stringify(unsealed))), 'records without a seal are still read')
})

test('resolver: a lazy pair whose context cannot be built is dropped at its first handshake', async () => {
  const a = await makeTestCertificates({ names: ['a.lazy.test'] })
  const b = await makeTestCertificates({ names: ['b.lazy.test'] })
  const resolver = new CertResolver()
  const invalid: Error[] = []
  resolver.setLazy('a.lazy.test', { key: b.key, cert: a.cert }, (err) => invalid.push(err))
  resolver.setLazy('*.lazy.test', { key: b.key, cert: b.cert })
  // The name's own pair fails, so the wildcard answers this handshake.
  assert.ok(resolver.lookup('a.lazy.test'))
  assert.equal(resolver.has('a.lazy.test'), false)
  assert.equal(resolver.stats.contextsFailed, 1)
  assert.equal(invalid.length, 0, 'told outside the handshake')
  await new Promise((resolve) => setImmediate(resolve))
  assert.equal(invalid.length, 1)
  resolver.delete('*.lazy.test')
  resolver.setLazy('c.lazy.test', { key: 'not a key', cert: a.cert })
  assert.equal(resolver.lookup('c.lazy.test'), undefined)
  // A fallback still answers when the failing entry is gone.
  resolver.setFallback({ key: a.key, cert: a.cert })
  resolver.setLazy('d.lazy.test', { key: b.key, cert: a.cert })
  assert.ok(resolver.lookup('d.lazy.test'))
  assert.ok(createSecureContext({ key: a.key, cert: a.cert }))
})

test('sealed records are served unchecked at start, checked after listening, and dropped when a check fails', async (t) => {
  const names = ['good.cached.test', 'wrongkey.cached.test', 'badsig.cached.test', 'legacy.cached.test']
  const certs = await Promise.all(names.map((n) => makeTestCertificates({ names: [n] })))
  const [good, wrongKey, badSig, legacy] = certs as [
    (typeof certs)[0],
    (typeof certs)[0],
    (typeof certs)[0],
    (typeof certs)[0],
  ]
  const storage = new MemoryStorage()
  const dir = directoryKey(DIRECTORY)
  const put = (r: CertificateRecord) => storage.put(`${dir}/certificates/${r.name}.json`, JSON.stringify(r))
  await put(sealed(names[0]!, good.key, good.cert, '10'))
  // Sealed, but the key belongs to another certificate: only building the context (or the full check) finds it.
  await put(sealed(names[1]!, good.key, wrongKey.cert, '11'))
  // Sealed, key matches, leaf signature damaged (and the chain holds its issuer): only the full check finds it.
  await put(sealed(names[2]!, badSig.key, damageLeafSignature(`${badSig.cert}${badSig.caCert}`), '12'))
  // No seal and a key of another certificate: checked, and refused, during load as before.
  const { seal: _s, digest: _d, ...old } = sealed(names[3]!, good.key, legacy.cert, '13')
  await storage.put(`${dir}/certificates/${names[3]}.json`, JSON.stringify(old))

  const { app, lines } = await readyApp(t, names, storage)
  // Before listening: the sealed ones are served from metadata (all three, unchecked); the unsealed bad one is not.
  assert.deepEqual(
    names.map((n) => app.acme.status(n)?.state),
    ['valid', 'valid', 'valid', 'pending'],
  )
  assert.equal(app.acme.status(names[1]!)?.serial, '11')

  // The wrong key is found by the first handshake for it (the background check waits VERIFY_DELAY_MS).
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as { port: number }).port
  const served = await handshake({ port, servername: names[1]! })
  assert.equal(served.ok, false, 'no certificate served for a pair whose key does not match')
  await new Promise((resolve) => setImmediate(resolve))
  assert.equal(wiringOf(app.server)?.resolver.stats.contextsFailed, 1)
  assert.equal(app.acme.status(names[1]!)?.state, 'pending', 'dropped at once, not at the background check')
  assert.equal(app.acme.status(names[1]!)?.serial, undefined)
  assert.equal(
    lines.some((l) => l.includes('cached certificates checked')),
    false,
    'background check not started yet',
  )

  await until(
    () => lines.some((l) => l.includes('cached certificates checked')),
    10_000,
    'the background check to finish',
  )
  const summary = JSON.parse(lines.find((l) => l.includes('cached certificates checked'))!)
  assert.equal(summary.checked, 3)
  assert.deepEqual(
    names.map((n) => app.acme.status(n)?.state),
    ['valid', 'pending', 'pending', 'pending'],
  )
  assert.equal(app.acme.status(names[2]!)?.serial, undefined)
  const unusable = lines.filter((l) => l.includes('cached certificate is unusable')).map((l) => JSON.parse(l).name)
  assert.deepEqual(unusable.sort(), [names[1], names[2], names[3]].sort())

  const ok = await handshake({ port, servername: names[0]! })
  assert.ok(ok.ok && ok.cert.serialNumber.length > 0, 'the good record is served')
  const dropped = await handshake({ port, servername: names[2]! })
  assert.equal(dropped.ok, false, 'the damaged certificate is no longer served')
})

test('a sealed cached certificate that fails its background check is ordered again and served', async (t) => {
  const pebble = await startPebble()
  t.after(() => pebble.stop())
  const cacheDir = await mkdtemp(join(tmpdir(), 'facme-sealed-'))
  t.after(() => rm(cacheDir, { recursive: true, force: true }))
  const name = 'resealed.acme.test'
  const acme = {
    ...pebbleAcme(pebble, [name]),
    cacheDir,
  }
  const first = await startApp({ port: pebble.tlsPort, acme })
  await first.acme.waitForCertificate(name)
  await first.close()

  // Damage the leaf's signature and seal the record again, as if written that way: it loads, then fails the check.
  const path = join(cacheDir, directoryKey(pebble.directoryUrl), 'certificates', `${name}.json`)
  const record = parseRecord(await readFile(path))!
  assert.ok(record.seal, 'new records are sealed')
  const chainPem = damageLeafSignature(record.chainPem)
  const damaged = { ...record, chainPem, digest: recordDigest(record.keyPem, chainPem) }
  damaged.seal = recordSeal(damaged)
  await writeFile(path, JSON.stringify(damaged))

  const app = await startApp({ port: pebble.tlsPort, acme })
  t.after(() => app.close())
  const issued = new Promise<void>((resolve) => app.acme.on('certificate-issued', () => resolve()))
  await issued
  assert.equal(app.acme.ordersSent, 1)
  assert.notEqual(app.acme.status(name)?.serial, record.serial)
  assert.equal((await httpsGet(pebble.tlsPort, name, await pebble.issuingRoot())).status, 200)
})

/** An app on the plugin (issueOnStart off, the CA never contacted) with its log lines, ready or listening. */
async function readyApp(t: { after: (fn: () => unknown) => void }, names: string[], storage: Storage, listen = false) {
  const lines: string[] = []
  const app = Fastify({
    serverFactory: acmeServerFactory(),
    logger: { level: 'info', stream: { write: (l: string) => lines.push(l) } },
  })
  t.after(() => app.close())
  await app.register(fastifyAcme, {
    names,
    directory: DIRECTORY,
    termsOfServiceAgreed: true,
    storage,
    issueOnStart: false,
  })
  if (listen) await app.listen({ port: 0, host: '127.0.0.1' })
  else await app.ready()
  return { app, lines }
}

test('retry state is found for a name containing ".tmp-" (FileStorage lists it like any key)', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'facme-tmpname-'))
  t.after(() => rm(root, { recursive: true, force: true }))
  const storage = new FileStorage(root)
  const name = 'app.tmp-staging.cached.test'
  const now = Date.now()
  const state = { failures: 4, nextAttemptAt: now + 3_600_000, lastError: 'earlier failure', lastErrorAt: now }
  await storage.put(`${directoryKey(DIRECTORY)}/state/${name}.json`, JSON.stringify(state))
  const { app } = await readyApp(t, [name, 'plain.cached.test'], storage)
  assert.equal(app.acme.status(name)?.failures, 4)
  assert.equal(app.acme.status(name)?.nextAction?.kind, 'retry')
})

test('a storage whose list() returns no array, or whose getMany() fails, still loads every name', async (t) => {
  const certs = await makeTestCertificates({ names: ['odd.cached.test'] })
  class OddStorage extends MemoryStorage {
    override async list(): Promise<string[]> {
      return undefined as never
    }
    async getMany(): Promise<Array<Buffer | undefined | Error>> {
      throw new Error('batch reads are broken here')
    }
  }
  const storage = new OddStorage()
  const record = sealed('odd.cached.test', certs.key, certs.cert, '21')
  await storage.put(`${directoryKey(DIRECTORY)}/certificates/odd.cached.test.json`, JSON.stringify(record))
  const { app, lines } = await readyApp(t, ['odd.cached.test'], storage)
  assert.equal(app.acme.status('odd.cached.test')?.state, 'valid')
  assert.equal(app.acme.status('odd.cached.test')?.serial, '21')
  assert.ok(lines.some((l) => l.includes('batch read of cached certificates failed')))
})

test('the background check corrects sealed metadata that does not match the certificate, and keeps serving it', async (t) => {
  const certs = await makeTestCertificates({ names: ['meta.cached.test'] })
  const storage = new MemoryStorage()
  const wrong = sealed('meta.cached.test', certs.key, certs.cert, 'BAD')
  wrong.notAfter = '2099-01-01T00:00:00.000Z'
  wrong.seal = recordSeal(wrong)
  await storage.put(`${directoryKey(DIRECTORY)}/certificates/meta.cached.test.json`, JSON.stringify(wrong))
  const { app, lines } = await readyApp(t, ['meta.cached.test'], storage, true)
  assert.equal(app.acme.status('meta.cached.test')?.notAfter, '2099-01-01T00:00:00.000Z', 'metadata used at start')
  await until(() => lines.some((l) => l.includes('cached certificates checked')), 10_000, 'the background check')
  assert.ok(lines.some((l) => l.includes('metadata did not match the certificate')))
  const status = app.acme.status('meta.cached.test')!
  const actual = new X509Certificate(certs.cert)
  assert.equal(status.notAfter, new Date(actual.validTo).toISOString())
  assert.equal(status.serial, actual.serialNumber)
  assert.equal(status.state, 'valid')
  assert.ok(Date.parse(status.nextAction!.at) < Date.parse(status.notAfter!), 'renewal planned from the real expiry')
  const port = (app.server.address() as { port: number }).port
  const served = await handshake({ port, servername: 'meta.cached.test' })
  assert.ok(served.ok, 'still served')
})
