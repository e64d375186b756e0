// Check 4: truncated and corrupt account and certificate files. Each case starts the app on a cache damaged one way
// and checks: the damage is logged, the process stays up, the name ends up with a valid certificate served, and a new
// ACME account is registered only when the stored account itself is unreadable.
import assert from 'node:assert/strict'
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { FileStorage } from '@autotls/fastify-acme'
import { directoryKey } from '@autotls/fastify-acme/internal'
import { countOrders, type Pebble, startPebble } from '@autotls/pebble-harness'
import { figure, httpsGet, startAcmeApp, tempDir } from './helpers.js'

const A = 'a.corrupt.reliability.test'
const B = 'b.corrupt.reliability.test'

describe('check 4: corrupt account and certificate files', () => {
  let pebble: Pebble
  let root: string
  let cache: Awaited<ReturnType<typeof tempDir>>
  let accountPath: string
  let certPath: (name: string) => string
  let good: { account: string; a: string; b: string }
  const rows: Array<{ label: string; logged: boolean; up: boolean; recovered: boolean; newAccount: boolean }> = []

  before(async () => {
    pebble = await startPebble()
    root = await pebble.issuingRoot()
    cache = await tempDir('corrupt')
    const dir = join(cache.path, directoryKey(pebble.directoryUrl))
    accountPath = join(dir, 'account.json')
    certPath = (name) => join(dir, 'certificates', `${name}.json`)
    const app = await startAcmeApp({ port: pebble.tlsPort, acme: options() })
    await Promise.all([A, B].map((n) => app.acme.waitForCertificate(n)))
    await app.close()
    good = {
      account: await readFile(accountPath, 'utf8'),
      a: await readFile(certPath(A), 'utf8'),
      b: await readFile(certPath(B), 'utf8'),
    }
  })
  after(async () => {
    await pebble?.stop()
    await cache?.remove()
    const ok = rows.filter((r) => r.logged && r.up && r.recovered).length
    figure(
      `check 4: ${rows.length} damaged caches (${rows.map((r) => r.label).join(', ')}): ${rows.filter((r) => r.logged).length} logged, ` +
        `${rows.filter((r) => r.up).length} process up, ${ok} recovered (valid certificate served); new accounts registered: ` +
        `${rows.filter((r) => r.newAccount).length}, all in account-damage cases: ${rows.filter((r) => r.newAccount).every((r) => r.label.startsWith('account'))}`,
    )
  })

  function options() {
    return {
      names: [A, B],
      directory: pebble.directoryUrl,
      termsOfServiceAgreed: true as const,
      caRoots: pebble.caBundle,
      storage: new FileStorage(cache.path),
      retryMinMs: 300,
      retryMaxMs: 1000,
    }
  }

  async function put(path: string, content: string | Buffer | undefined): Promise<void> {
    if (content === undefined) return rm(path, { force: true })
    await mkdir(dirname(path), { recursive: true })
    await writeFile(path, content)
  }

  const record = (text: string) => JSON.parse(text) as Record<string, string>
  const flipInside = (pem: string) => {
    const at = Math.floor(pem.length / 2)
    return pem.slice(0, at) + (pem[at] === 'A' ? 'B' : 'A') + pem.slice(at + 1)
  }

  /** Writes the damaged files, runs the app until A is served, and records what happened. */
  async function runCase(
    label: string,
    files: { account?: string | Buffer | undefined; a?: string | Buffer | undefined },
    expectNewAccount: boolean,
  ): Promise<void> {
    await put(accountPath, 'account' in files ? files.account : good.account)
    await put(certPath(A), 'a' in files ? files.a : good.a)
    await put(certPath(B), good.b)
    const lines: string[] = []
    const ordersBefore = countOrders(pebble)
    const app = await startAcmeApp({ port: pebble.tlsPort, acme: options(), log: { level: 'warn', lines } })
    try {
      const served = await Promise.race([
        app.acme.waitForCertificate(A).then(() => true),
        new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 20_000)),
      ])
      const res = await httpsGet(pebble.tlsPort, A, root).catch(() => undefined)
      const other = await httpsGet(pebble.tlsPort, B, root).catch(() => undefined)
      const account = record(await readFile(accountPath, 'utf8').catch(() => '{}'))
      const newAccount = account['url'] !== record(good.account)['url']
      const row = {
        label,
        logged: lines.some((l) => /corrupt|unusable|unreadable/.test(l)),
        up: other?.status === 200 && (app.server as unknown as { listening: boolean }).listening,
        recovered: served && res?.status === 200,
        newAccount,
      }
      rows.push(row)
      assert.ok(row.logged, `${label}: not logged: ${lines.join('')}`)
      assert.ok(row.up, `${label}: process not serving`)
      assert.ok(row.recovered, `${label}: A not recovered; status ${JSON.stringify(app.acme.status(A))}`)
      assert.equal(newAccount, expectNewAccount, `${label}: new account registered: ${newAccount}`)
      assert.ok(countOrders(pebble) - ordersBefore <= 1, `${label}: more than one order`)
    } finally {
      await app.close()
    }
  }

  for (const fraction of [0, 0.5, 0.99]) {
    test(`certificate truncated to ${fraction * 100}%`, () =>
      runCase(
        `certificate truncated ${fraction * 100}%`,
        { a: good.a.slice(0, Math.floor(good.a.length * fraction)) },
        false,
      ))
  }
  test('certificate: binary garbage', () =>
    runCase('certificate garbage', { a: Buffer.from([0xff, 0, 0xfe, 0x7b]) }, false))
  test('certificate: key bit-flipped', () => {
    const r = record(good.a)
    return runCase('certificate key flipped', { a: JSON.stringify({ ...r, keyPem: flipInside(r['keyPem']!) }) }, false)
  })
  // A flipped bit in a signature still parses and still matches the key: only verifying the chain finds it.
  const flipInCert = (chain: string, index: number, fromEnd: number) => {
    const ends = [...chain.matchAll(/-----END CERTIFICATE-----/g)].map((m) => m.index!)
    const at = ends[index]! - fromEnd
    return chain.slice(0, at) + (chain[at] === 'A' ? 'B' : 'A') + chain.slice(at + 1)
  }
  test('certificate: leaf signature bit-flipped', () => {
    const r = record(good.a)
    return runCase(
      'certificate leaf signature flipped',
      { a: JSON.stringify({ ...r, chainPem: flipInCert(r['chainPem']!, 0, 30) }) },
      false,
    )
  })
  test('certificate: intermediate signature bit-flipped', () => {
    const r = record(good.a)
    return runCase(
      'certificate intermediate flipped',
      { a: JSON.stringify({ ...r, chainPem: flipInCert(r['chainPem']!, 1, 30) }) },
      false,
    )
  })
  test("certificate: another name's key", () => {
    const r = record(good.a)
    return runCase('certificate wrong key', { a: JSON.stringify({ ...r, keyPem: record(good.b)['keyPem'] }) }, false)
  })
  test("certificate: another name's certificate", () =>
    runCase('certificate of another name', { a: JSON.stringify({ ...record(good.b), name: A }) }, false))
  test('certificate: fields of the wrong type', () =>
    runCase('certificate wrong types', { a: JSON.stringify({ ...record(good.a), keyPem: 42 }) }, false))

  // Account damage: the certificate of A is missing too, so an order (and so the account) is needed.
  for (const fraction of [0.5]) {
    test(`account truncated to ${fraction * 100}%`, () =>
      runCase(
        `account truncated ${fraction * 100}%`,
        { account: good.account.slice(0, Math.floor(good.account.length * fraction)), a: undefined },
        true,
      ))
  }
  test('account: key bit-flipped (valid JSON)', () => {
    const r = record(good.account)
    return runCase(
      'account key flipped',
      { account: JSON.stringify({ ...r, keyPem: flipInside(r['keyPem']!) }), a: undefined },
      true,
    )
  })
  test('account: url missing', () => {
    const { url: _url, ...rest } = record(good.account)
    return runCase('account without url', { account: JSON.stringify(rest), a: undefined }, true)
  })
  test('account: garbage bytes', () =>
    runCase('account garbage', { account: Buffer.from([0, 1, 2, 0xff]), a: undefined }, true))
})
