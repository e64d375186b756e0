// Check 6: trace-level logs of a full issuance (EAB account registration, TLS-ALPN-01, 20% rejected nonces) and of a
// renewal contain no private key, no JWK private part and no EAB key: every secret the run produced is looked for,
// in every form it could take (PEM lines, base64/base64url/hex of the raw key, the JWK "d").
import assert from 'node:assert/strict'
import { createPrivateKey, randomBytes } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { test } from 'node:test'
import { FileStorage } from '@autotls/fastify-acme'
import { startPebble } from '@autotls/pebble-harness'
import { figure, startAcmeApp, tempDir } from './helpers.js'

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = []
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name)
    if (entry.isDirectory()) out.push(...(await filesUnder(full)))
    else out.push(full)
  }
  return out
}

/** Every form of a private key a log could contain: its PEM body lines, and the JWK private members. */
function secretForms(pem: string): string[] {
  const forms = pem
    .split('\n')
    .filter((line) => line.length >= 16 && !line.startsWith('-----'))
    .map((line) => line.slice(0, 40))
  const jwk = createPrivateKey(pem).export({ format: 'jwk' }) as Record<string, unknown>
  for (const member of ['d', 'p', 'q', 'dp', 'dq', 'qi']) {
    const value = jwk[member]
    if (typeof value === 'string') {
      forms.push(value.slice(0, 40))
      const raw = Buffer.from(value, 'base64url')
      forms.push(raw.toString('base64').slice(0, 40), raw.toString('hex').slice(0, 40))
    }
  }
  return forms
}

test('check 6: trace logs of issuance and renewal contain no private key, JWK private part or EAB key', async (t) => {
  const hmacKey = randomBytes(32).toString('base64url')
  const pebble = await startPebble({
    eab: [{ kid: 'kid-reliability', hmacKey }],
    nonceRejectPercent: 20,
    certificateValidityPeriod: 20,
  })
  t.after(() => pebble.stop())
  const cache = await tempDir('logs')
  t.after(() => cache.remove())
  const lines: string[] = []
  const names = ['a.logs.reliability.test', 'b.logs.reliability.test']
  const app = await startAcmeApp({
    port: pebble.tlsPort,
    log: { level: 'trace', lines },
    acme: {
      names,
      directory: pebble.directoryUrl,
      termsOfServiceAgreed: true,
      caRoots: pebble.caBundle,
      storage: new FileStorage(cache.path),
      eab: { kid: 'kid-reliability', hmacKey },
      renewBeforeRatio: 0.5,
      retryMinMs: 500,
      retryMaxMs: 2000,
    },
  })
  t.after(() => app.close())
  // Collect every certificate key as it is stored, before a renewal replaces it.
  const secrets = new Set<string>()
  const collect = async () => {
    for (const file of await filesUnder(cache.path)) {
      const text = await readFile(file, 'utf8').catch(() => '')
      let value: unknown
      try {
        value = JSON.parse(text)
      } catch {
        continue
      }
      for (const field of Object.values(value as Record<string, unknown>)) {
        if (typeof field === 'string' && field.includes('PRIVATE KEY')) secrets.add(field)
      }
    }
  }
  let renewals = 0
  const renewed = new Promise<void>((resolve) =>
    app.acme.on('certificate-issued', (e) => {
      void collect()
      if (e.renewal && ++renewals === names.length) resolve()
    }),
  )
  await Promise.all(names.map((n) => app.acme.waitForCertificate(n)))
  await collect()
  await renewed
  await collect()
  await app.close()
  const log = lines.join('')
  const forms = [
    hmacKey,
    Buffer.from(hmacKey, 'base64url').toString('base64'),
    Buffer.from(hmacKey, 'base64url').toString('hex'),
  ]
  for (const pem of secrets) forms.push(...secretForms(pem))
  const found = forms.filter((form) => log.includes(form))
  const markers = (log.match(/PRIVATE KEY/g) ?? []).length
  const jwkPrivate = (log.match(/"d"\s*:\s*"/g) ?? []).length
  const levels = new Set(lines.map((l) => /"level":(\d+)/.exec(l)?.[1]))
  figure(
    `check 6: ${lines.length} log lines at level trace (levels seen: ${[...levels].sort().join(', ')}) (${(log.length / 1024).toFixed(0)} KB) over EAB registration, ${names.length} issuances and ${renewals} renewals: ` +
      `${found.length} occurrences of ${forms.length} secret forms (${secrets.size} private keys incl. the account key, the EAB key), ` +
      `${markers} 'PRIVATE KEY' markers, ${jwkPrivate} JWK "d" members`,
  )
  assert.ok(
    secrets.size >= 1 + 2 * names.length,
    `expected the account key and 4 certificate keys, got ${secrets.size}`,
  )
  assert.deepEqual(found, [])
  assert.equal(markers, 0)
  assert.equal(jwkPrivate, 0)
})
