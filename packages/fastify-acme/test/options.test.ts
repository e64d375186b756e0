// Option validation and registration checks: every bad input is refused at register time with its stable code.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import Fastify from 'fastify'
import {
  acmeServerFactory,
  fastifyAcme,
  LETSENCRYPT_PRODUCTION,
  LETSENCRYPT_STAGING,
  MemoryStorage,
} from '../src/index.js'
import { canonicalName, resolveOptions } from '../src/internal.js'

const base = { names: ['example.com'], directory: 'letsencrypt-staging', termsOfServiceAgreed: true }

function code(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    return (err as { code?: string }).code
  }
  return undefined
}

describe('names', () => {
  test('canonical form: lower case, trailing dot dropped, IDN to punycode', () => {
    assert.equal(canonicalName('WWW.Example.COM.'), 'www.example.com')
    assert.equal(canonicalName('bücher.example'), 'xn--bcher-kva.example')
    assert.equal(canonicalName('xn--bcher-kva.example'), 'xn--bcher-kva.example')
  })
  const refused: Array<[string, unknown]> = [
    ['IPv4 literal', '192.0.2.1'],
    ['IPv6 literal', '2001:db8::1'],
    ['bracketed IPv6', '[::1]'],
    ['wildcard', '*.example.com'],
    ['single label', 'localhost'],
    ['empty', ''],
    ['label too long', `${'a'.repeat(64)}.example.com`],
    ['name too long', `${'abcdefghi.'.repeat(26)}com`],
    ['underscore', 'foo_bar.example.com'],
    ['leading hyphen', '-foo.example.com'],
    ['space', 'foo bar.example.com'],
    ['numeric TLD', 'example.123'],
    ['slash', 'example.com/evil'],
  ]
  for (const [label, name] of refused) {
    test(`refused: ${label}`, () => {
      assert.equal(
        code(() => canonicalName(name as string)),
        'FACME_INVALID_NAME',
      )
    })
  }
})

describe('resolveOptions', () => {
  test('defaults', () => {
    const o = resolveOptions(base)
    assert.equal(o.directoryUrl, LETSENCRYPT_STAGING)
    assert.equal(o.keyType, 'ecdsa-p256')
    assert.deepEqual(o.challenges, ['tls-alpn-01'])
    assert.equal(o.renewBeforeRatio, 1 / 3)
    assert.equal(resolveOptions({ ...base, directory: 'letsencrypt-production' }).directoryUrl, LETSENCRYPT_PRODUCTION)
  })
  test('names are canonicalised and de-duplicated', () => {
    assert.deepEqual(resolveOptions({ ...base, names: ['A.example.com', 'a.example.com.', 'b.example.com'] }).names, [
      'a.example.com',
      'b.example.com',
    ])
  })
  test('a list of names is one certificate; wildcards only with a DNS provider; issuers and onDemand need a policy', () => {
    const provider = { present: async () => {}, cleanup: async () => {} }
    const r = resolveOptions({
      ...base,
      names: [['Example.com', '*.example.com'], 'www.example.com'],
      dns01: { provider },
    })
    assert.deepEqual(r.names, ['example.com', 'www.example.com'])
    assert.deepEqual(r.groups, { 'example.com': ['example.com', '*.example.com'] })
    assert.deepEqual(r.challenges, ['dns-01'])
    assert.throws(() => resolveOptions({ ...base, names: ['*.example.com'] }), { code: 'FACME_INVALID_NAME' })
    assert.throws(() => resolveOptions({ ...base, names: [['a.example.com', 'b.example.com'], 'b.example.com'] }), {
      code: 'FACME_INVALID_OPTIONS',
    })
    assert.throws(() => resolveOptions({ ...base, dns01: { provider: {} } }), { code: 'FACME_INVALID_OPTIONS' })
    assert.throws(() => resolveOptions({ ...base, challenges: ['dns-01'] }), { code: 'FACME_INVALID_OPTIONS' })
    const two = resolveOptions({
      names: ['a.example.com'],
      termsOfServiceAgreed: true,
      issuers: [
        { directory: 'https://ca-one.test/dir' },
        { directory: 'https://ca-two.test/dir', eab: { kid: 'k', hmacKey: 'aGk' } },
      ],
    })
    assert.deepEqual(
      two.issuers.map((i) => i.directoryUrl),
      ['https://ca-one.test/dir', 'https://ca-two.test/dir'],
    )
    assert.equal(two.directoryUrl, 'https://ca-one.test/dir')
    assert.equal(two.issuerAttempts, 2)
    assert.throws(() => resolveOptions({ ...base, issuers: [{ directory: 'https://x.test/dir' }] }), {
      code: 'FACME_INVALID_OPTIONS',
    })
    assert.throws(() => resolveOptions({ ...base, names: [], onDemand: {} }), { code: 'FACME_ON_DEMAND_NO_POLICY' })
    assert.throws(() => resolveOptions({ ...base, names: [] }), { code: 'FACME_INVALID_OPTIONS' })
    const od = resolveOptions({ ...base, names: [], onDemand: { allow: () => true } })
    assert.equal(od.onDemand?.maxCertificates, 1000)
    assert.equal(typeof od.onDemand?.allow, 'function')
  })
  const cases: Array<[string, Record<string, unknown>, string]> = [
    [
      'no directory (production is never chosen silently)',
      { names: ['a.example.com'], termsOfServiceAgreed: true },
      'FACME_DIRECTORY_REQUIRED',
    ],
    ['terms not agreed', { ...base, termsOfServiceAgreed: false }, 'FACME_TOS_NOT_AGREED'],
    ['terms missing', { names: ['a.example.com'], directory: 'letsencrypt-staging' }, 'FACME_TOS_NOT_AGREED'],
    ['http directory', { ...base, directory: 'http://ca.example.com/dir' }, 'FACME_INVALID_OPTIONS'],
    ['directory not a URL', { ...base, directory: 'staging' }, 'FACME_INVALID_OPTIONS'],
    ['no names', { ...base, names: [] }, 'FACME_INVALID_OPTIONS'],
    ['IP name', { ...base, names: ['127.0.0.1'] }, 'FACME_INVALID_NAME'],
    ['wildcard name', { ...base, names: ['*.example.com'] }, 'FACME_INVALID_NAME'],
    ['bad contact', { ...base, contact: ['ops@example.com'] }, 'FACME_INVALID_OPTIONS'],
    ['bad key type', { ...base, keyType: 'dsa' }, 'FACME_INVALID_OPTIONS'],
    ['bad challenge', { ...base, challenges: ['dns-01'] }, 'FACME_INVALID_OPTIONS'],
    ['empty challenges', { ...base, challenges: [] }, 'FACME_INVALID_OPTIONS'],
    ['caRoots not PEM', { ...base, caRoots: 'not a pem' }, 'FACME_INVALID_OPTIONS'],
    ['EAB without hmac', { ...base, eab: { kid: 'k' } }, 'FACME_INVALID_OPTIONS'],
    ['EAB hmac not base64url', { ...base, eab: { kid: 'k', hmacKey: 'a b' } }, 'FACME_INVALID_OPTIONS'],
    ['renew ratio out of range', { ...base, renewBeforeRatio: 1.5 }, 'FACME_INVALID_OPTIONS'],
    ['unknown option (typo)', { ...base, cachedir: '/tmp' }, 'FACME_INVALID_OPTIONS'],
    ['retryMax below retryMin', { ...base, retryMinMs: 10_000, retryMaxMs: 1_000 }, 'FACME_INVALID_OPTIONS'],
  ]
  for (const [label, input, expected] of cases) {
    test(`refused: ${label} -> ${expected}`, () => {
      assert.equal(
        code(() => resolveOptions(input)),
        expected,
      )
    })
  }
  test('messages name the option to fix', () => {
    try {
      resolveOptions({ ...base, keyType: 'dsa' })
      assert.fail('should throw')
    } catch (err) {
      assert.match((err as Error).message, /keyType/)
    }
  })
})

