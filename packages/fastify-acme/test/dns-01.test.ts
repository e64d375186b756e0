// DNS-01 building blocks against a real BIND (Debian's named, started by the harness): RFC 2136 updates with TSIG,
// coded errors, the propagation check over every authoritative server, CNAME delegation, the exec provider, and
// Pebble validating a wildcard + apex order through named.
import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { Agent } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { type Bind, startBind, startChallTestSrv, startPebble } from '@autotls/pebble-harness'
import acme from 'acme-client'
import {
  challengeRecordName,
  ExecProvider,
  Rfc2136Provider,
  resolveChallengeName,
  solveDns01,
  txtValue,
  waitForPropagation,
} from '../src/challenges/dns-01/index.js'

const never = new AbortController().signal

function providerFor(bind: Bind, overrides: Partial<ConstructorParameters<typeof Rfc2136Provider>[0]> = {}) {
  return new Rfc2136Provider({ server: bind.address, key: bind.key, ...overrides })
}

/** The harness's named is everyone's resolver and the only server of each zone unless a test says otherwise. */
function lookups(bind: Bind) {
  return { resolvers: [bind.address], resolveNameserver: async () => [bind.address], queryTimeoutMs: 1_000 }
}

async function rejectsWithCode(promise: Promise<unknown>, code: string): Promise<Error & Record<string, unknown>> {
  try {
    await promise
  } catch (error) {
    assert.equal((error as { code?: string }).code, code, String(error))
    return error as Error & Record<string, unknown>
  }
  assert.fail(`expected ${code}, nothing was thrown`)
}

test('record name and TXT value rules; acme-client already returns the digest for dns-01', async () => {
  assert.equal(challengeRecordName('example.com'), '_acme-challenge.example.com.')
  assert.equal(challengeRecordName('*.Example.com.'), '_acme-challenge.example.com.')
  assert.equal(challengeRecordName('a.b.example.com'), '_acme-challenge.a.b.example.com.')
  assert.throws(() => challengeRecordName('a.*.example.com'), TypeError)
  assert.throws(() => challengeRecordName(''), TypeError)
  // RFC 8555 section 8.4: base64url(SHA-256(token "." thumbprint)), 43 characters, no padding.
  assert.equal(txtValue('abc'), 'ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0')

  const client = new acme.Client({
    directoryUrl: 'https://127.0.0.1:1/dir',
    accountKey: await acme.crypto.createPrivateKey(),
  })
  const token = 'evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA'
  const keyAuthorization = await client.getChallengeKeyAuthorization({ type: 'http-01', token } as never)
  const forDns = await client.getChallengeKeyAuthorization({ type: 'dns-01', token } as never)
  assert.equal(forDns, txtValue(keyAuthorization))
  assert.match(forDns, /^[A-Za-z0-9_-]{43}$/)
})

test('rfc2136: present -> TXT at the authoritative server; wildcard and apex values coexist; cleanup removes each', {
  timeout: 30_000,
}, async (t) => {
  const bind = await startBind()
  t.after(() => bind.stop())
  const provider = providerFor(bind)
  const name = challengeRecordName('*.acme.test')
  assert.equal(await provider.zoneOf(name, never), 'acme.test.')

  const started = performance.now()
  await provider.present(name, 'value-wildcard', never)
  t.diagnostic(`one signed UPDATE round trip: ${(performance.now() - started).toFixed(1)} ms`)
  await provider.present(name, 'value-apex', never)
  await provider.present(name, 'value-apex', never) // idempotent
  assert.deepEqual((await bind.txt(name)).sort(), ['value-apex', 'value-wildcard'])

  await provider.cleanup(name, 'value-wildcard', never)
  assert.deepEqual(await bind.txt(name), ['value-apex'])
  await provider.cleanup(name, 'value-apex', never)
  await provider.cleanup(name, 'value-apex', never) // idempotent
  assert.deepEqual(await bind.txt(name), [])
})

