// Tests of @autotls/pebble-harness against the real Debian Pebble: if these pass, a failing integration test is
// about the code under test, not about the CA setup.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { createHash, createPrivateKey, generateKeyPairSync, type KeyObject, sign, X509Certificate } from 'node:crypto'
import { Resolver } from 'node:dns/promises'
import { existsSync, readlinkSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { createServer } from 'node:http'
import { request } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { createSecureContext, createServer as createTlsServer } from 'node:tls'
import {
  countOrders,
  freePort,
  isAlive,
  makeTestCertificates,
  type Pebble,
  startChallTestSrv,
  startPebble,
} from '../src/index.js'

interface Reply {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
}

function httpsRequest(url: string, ca: string, init: { method?: string; body?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: init.method ?? 'GET',
        ca,
        agent: false,
        headers: init.body === undefined ? {} : { 'content-type': 'application/jose+json' },
      },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => {
          body += chunk
        })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      },
    )
    req.on('error', reject)
    req.end(init.body)
  })
}

async function directory(pebble: Pebble): Promise<Record<string, unknown>> {
  const reply = await httpsRequest(pebble.directoryUrl, pebble.caBundle)
  assert.equal(reply.status, 200)
  return JSON.parse(reply.body) as Record<string, unknown>
}

const b64u = (data: Buffer | string) => Buffer.from(data).toString('base64url')

/**
 * Just enough RFC 8555 to get one certificate over HTTP-01: proves the harness is usable for real issuance (challtestsrv DNS,
 * ports, trust) without depending on the ACME client the packages under test use.
 */
class MiniAcme {
  private readonly key: KeyObject
  private readonly jwk: Record<string, unknown>
  private kid: string | undefined
  private nonce: string | undefined

  private constructor(
    private readonly pebble: Pebble,
    readonly dir: Record<string, string>,
  ) {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    this.key = privateKey
    const { crv, kty, x, y } = publicKey.export({ format: 'jwk' })
    this.jwk = { crv, kty, x, y }
  }

  static async create(pebble: Pebble): Promise<MiniAcme> {
    return new MiniAcme(pebble, (await directory(pebble)) as Record<string, string>)
  }

  get thumbprint(): string {
    const { crv, kty, x, y } = this.jwk
    return b64u(createHash('sha256').update(JSON.stringify({ crv, kty, x, y })).digest())
  }

  async post(url: string, payload: unknown): Promise<Reply> {
    if (!this.nonce) {
      const head = await httpsRequest(this.dir['newNonce']!, this.pebble.caBundle, { method: 'HEAD' })
      this.nonce = head.headers['replay-nonce'] as string
    }
    const header = { alg: 'ES256', nonce: this.nonce, url, ...(this.kid ? { kid: this.kid } : { jwk: this.jwk }) }
    const protectedB64 = b64u(JSON.stringify(header))
    const payloadB64 = payload === '' ? '' : b64u(JSON.stringify(payload))
    const signature = sign('sha256', Buffer.from(`${protectedB64}.${payloadB64}`), {
      key: this.key,
      dsaEncoding: 'ieee-p1363',
    })
    const body = JSON.stringify({ protected: protectedB64, payload: payloadB64, signature: b64u(signature) })
    const reply = await httpsRequest(url, this.pebble.caBundle, { method: 'POST', body })
    this.nonce = reply.headers['replay-nonce'] as string | undefined
    if (reply.status >= 400) throw new Error(`POST ${url} -> ${reply.status}: ${reply.body}`)
    return reply
  }

  async register(): Promise<void> {
    const reply = await this.post(this.dir['newAccount']!, { termsOfServiceAgreed: true })
    this.kid = reply.headers['location'] as string
  }

  async poll(url: string, done: (status: string) => boolean): Promise<Record<string, unknown>> {
    for (let i = 0; i < 100; i++) {
      const resource = JSON.parse((await this.post(url, '')).body) as Record<string, unknown>
      if (done(resource['status'] as string)) return resource
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    throw new Error(`${url} never left its pending state`)
  }
}

function csrFor(name: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const args = [
      'req',
      '-new',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      '/dev/null',
    ]
    args.push('-subj', `/CN=${name}`, '-addext', `subjectAltName=DNS:${name}`, '-outform', 'DER')
    execFile('openssl', args, { encoding: 'buffer' }, (error, stdout) => (error ? reject(error) : resolve(stdout)))
  })
}

