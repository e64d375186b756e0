// Check 11: the ALPN x SNI x TLS-version matrix. Every combination is tried with Node's TLS client, and the
// validator-shaped ones also with `openssl s_client` (another TLS stack); the TLS-ALPN-01 challenge certificate must
// be served in exactly the allowed cells: ALPN offered is exactly ["acme-tls/1"] and the server name (any case,
// trailing dot or not) has a pending challenge. Everywhere else a client gets the ordinary certificate or nothing.
import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { after, before, test } from 'node:test'
import { acmeServerFactory, CertResolver } from '@autotls/fastify-acme'
import { makeTestCertificates } from '@autotls/pebble-harness'
import Fastify, { type FastifyInstance } from 'fastify'
import { challengeCertificate, figure, handshake, isChallengeCertificate, run } from './helpers.js'

const PENDING = 'pending-matrix.reliability.test'
const SERVED = 'served-matrix.reliability.test'

let app: FastifyInstance
let port: number

before(async () => {
  const resolver = new CertResolver()
  app = Fastify({
    http2: true,
    serverFactory: acmeServerFactory({ resolver, http2: true }),
  } as never) as unknown as FastifyInstance
  app.get('/', async () => 'ok')
  await app.listen({ port: 0, host: '127.0.0.1' })
  port = (app.server.address() as { port: number }).port
  const certs = await makeTestCertificates({ names: [PENDING, SERVED] })
  // The pending name also has an ordinary certificate, as during a renewal.
  resolver.set(PENDING, { key: certs.key, cert: certs.cert })
  resolver.set(SERVED, { key: certs.key, cert: certs.cert })
  resolver.setChallenge(PENDING, await challengeCertificate(PENDING))
})
after(async () => {
  await app?.close()
})

const ALPNS: Array<[string, string[] | undefined]> = [
  ['no ALPN', undefined],
  ['[acme-tls/1]', ['acme-tls/1']],
  ['[acme-tls/1, http/1.1]', ['acme-tls/1', 'http/1.1']],
  ['[http/1.1, acme-tls/1]', ['http/1.1', 'acme-tls/1']],
  ['[h2, http/1.1]', ['h2', 'http/1.1']],
  ['[acme-tls/1, acme-tls/1]', ['acme-tls/1', 'acme-tls/1']],
  ['[ACME-TLS/1]', ['ACME-TLS/1']],
  ['[acme-tls/2]', ['acme-tls/2']],
  ['[acme-tls/1x]', ['acme-tls/1x']],
  ['[acme-tls]', ['acme-tls']],
]
const SNIS: Array<[string, string | undefined, boolean]> = [
  ['pending name', PENDING, true],
  ['PENDING NAME (upper case)', PENDING.toUpperCase(), true],
  ['pending name + trailing dot', `${PENDING}.`, true],
  ['served name, no challenge', SERVED, false],
  ['unknown name', 'unknown-matrix.reliability.test', false],
  ['pending name as a sub-domain', `x.${PENDING}`, false],
  ['no SNI', undefined, false],
]

test('check 11: the challenge certificate is served in exactly the allowed ALPN x SNI x version cells', async () => {
  let cells = 0
  let challengeCells = 0
  let normalCells = 0
  let refusedCells = 0
  const wrong: string[] = []
  for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
    for (const [alpnLabel, alpn] of ALPNS) {
      for (const [sniLabel, servername, pendingName] of SNIS) {
        cells++
        const allowed = pendingName && alpn?.length === 1 && alpn[0] === 'acme-tls/1'
        const res = await handshake({ port, servername, alpn, version })
        const gotChallenge = res.ok && isChallengeCertificate(res.cert)
        if (gotChallenge) challengeCells++
        else if (res.ok) normalCells++
        else refusedCells++
        if (gotChallenge !== allowed) wrong.push(`${version} ${alpnLabel} ${sniLabel}: challenge=${gotChallenge}`)
        if (gotChallenge) assert.ok(res.ok && res.alpn === 'acme-tls/1', 'a challenge handshake negotiates acme-tls/1')
      }
    }
  }
  // Another TLS stack for the validator-shaped cells.
  const sclient: string[] = []
  for (const version of ['-tls1_2', '-tls1_3']) {
    for (const [alpn, name, allowed] of [
      ['acme-tls/1', PENDING, true],
      ['acme-tls/1,http/1.1', PENDING, false],
      ['acme-tls/1', SERVED, false],
      ['h2,http/1.1', PENDING, false],
    ] as const) {
      cells++
      const { out } = await run('timeout', [
        '10',
        'openssl',
        's_client',
        '-connect',
        `127.0.0.1:${port}`,
        '-servername',
        name,
        '-alpn',
        alpn,
        version,
      ])
      const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(out)?.[0]
      const cert = pem ? new X509Certificate(pem) : undefined
      const gotChallenge = cert !== undefined && isChallengeCertificate({ raw: cert.raw } as never)
      if (gotChallenge) challengeCells++
      else if (cert) normalCells++
      else refusedCells++
      if (gotChallenge !== allowed) wrong.push(`openssl ${version} ${alpn} ${name}: challenge=${gotChallenge}`)
      sclient.push(
        `${version} ${alpn} ${name === PENDING ? 'pending' : 'other'}: ${gotChallenge ? 'challenge' : cert ? 'ordinary' : 'refused'}`,
      )
    }
  }
  figure(
    `check 11: ${cells} cells (${ALPNS.length} ALPN offers x ${SNIS.length} SNI x TLS 1.2/1.3 with Node's client, + 8 openssl s_client cells): ` +
      `challenge certificate in ${challengeCells} cells = exactly the ${3 * 2 + 2} allowed ones; ordinary certificate ${normalCells}, refused ${refusedCells}; ${wrong.length} wrong`,
  )
  assert.deepEqual(wrong, [])
  assert.equal(challengeCells, 8)
})