test('rfc2136: TSIG with hmac-sha1 and hmac-sha512 keys, and a given zone', { timeout: 30_000 }, async (t) => {
  for (const algorithm of ['hmac-sha1', 'hmac-sha512'] as const) {
    const bind = await startBind({ key: { algorithm, name: `key-${algorithm}` } })
    t.after(() => bind.stop())
    const provider = providerFor(bind, { zone: 'acme.test' })
    await provider.present('_acme-challenge.x.acme.test', algorithm, never)
    assert.deepEqual(await bind.txt('_acme-challenge.x.acme.test'), [algorithm])
    await provider.cleanup('_acme-challenge.x.acme.test', algorithm, never)
    assert.deepEqual(await bind.txt('_acme-challenge.x.acme.test'), [])
  }
})

test('rfc2136: wrong secret, unknown key, wrong algorithm -> FACME_DNS_TSIG; never the secret in the message', {
  timeout: 30_000,
}, async (t) => {
  const bind = await startBind()
  t.after(() => bind.stop())
  const name = '_acme-challenge.acme.test'
  const wrongSecret = Buffer.alloc(32, 7).toString('base64')

  const badSig = await rejectsWithCode(
    providerFor(bind, { key: { ...bind.key, secret: wrongSecret } }).present(name, 'v', never),
    'FACME_DNS_TSIG',
  )
  assert.equal(badSig['rcode'], 'BADSIG')
  assert.match(badSig.message, /BADSIG.*check the key name, the secret \(base64\) and the algorithm/)
  assert.doesNotMatch(badSig.message, new RegExp(wrongSecret.replace(/[+/=]/g, '.')))

  const badKey = await rejectsWithCode(
    providerFor(bind, { key: { ...bind.key, name: 'nobody' } }).present(name, 'v', never),
    'FACME_DNS_TSIG',
  )
  assert.equal(badKey['rcode'], 'BADKEY')
  const badAlgorithm = await rejectsWithCode(
    providerFor(bind, { key: { ...bind.key, algorithm: 'hmac-sha512' } }).present(name, 'v', never),
    'FACME_DNS_TSIG',
  )
  assert.equal(badAlgorithm['rcode'], 'BADKEY')
  assert.deepEqual(await bind.txt(name), [])

  assert.throws(
    () => new Rfc2136Provider({ server: bind.address, key: { name: 'k', secret: 'not base64!' } }),
    (error: Error & { code?: string }) => error.code === 'FACME_DNS_OPTIONS' && !error.message.includes('not base64!'),
  )
})

test('rfc2136: refused updates and zones the server does not serve -> coded errors', { timeout: 30_000 }, async (t) => {
  const bind = await startBind({ zones: [{ name: 'acme.test' }, { name: 'validation.test', allowUpdate: false }] })
  t.after(() => bind.stop())

  const refused = await rejectsWithCode(
    providerFor(bind).present('_acme-challenge.validation.test', 'v', never),
    'FACME_DNS_UPDATE_REFUSED',
  )
  assert.equal(refused['rcode'], 'REFUSED')
  assert.match(refused.message, /validation\.test.*REFUSED.*allow-update/)

  const notAuth = await rejectsWithCode(
    providerFor(bind, { zone: 'elsewhere.test' }).present('_acme-challenge.elsewhere.test', 'v', never),
    'FACME_DNS_UPDATE_REFUSED',
  )
  assert.equal(notAuth['rcode'], 'NOTAUTH')

  await rejectsWithCode(providerFor(bind).present('_acme-challenge.elsewhere.test', 'v', never), 'FACME_DNS_ZONE')
  await rejectsWithCode(
    providerFor(bind, { zone: 'acme.test' }).present('_acme-challenge.validation.test', 'v', never),
    'FACME_DNS_ZONE',
  )
  await rejectsWithCode(
    new Rfc2136Provider({ server: '127.0.0.1:1', key: bind.key, timeoutMs: 1_000 }).present('a.acme.test', 'v', never),
    'FACME_DNS_NO_ANSWER',
  )
})