test('freePort returns a bindable loopback port', async () => {
  const port = await freePort()
  assert.ok(port > 0 && port < 65536)
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  await new Promise((resolve) => server.close(resolve))
})

test('makeTestCertificates: parses, carries the SANs, key matches', async () => {
  for (const keyType of ['ec', 'rsa'] as const) {
    const names = ['example.test', 'www.example.test', '127.0.0.1', '::1']
    const { caCert, caKey, cert, key } = await makeTestCertificates({ names, keyType, days: 2 })
    const leaf = new X509Certificate(cert)
    const ca = new X509Certificate(caCert)
    const san = leaf.subjectAltName ?? ''
    for (const name of ['DNS:example.test', 'DNS:www.example.test', 'IP Address:127.0.0.1'])
      assert.match(san, new RegExp(name))
    assert.match(san, /IP Address:(::1|0:0:0:0:0:0:0:1)/)
    assert.equal(leaf.publicKey.asymmetricKeyType, keyType)
    assert.ok(leaf.checkPrivateKey(createPrivateKey(key)))
    assert.ok(ca.checkPrivateKey(createPrivateKey(caKey)))
    assert.ok(leaf.checkIssued(ca) && leaf.verify(ca.publicKey))
    assert.ok(ca.ca && !leaf.ca)
    const lifetime = Date.parse(leaf.validTo) - Date.parse(leaf.validFrom)
    assert.ok(Math.abs(lifetime - 2 * 86_400_000) < 5_000, `lifetime ${lifetime} ms`)
  }
})

test('makeTestCertificates keeps files in dir when asked, and rejects bad input', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'harness-test-'))
  try {
    const { cert } = await makeTestCertificates({ names: ['localhost'], dir })
    assert.equal(await readFile(join(dir, 'cert.pem'), 'utf8'), cert)
    assert.ok(existsSync(join(dir, 'ca-key.pem')) && !existsSync(join(dir, 'leaf.csr')))
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
  await assert.rejects(makeTestCertificates({ names: [] }), TypeError)
  await assert.rejects(makeTestCertificates({ names: ['a/b'] }), TypeError)
  await assert.rejects(makeTestCertificates({ names: ['x.test'], days: 0 }), TypeError)
})

test('challtestsrv: A -> 127.0.0.1, no AAAA, A/TXT/CNAME records over the management API, stop by PID', async (t) => {
  const dns = await startChallTestSrv()
  t.after(() => dns.stop())
  const resolver = new Resolver({ timeout: 2_000, tries: 1 })
  resolver.setServers([`127.0.0.1:${dns.dnsPort}`])
  assert.deepEqual(await resolver.resolve4('anything.example.test'), ['127.0.0.1'])
  const noData = (error: NodeJS.ErrnoException) => assert.equal(error.code, 'ENODATA')
  await resolver.resolve6('anything.example.test').then((addresses) => assert.deepEqual(addresses, []), noData)
  await resolver.resolveTxt('_acme-challenge.app.example.test').then((r) => assert.deepEqual(r, []), noData)

  await dns.addA('app.example.test', ['127.0.0.2', '127.0.0.3'])
  assert.deepEqual((await resolver.resolve4('app.example.test')).sort(), ['127.0.0.2', '127.0.0.3'])
  await dns.clearA('app.example.test.')
  assert.deepEqual(await resolver.resolve4('app.example.test'), ['127.0.0.1'])

  await dns.addTxt('_acme-challenge.app.example.test', 'digest-1')
  await dns.addTxt('_acme-challenge.app.example.test.', 'digest-2')
  const txt = (await resolver.resolveTxt('_acme-challenge.app.example.test')).map((chunks) => chunks.join(''))
  assert.deepEqual(txt.sort(), ['digest-1', 'digest-2'])
  await dns.clearTxt('_acme-challenge.app.example.test')
  await resolver.resolveTxt('_acme-challenge.app.example.test').then((r) => assert.deepEqual(r, []), noData)

  await dns.addCname('www.example.test', 'app.example.test')
  assert.deepEqual(await resolver.resolveCname('www.example.test'), ['app.example.test'])
  await dns.clearCname('www.example.test')
  await resolver.resolveCname('www.example.test').then((r) => assert.deepEqual(r, []), noData)

  await assert.rejects(dns.addA('bad name', ['127.0.0.1']), TypeError)
  assert.match(dns.logs(), /Starting management server/)
  assert.ok(isAlive(dns.pid))
  await Promise.all([dns.stop(), dns.stop()])
  assert.throws(() => process.kill(dns.pid, 0), { code: 'ESRCH' })
})

