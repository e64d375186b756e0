// Regressions from the reliability suite (check 4): a cached certificate whose signature was damaged on disk still
// parses and matches its key, and a stored account whose key was damaged is still valid JSON. Both used to be taken
// as good: the first was served to clients that all refused it, the second failed every order forever.
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { startPebble } from '@autotls/pebble-harness'
import { parseRecord, recordDigest } from '../src/certificate.js'
import { FileStorage } from '../src/index.js'
import { checkPair, directoryKey } from '../src/internal.js'
import { httpsGet, pebbleAcme, startApp } from './helpers.js'

function flipBefore(text: string, marker: string, occurrence: number, back: number): string {
  let at = -1
  for (let i = 0; i <= occurrence; i++) at = text.indexOf(marker, at + 1)
  const pos = at - back
  return text.slice(0, pos) + (text[pos] === 'A' ? 'B' : 'A') + text.slice(pos + 1)
}

test('a stored certificate with a damaged signature or a wrong digest is unusable', async (t) => {
  const pebble = await startPebble()
  t.after(() => pebble.stop())
  const dir = await mkdtemp(join(tmpdir(), 'facme-corrupt-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const name = 'signed.acme.test'
  const app = await startApp({
    port: pebble.tlsPort,
    acme: {
      ...pebbleAcme(pebble, [name]),
      cacheDir: dir,
    },
  })
  await app.acme.waitForCertificate(name)
  await app.close()
  const path = join(dir, directoryKey(pebble.directoryUrl), 'certificates', `${name}.json`)
  const record = parseRecord(await readFile(path))!
  assert.equal(record.digest, recordDigest(record.keyPem, record.chainPem), 'new records carry their digest')
  // The leaf's signature (just before its END line) damaged: parses, key matches, but not signed by the intermediate.
  const damagedLeaf = flipBefore(record.chainPem, '-----END CERTIFICATE-----', 0, 30)
  assert.throws(() => checkPair(name, record.keyPem, damagedLeaf), { code: 'FACME_BAD_CERTIFICATE' })
  // The intermediate damaged: only the digest can tell (its issuer is not in the chain).
  const damagedIntermediate = flipBefore(record.chainPem, '-----END CERTIFICATE-----', 1, 30)
  checkPair(name, record.keyPem, damagedIntermediate)
  assert.equal(parseRecord(Buffer.from(JSON.stringify({ ...record, chainPem: damagedIntermediate }))), undefined)
  // Records written before digests existed are still read.
  const { digest: _digest, ...legacy } = record
  assert.ok(parseRecord(Buffer.from(JSON.stringify(legacy))))

  // The plugin treats a damaged file as missing: it orders again and serves a certificate clients accept.
  await writeFile(path, JSON.stringify({ ...record, chainPem: damagedIntermediate }))
  const again = await startApp({
    port: pebble.tlsPort,
    acme: {
      ...pebbleAcme(pebble, [name]),
      cacheDir: dir,
    },
  })
  t.after(() => again.close())
  await again.acme.waitForCertificate(name)
  assert.equal(again.acme.ordersSent, 1)
  assert.equal((await httpsGet(pebble.tlsPort, name, await pebble.issuingRoot())).status, 200)
})

test('a stored account whose key is damaged is replaced by a new account, and orders succeed', async (t) => {
  const pebble = await startPebble()
  t.after(() => pebble.stop())
  const dir = await mkdtemp(join(tmpdir(), 'facme-account-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const storage = new FileStorage(dir)
  const accountKey = `${directoryKey(pebble.directoryUrl)}/account.json`
  await storage.put(
    accountKey,
    JSON.stringify({
      directoryUrl: pebble.directoryUrl,
      keyPem:
        '-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgDAMAGED\n-----END PRIVATE KEY-----\n',
      url: `${pebble.directoryUrl.replace('/dir', '')}/my-account/1`,
      contact: [],
      createdAt: new Date().toISOString(),
    }),
  )
  const lines: string[] = []
  const app = await startApp({
    port: pebble.tlsPort,
    logLines: lines,
    acme: {
      ...pebbleAcme(pebble, ['account.acme.test']),
      storage,
    },
  })
  t.after(() => app.close())
  const status = await Promise.race([
    app.acme.waitForCertificate('account.acme.test'),
    new Promise((_, reject) =>
      setTimeout(() => reject(new Error(JSON.stringify(app.acme.status('account.acme.test')))), 15_000),
    ),
  ])
  assert.ok(status)
  assert.ok(
    lines.some((l) => l.includes('unreadable')),
    'the damaged account is logged',
  )
  const stored = JSON.parse(String(await storage.get(accountKey))) as { url: string }
  assert.doesNotMatch(stored.url, /my-account\/1$/, 'a new account replaced the damaged one')
})