test('propagation: waits for every authoritative server; times out naming the one without the record', {
  timeout: 60_000,
}, async (t) => {
  const zones = [{ name: 'acme.test', nameservers: ['ns1.acme.test', 'ns2.acme.test', 'ns3.acme.test'] }]
  const primary = await startBind({ zones })
  t.after(() => primary.stop())
  // Same zone, its own copy: updates sent to the primary never reach it (no zone transfer configured).
  const lagging = await startBind({ zones, key: primary.key })
  t.after(() => lagging.stop())
  const addresses: Record<string, string[]> = {
    'ns1.acme.test.': [primary.address],
    'ns2.acme.test.': [lagging.address],
    'ns3.acme.test.': [primary.address],
  }
  const options = {
    resolvers: [primary.address],
    resolveNameserver: async (ns: string) => addresses[ns] ?? [],
    intervalMs: 200,
    queryTimeoutMs: 500,
  }
  const name = challengeRecordName('acme.test')
  await providerFor(primary).present(name, 'propagated', never)

  const started = performance.now()
  const timeout = await rejectsWithCode(
    waitForPropagation(name, 'propagated', { ...options, timeoutMs: 1_500 }),
    'FACME_DNS_PROPAGATION_TIMEOUT',
  )
  const waited = performance.now() - started
  assert.ok(waited >= 1_400 && waited < 4_000, `gave up after ${waited} ms`)
  assert.match(timeout.message, new RegExp(`ns2\\.acme\\.test\\. \\(${lagging.address}\\) answered no TXT record`))
  assert.doesNotMatch(timeout.message, /ns1|ns3/)

  // The lagging server gets the record while the check waits: it passes once every server answers.
  setTimeout(() => void providerFor(lagging).present(name, 'propagated', never), 600)
  const result = await waitForPropagation(name, 'propagated', { ...options, timeoutMs: 10_000 })
  assert.equal(result.zone, 'acme.test.')
  assert.equal(result.servers.length, 3)
  assert.ok(result.rounds > 1, `rounds ${result.rounds}`)
  t.diagnostic(`propagation check: ${result.elapsedMs} ms, ${result.rounds} rounds (second server updated at 600 ms)`)

  const quick = await waitForPropagation(name, 'propagated', { ...options, timeoutMs: 10_000 })
  assert.equal(quick.rounds, 1)
  t.diagnostic(`propagation check, already everywhere: ${quick.elapsedMs} ms (SOA walk + NS + 3 direct queries)`)

  // An NS address where nothing answers: named as not answering, quickly (ICMP port unreachable).
  const dead = await rejectsWithCode(
    waitForPropagation(name, 'propagated', {
      ...options,
      resolveNameserver: async (ns) => (ns === 'ns3.acme.test.' ? ['127.0.0.1:1'] : (addresses[ns] ?? [])),
      timeoutMs: 500,
    }),
    'FACME_DNS_PROPAGATION_TIMEOUT',
  )
  assert.match(dead.message, /ns3\.acme\.test\. \(127\.0\.0\.1:1\) no answer/)
})