test('Pebble: directory, issuing root, DNS, stop leaves nothing (Pebble and its challtestsrv)', {
  timeout: 30_000,
}, async (t) => {
  const pebble = await startPebble()
  t.after(() => pebble.stop())
  assert.equal(pebble.directoryUrl, `https://127.0.0.1:${pebble.listenPort}/dir`)
  const dir = await directory(pebble)
  assert.equal(typeof dir['newOrder'], 'string')
  assert.equal((dir['meta'] as Record<string, unknown> | undefined)?.['externalAccountRequired'], false)

  const root = await pebble.issuingRoot()
  const rootCert = new X509Certificate(root)
  assert.ok(rootCert.ca)
  assert.equal(await pebble.issuingRoot(), root)
  const intermediate = new X509Certificate(await pebble.issuingIntermediate())
  assert.ok(intermediate.checkIssued(rootCert))

  const resolver = new Resolver({ timeout: 2_000, tries: 1 })
  resolver.setServers([`127.0.0.1:${pebble.dnsPort}`])
  assert.deepEqual(await resolver.resolve4('app.example.test'), ['127.0.0.1'])
  await resolver.resolve6('app.example.test').then(
    (addresses) => assert.deepEqual(addresses, []),
    (error: NodeJS.ErrnoException) => assert.equal(error.code, 'ENODATA'),
  )

  assert.match(pebble.logs(), /ACME directory available at/)
  assert.equal(countOrders(pebble), 0)
  const workDir = readlinkSync(`/proc/${pebble.pid}/cwd`)
  assert.ok(isAlive(pebble.pid))
  await Promise.all([pebble.stop(), pebble.stop()])
  assert.throws(() => process.kill(pebble.pid, 0), { code: 'ESRCH' })
  assert.throws(() => process.kill(pebble.dns.pid, 0), { code: 'ESRCH' }, 'its challtestsrv stopped too')
  assert.ok(!existsSync(workDir), 'temp dir removed')
  await pebble.stop()
})

test('Pebble: EAB makes the directory require an external account', { timeout: 30_000 }, async (t) => {
  const pebble = await startPebble({ eab: [{ kid: 'kid-1', hmacKey: b64u(Buffer.alloc(32, 7)) }] })
  t.after(() => pebble.stop())
  const meta = (await directory(pebble))['meta'] as Record<string, unknown>
  assert.equal(meta['externalAccountRequired'], true)
})

test('Pebble: restart on the same listenPort keeps the directory URL', { timeout: 30_000 }, async (t) => {
  const first = await startPebble()
  t.after(() => first.stop())
  const firstRoot = await first.issuingRoot()
  await first.stop()
  const second = await startPebble({
    listenPort: first.listenPort,
    tlsPort: first.tlsPort,
    httpPort: first.httpPort,
  })
  t.after(() => second.stop())
  assert.equal(second.directoryUrl, first.directoryUrl)
  assert.equal(second.tlsPort, first.tlsPort)
  assert.equal(second.httpPort, first.httpPort)
  assert.equal(typeof (await directory(second))['newOrder'], 'string')
  assert.notEqual(await second.issuingRoot(), firstRoot, 'Pebble generates a new root at every start')
})

/** Run one order for `name` through `type`, with `answer` making the challenge answerable; returns the PEM chain. */
async function issue(
  acme: MiniAcme,
  name: string,
  type: 'http-01' | 'tls-alpn-01',
  answer: (token: string, keyAuthorization: string) => Promise<void>,
): Promise<string> {
  const orderReply = await acme.post(acme.dir['newOrder']!, { identifiers: [{ type: 'dns', value: name }] })
  const orderUrl = orderReply.headers['location'] as string
  const order = JSON.parse(orderReply.body) as { authorizations: string[]; finalize: string }
  for (const authzUrl of order.authorizations) {
    const authz = JSON.parse((await acme.post(authzUrl, '')).body) as {
      challenges: { type: string; url: string; token: string }[]
    }
    const challenge = authz.challenges.find((c) => c.type === type)!
    await answer(challenge.token, `${challenge.token}.${acme.thumbprint}`)
    await acme.post(challenge.url, {})
    const done = await acme.poll(authzUrl, (s) => s !== 'pending')
    assert.equal(done['status'], 'valid', JSON.stringify(done))
  }
  await acme.post(order.finalize, { csr: b64u(await csrFor(name)) })
  const finished = await acme.poll(orderUrl, (s) => s !== 'pending' && s !== 'processing')
  assert.equal(finished['status'], 'valid', JSON.stringify(finished))
  return (await acme.post(finished['certificate'] as string, '')).body
}