describe('registration checks', () => {
  test('a plain HTTP server is refused with FACME_NOT_HTTPS', async () => {
    const app = Fastify()
    app.register(fastifyAcme, { ...base, storage: new MemoryStorage() })
    await assert.rejects(async () => app.ready(), { code: 'FACME_NOT_HTTPS' })
  })

  test('an HTTPS server not made by acmeServerFactory is refused with FACME_SERVER_NOT_WIRED', async () => {
    const { makeTestCertificates } = await import('@autotls/pebble-harness')
    const certs = await makeTestCertificates({ names: ['example.com'] })
    const app = Fastify({ https: { key: certs.key, cert: certs.cert } })
    app.register(fastifyAcme, { ...base, storage: new MemoryStorage() })
    await assert.rejects(async () => app.ready(), { code: 'FACME_SERVER_NOT_WIRED' })
  })

  test('bad options fail app.ready() with their code', async () => {
    const app = Fastify({ serverFactory: acmeServerFactory() } as never)
    app.register(fastifyAcme, { ...base, directory: undefined } as never)
    await assert.rejects((app as unknown as { ready(): Promise<unknown> }).ready(), {
      code: 'FACME_DIRECTORY_REQUIRED',
    })
  })

  test('storage without the interface is refused', async () => {
    const app = Fastify({ serverFactory: acmeServerFactory() } as never)
    app.register(fastifyAcme, { ...base, storage: { get() {} } } as never)
    await assert.rejects((app as unknown as { ready(): Promise<unknown> }).ready(), { code: 'FACME_INVALID_OPTIONS' })
  })

  test('a well-wired app boots and exposes the decorator without contacting the CA', async () => {
    const app = Fastify({ serverFactory: acmeServerFactory() } as never) as unknown as import('fastify').FastifyInstance
    await app.register(fastifyAcme, { ...base, names: ['Example.COM'], storage: new MemoryStorage() })
    await app.ready()
    assert.deepEqual(app.acme.names, ['example.com'])
    assert.equal(app.acme.status('EXAMPLE.com.')?.state, 'pending')
    assert.equal(app.acme.ordersSent, 0)
    await assert.rejects(app.acme.issue('other.example.com'), { code: 'FACME_UNKNOWN_NAME' })
    await app.close()
  })
})