test('CNAME delegation: the TXT goes to the target zone; solveDns01 cleans up on success and on failure', {
  timeout: 30_000,
}, async (t) => {
  const bind = await startBind({
    zones: [
      { name: 'acme.test', records: ['_acme-challenge.www CNAME www.acme.test.validation.test.'], allowUpdate: false },
      { name: 'validation.test' },
    ],
  })
  t.after(() => bind.stop())
  const provider = providerFor(bind)
  const target = await resolveChallengeName(challengeRecordName('www.acme.test'), lookups(bind))
  assert.deepEqual(target, { fqdn: 'www.acme.test.validation.test.', cnames: ['www.acme.test.validation.test.'] })
  assert.deepEqual(await resolveChallengeName('_acme-challenge.acme.test', lookups(bind)), {
    fqdn: '_acme-challenge.acme.test.',
    cnames: [],
  })

  const seen = await solveDns01(
    provider,
    'www.acme.test',
    'delegated',
    { ...lookups(bind), signal: never },
    async (step) => {
      assert.equal(step.fqdn, 'www.acme.test.validation.test.')
      assert.equal(step.propagation?.zone, 'validation.test.')
      // A recursive validator follows the CNAME to here (the end-to-end test shows Pebble doing it); this named does
      // not recurse, so it answers the CNAME alone.
      assert.equal(await bind.cname('_acme-challenge.www.acme.test'), 'www.acme.test.validation.test')
      return bind.txt(step.fqdn)
    },
  )
  assert.deepEqual(seen, ['delegated'])
  assert.deepEqual(await bind.txt('www.acme.test.validation.test'), [])

  const cleanupErrors: unknown[] = []
  await assert.rejects(
    solveDns01(
      provider,
      'www.acme.test',
      'failing',
      { ...lookups(bind), signal: never, onCleanupError: (e) => cleanupErrors.push(e) },
      async () => {
        throw new Error('the CA said invalid')
      },
    ),
    /the CA said invalid/,
  )
  assert.deepEqual(await bind.txt('www.acme.test.validation.test'), [])
  assert.deepEqual(cleanupErrors, [])

  // Propagation timeout: the record is still cleaned up.
  const silent = { ...provider, present: provider.present.bind(provider), cleanup: provider.cleanup.bind(provider) }
  await rejectsWithCode(
    solveDns01(
      { ...silent, propagationTimeoutMs: 300 },
      'www.acme.test',
      'never-seen',
      { ...lookups(bind), resolveNameserver: async () => ['127.0.0.1:1'], signal: never, intervalMs: 100 },
      async () => 'unreached',
    ),
    'FACME_DNS_PROPAGATION_TIMEOUT',
  )
  assert.deepEqual(await bind.txt('www.acme.test.validation.test'), [])
})