/** Self-signed TLS-ALPN-01 response certificate (RFC 8737): one DNS SAN plus the critical acmeIdentifier extension. */
async function alpnCertificate(name: string, keyAuthorization: string): Promise<{ key: string; cert: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'harness-alpn-'))
  try {
    const digest = createHash('sha256').update(keyAuthorization).digest('hex')
    await new Promise<void>((resolve, reject) => {
      const args = ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1']
      args.push('-keyout', 'key.pem', '-out', 'cert.pem', '-subj', `/CN=${name}`)
      args.push('-addext', `subjectAltName=DNS:${name}`, '-addext', `1.3.6.1.5.5.7.1.31=critical,DER:0420${digest}`)
      execFile('openssl', args, { cwd: dir }, (error) => (error ? reject(error) : resolve()))
    })
    return { key: await readFile(join(dir, 'key.pem'), 'utf8'), cert: await readFile(join(dir, 'cert.pem'), 'utf8') }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

test('Pebble: real issuance through challtestsrv DNS; countOrders counts orders', { timeout: 30_000 }, async (t) => {
  const pebble = await startPebble({ certificateValidityPeriod: 3600 })
  t.after(() => pebble.stop())
  const acme = await MiniAcme.create(pebble)
  await acme.register()
  assert.equal(countOrders(pebble), 0)

  await t.test('HTTP-01 on httpPort, short validity honoured', async (t) => {
    const keyAuthorizations = new Map<string, string>()
    const app = createServer((req, res) => {
      const token = req.url?.match(/^\/\.well-known\/acme-challenge\/([\w-]+)$/)?.[1]
      const answer = token === undefined ? undefined : keyAuthorizations.get(token)
      res.writeHead(answer ? 200 : 404, { 'content-type': 'text/plain' }).end(answer)
    })
    await new Promise<void>((resolve) => app.listen(pebble.httpPort, '127.0.0.1', resolve))
    t.after(() => new Promise((resolve) => app.close(resolve)))

    const chain = await issue(acme, 'app.example.test', 'http-01', async (token, keyAuthorization) => {
      keyAuthorizations.set(token, keyAuthorization)
    })
    const [leafPem, intermediatePem] = chain.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? []
    const leaf = new X509Certificate(leafPem!)
    assert.match(leaf.subjectAltName ?? '', /DNS:app\.example\.test/)
    assert.ok(leaf.checkIssued(new X509Certificate(intermediatePem!)))
    assert.ok(new X509Certificate(intermediatePem!).checkIssued(new X509Certificate(await pebble.issuingRoot())))
    const lifetime = (Date.parse(leaf.validTo) - Date.parse(leaf.validFrom)) / 1000
    assert.ok(Math.abs(lifetime - 3600) <= 1, `certificate lifetime ${lifetime} s`)
    assert.equal(countOrders(pebble), 1)
  })

  await t.test('TLS-ALPN-01 on tlsPort', async (t) => {
    let context: { key: string; cert: string } | undefined
    const app = createTlsServer({
      ALPNProtocols: ['acme-tls/1'],
      SNICallback: (_name, done) => done(null, context && createSecureContext(context)),
    })
    app.on('tlsClientError', () => {}) // Pebble's probes may hang up early; only the challenge outcome matters
    await new Promise<void>((resolve) => app.listen(pebble.tlsPort, '127.0.0.1', resolve))
    t.after(() => new Promise((resolve) => app.close(resolve)))

    const name = 'alpn.example.test'
    const chain = await issue(acme, name, 'tls-alpn-01', async (_token, keyAuthorization) => {
      context = await alpnCertificate(name, keyAuthorization)
    })
    assert.match(new X509Certificate(chain).subjectAltName ?? '', /DNS:alpn\.example\.test/)
    assert.equal(countOrders(pebble), 2)
  })
})

test('startPebble fails cleanly: bad binary, refused knobs', { timeout: 30_000 }, async () => {
  await assert.rejects(startPebble({ binary: '/bin/false' }), /exited early \(code 1\)/)
  await assert.rejects(startPebble({ binary: '/nonexistent/pebble' }), /ENOENT/)
  await assert.rejects(startPebble({ env: { PEBBLE_VA_ALWAYS_VALID: '1' } }), TypeError)
  await assert.rejects(startPebble({ nonceRejectPercent: 101 }), TypeError)
})