test('exec provider: `<cmd> present|cleanup <fqdn> <value>` (here through nsupdate); failures -> FACME_DNS_EXEC', {
  timeout: 30_000,
}, async (t) => {
  const bind = await startBind()
  t.after(() => bind.stop())
  const dir = await mkdtemp(join(tmpdir(), 'autotls-exec-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const log = join(dir, 'calls.log')
  const script = join(dir, 'update-dns.sh')
  await writeFile(
    script,
    `#!/bin/sh
set -eu
echo "$1 $2 $3" >> "${log}"
case "$1" in
  present) verb=add; ttl=60 ;;
  cleanup) verb=delete; ttl= ;;
  *) echo "unknown action $1" >&2; exit 2 ;;
esac
printf 'server 127.0.0.1 %s\\nupdate %s %s %s TXT "%s"\\nsend\\n' "$DNS_PORT" "$verb" "$2" "$ttl" "$3" |
  nsupdate -y "$TSIG_KEY"
`,
  )
  await chmod(script, 0o755)
  const tsigKey = `${bind.key.algorithm}:${bind.key.name}:${bind.key.secret}`
  const provider = new ExecProvider({ command: script, env: { DNS_PORT: String(bind.port), TSIG_KEY: tsigKey } })
  const name = challengeRecordName('exec.acme.test')
  await provider.present(name, 'from-exec', never)
  assert.deepEqual(await bind.txt(name), ['from-exec'])
  await provider.cleanup(name, 'from-exec', never)
  assert.deepEqual(await bind.txt(name), [])
  assert.equal(await readFile(log, 'utf8'), `present ${name} from-exec\ncleanup ${name} from-exec\n`)

  // nsupdate fails with a wrong key: exit code and stderr excerpt, the key masked.
  const wrongKey = `${bind.key.algorithm}:${bind.key.name}:${Buffer.alloc(32, 9).toString('base64')}`
  const failing = new ExecProvider({ command: script, env: { DNS_PORT: String(bind.port), TSIG_KEY: wrongKey } })
  const failed = await rejectsWithCode(failing.present(name, 'v', never), 'FACME_DNS_EXEC')
  assert.match(
    failed.message,
    /update-dns\.sh present _acme-challenge\.exec\.acme\.test\. failed: exit code \d+; stderr: /,
  )
  assert.doesNotMatch(failed.message, new RegExp(Buffer.alloc(32, 9).toString('base64').replace(/[+/=]/g, '.')))
  assert.equal(failed.cause, undefined)

  const slow = new ExecProvider({ command: 'sh', args: ['-c', 'sleep 5', 'sh'], timeoutMs: 300 })
  assert.match((await rejectsWithCode(slow.present(name, 'v', never), 'FACME_DNS_EXEC')).message, /timeout/)
  const missing = new ExecProvider({ command: join(dir, 'absent') })
  assert.match((await rejectsWithCode(missing.cleanup(name, 'v', never), 'FACME_DNS_EXEC')).message, /ENOENT/)
})

test('end to end: Pebble validates DNS-01 through named for *.acme.test + acme.test + a CNAME-delegated name', {
  timeout: 60_000,
}, async (t) => {
  // named recurses (forwarding other names to a challtestsrv), so Pebble's resolver gets CNAME chains resolved, as
  // from a real recursive resolver.
  const dns = await startChallTestSrv()
  t.after(() => dns.stop())
  const bind = await startBind({
    zones: [
      { name: 'acme.test', records: ['_acme-challenge.www CNAME www.acme.test.validation.test.'] },
      { name: 'validation.test' },
    ],
    forwarders: [`127.0.0.1:${dns.dnsPort}`],
  })
  t.after(() => bind.stop())
  const pebble = await startPebble({ dns, dnsServer: bind.address })
  t.after(() => pebble.stop())
  acme.axios.defaults.httpsAgent = new Agent({ ca: pebble.caBundle })
  const provider = providerFor(bind)
  const started = performance.now()
  const client = new acme.Client({
    directoryUrl: pebble.directoryUrl,
    accountKey: await acme.crypto.createPrivateKey(),
    backoffMin: 100,
    backoffMax: 500,
  })
  await client.createAccount({ termsOfServiceAgreed: true })
  const names = ['*.acme.test', 'acme.test', 'www.acme.test']
  const order = await client.createOrder({ identifiers: names.map((value) => ({ type: 'dns', value })) })
  const authorizations = await client.getAuthorizations(order)
  const propagationMs: number[] = []
  const written: Record<string, string> = {}
  // All authorizations at once: the wildcard's and the apex's values share _acme-challenge.acme.test.
  await Promise.all(
    authorizations.map(async (authz) => {
      const challenge = authz.challenges.find((c) => c.type === 'dns-01')
      assert.ok(challenge, 'Pebble offers dns-01')
      const value = await client.getChallengeKeyAuthorization(challenge)
      const name = authz.wildcard ? `*.${authz.identifier.value}` : authz.identifier.value
      await solveDns01(provider, name, value, { ...lookups(bind), intervalMs: 100, signal: never }, async (step) => {
        written[name] = step.fqdn
        propagationMs.push(step.propagation!.elapsedMs)
        await client.completeChallenge(challenge)
        await client.waitForValidStatus(challenge)
      })
    }),
  )
  assert.deepEqual(written, {
    '*.acme.test': '_acme-challenge.acme.test.',
    'acme.test': '_acme-challenge.acme.test.',
    'www.acme.test': 'www.acme.test.validation.test.',
  })
  assert.deepEqual(await bind.txt('_acme-challenge.acme.test'), [], 'values cleaned up')
  assert.deepEqual(await bind.txt('www.acme.test.validation.test'), [], 'delegated value cleaned up')
  const [, csr] = await acme.crypto.createCsr({ altNames: names })
  const finalized = await client.finalizeOrder(order, csr)
  const pem = await client.getCertificate(finalized)
  const elapsed = performance.now() - started
  const leaf = new X509Certificate(pem)
  assert.deepEqual(leaf.subjectAltName?.split(', ').sort(), ['DNS:*.acme.test', 'DNS:acme.test', 'DNS:www.acme.test'])
  assert.ok(leaf.checkIssued(new X509Certificate(await pebble.issuingIntermediate())))
  assert.match(pebble.logs(), new RegExp(`Using custom DNS resolver for ACME challenges: ${bind.address}`))
  t.diagnostic(
    `wildcard + apex + delegated name over DNS-01: ${elapsed.toFixed(0)} ms from account to certificate; propagation checks ${propagationMs.join(', ')} ms`,
  )
})
