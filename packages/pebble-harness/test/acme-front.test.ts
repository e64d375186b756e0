// The ACME front against the real Debian Pebble, driven by a real ACME client (acme-client, its own requests for what
// it lacks): directory additions, replaces/profile recording, problems with usable nonces, and scripted ARI.
import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import { Agent, request } from 'node:https'
import { after, before, test } from 'node:test'
import * as acme from 'acme-client'
import {
  type AcmeFront,
  ariCertId,
  DEFAULT_ARI_RETRY_AFTER_SECONDS,
  DEFAULT_PROFILES,
  type Pebble,
  startAcmeFront,
  startPebble,
} from '../src/index.js'
import { opensslCertId } from './openssl-cert-id.js'

const LIFETIME_SECONDS = 3600

interface Reply {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
}

function get(url: string, ca: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    request(url, { ca, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        body += chunk
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
    })
      .on('error', reject)
      .end()
  })
}

// acme-client's internals, for what its public API hides: the raw answer (headers included) of a signed request.
interface RawHttp {
  getResourceUrl(resource: string): Promise<string>
  signedRequest(
    url: string,
    payload: unknown,
    opts: { kid: string; nonce?: string },
  ): Promise<{ status: number; headers: Record<string, string>; data: Record<string, unknown> }>
}
const rawHttp = (client: acme.Client) => (client as unknown as { api: { http: RawHttp } }).api.http

/** acme-client posts createOrder's data unchanged: `replaces` and `profile` only need a wider type. */
type OrderRequest = Parameters<acme.Client['createOrder']>[0] & { replaces?: string; profile?: string }

let pebble: Pebble
let front: AcmeFront
let client: acme.Client
let challenges: Server
const keyAuthorizations = new Map<string, string>()

before(async () => {
  pebble = await startPebble({ certificateValidityPeriod: LIFETIME_SECONDS })
  front = await startAcmeFront({ upstreamPort: pebble.listenPort, upstreamCa: pebble.caBundle })
  // acme-client's HTTP client is process-wide: trust the front's HTTPS, fail fast on errors.
  acme.axios.defaults.httpsAgent = new Agent({ ca: front.caBundle })
  ;(acme.axios.defaults as unknown as { acmeSettings: Record<string, number> }).acmeSettings.retryMaxAttempts = 0
  challenges = createServer((req, res) => {
    const token = req.url?.split('/').pop() ?? ''
    const keyAuthorization = keyAuthorizations.get(token)
    res.writeHead(keyAuthorization ? 200 : 404, { 'content-type': 'text/plain' }).end(keyAuthorization ?? '')
  })
  await new Promise<void>((resolve) => challenges.listen(pebble.httpPort, '127.0.0.1', resolve))
  client = new acme.Client({
    directoryUrl: front.directoryUrl,
    accountKey: await acme.crypto.createPrivateEcdsaKey(),
    backoffMin: 100,
    backoffMax: 500,
  })
  await client.createAccount({ termsOfServiceAgreed: true })
})

after(async () => {
  challenges?.close()
  await front?.stop()
  await pebble?.stop()
})

/** One certificate over HTTP-01 through the front; returns the PEM chain. */
async function issue(name: string, extra: { replaces?: string; profile?: string } = {}): Promise<string> {
  const order = await client.createOrder({ identifiers: [{ type: 'dns', value: name }], ...extra } as OrderRequest)
  for (const authz of await client.getAuthorizations(order)) {
    const challenge = authz.challenges.find((c) => c.type === 'http-01')
    assert.ok(challenge, 'Pebble offers http-01')
    keyAuthorizations.set(challenge.token, await client.getChallengeKeyAuthorization(challenge))
    await client.completeChallenge(challenge)
    await client.waitForValidStatus(challenge)
  }
  const [, csr] = await acme.crypto.createCsr({ commonName: name, altNames: [name] })
  const finalized = await client.finalizeOrder(order, csr)
  return client.getCertificate(finalized)
}

async function ari(certId: string): Promise<Reply & { json: Record<string, unknown> }> {
  const reply = await get(`${front.renewalInfoUrl}/${certId}`, front.caBundle)
  let json: Record<string, unknown> = {}
  try {
    json = JSON.parse(reply.body) as Record<string, unknown>
  } catch {}
  return { ...reply, json }
}

let first: string // CertID of the first certificate
let second: string // CertID of the certificate that replaced it

test('directory: renewalInfo on the front host, meta.profiles, Pebble fields kept', async () => {
  const reply = await get(front.directoryUrl, front.caBundle)
  assert.equal(reply.status, 200)
  const dir = JSON.parse(reply.body) as Record<string, unknown> & { meta: Record<string, unknown> }
  assert.equal(dir['renewalInfo'], front.renewalInfoUrl)
  assert.equal(dir['renewalInfo'], `https://127.0.0.1:${front.port}/renewal-info`)
  assert.deepEqual(dir.meta['profiles'], DEFAULT_PROFILES)
  assert.match(String(dir['newOrder']), new RegExp(`^https://127\\.0\\.0\\.1:${front.port}/`))
  assert.ok(dir.meta['termsOfService'], "Pebble's meta is kept")
})

test('an issued certificate: profile recorded, CertID equals openssl, default ARI window', async () => {
  const chain = await issue('first.example.test', { profile: 'classic' })
  const leaf = new X509Certificate(chain)
  first = ariCertId(chain)
  assert.equal(first, await opensslCertId(chain), 'CertID from DER = CertID from openssl text output')
  assert.deepEqual(
    front.certificates.map((c) => c.certId),
    [first],
  )
  const order = front.orders.at(-1)!
  assert.deepEqual(order.identifiers, [{ type: 'dns', value: 'first.example.test' }])
  assert.equal(order.profile, 'classic')
  assert.equal(order.replaces, undefined)
  assert.equal(order.httpStatus, 201)
  assert.equal(order.status, 'valid')
  assert.equal(order.certId, first)

  const reply = await ari(first)
  assert.equal(reply.status, 200)
  assert.equal(reply.headers['retry-after'], String(DEFAULT_ARI_RETRY_AFTER_SECONDS))
  const window = reply.json['suggestedWindow'] as { start: string; end: string }
  const notBefore = new Date(leaf.validFrom).getTime()
  const lifetime = new Date(leaf.validTo).getTime() - notBefore
  assert.ok(lifetime > (LIFETIME_SECONDS - 5) * 1000 && lifetime <= LIFETIME_SECONDS * 1000, `lifetime ${lifetime}`)
  // Second precision on the wire: within a second of notBefore + 2/3 and + 3/4 of the lifetime.
  assert.ok(Math.abs(Date.parse(window.start) - (notBefore + (lifetime * 2) / 3)) < 1000, window.start)
  assert.ok(Math.abs(Date.parse(window.end) - (notBefore + (lifetime * 3) / 4)) < 1000, window.end)
  assert.equal(reply.json['explanationURL'], undefined)
  assert.deepEqual(
    front.ariRequests.map((r) => [r.certId, r.status]),
    [[first, 200]],
  )
})

test('a replacement order: replaces + profile recorded; replacing the same certificate again is 409 alreadyReplaced with a usable nonce', async () => {
  const chain = await issue('first.example.test', { replaces: first, profile: 'shortlived' })
  second = ariCertId(chain)
  const order = front.orders.at(-1)!
  assert.equal(order.replaces, first)
  assert.equal(order.profile, 'shortlived')
  assert.equal(order.status, 'valid')
  assert.equal(order.certId, second)
  assert.equal(front.replaced.get(first), order.url)

  // Through acme-client's public API: the order is refused.
  const identifiers = [{ type: 'dns', value: 'first.example.test' }]
  await assert.rejects(client.createOrder({ identifiers, replaces: first } as OrderRequest), /already replaced/)
  // The raw answer: 409, problem+json, and a nonce that Pebble accepts on the next request.
  const http = rawHttp(client)
  const newOrderUrl = await http.getResourceUrl('newOrder')
  const kid = client.getAccountUrl()
  const refused = await http.signedRequest(newOrderUrl, { identifiers, replaces: first }, { kid })
  assert.equal(refused.status, 409)
  assert.equal(refused.data['type'], 'urn:ietf:params:acme:error:alreadyReplaced')
  assert.match(refused.headers['content-type'] ?? '', /^application\/problem\+json/)
  const nonce = refused.headers['replay-nonce']
  assert.ok(nonce, 'problem carries Replay-Nonce')
  const seen = front.requests.length
  const next = await http.signedRequest(newOrderUrl, { identifiers }, { kid, nonce })
  assert.equal(next.status, 201, JSON.stringify(next.data))
  assert.deepEqual(
    front.requests.slice(seen).map((r) => `${r.method} ${r.path}`),
    ['POST /order-plz'],
    'the next request used the problem nonce, fetched no new one',
  )
  const rejected = front.orders.filter((o) => o.problem === 'urn:ietf:params:acme:error:alreadyReplaced')
  assert.equal(rejected.length, 2)
  assert.ok(rejected.every((o) => o.httpStatus === 409 && o.status === 'rejected' && o.replaces === first))
})

test('invalidProfile for a profile not advertised; rejectReplaces scripts conflict/malformed for the next orders', async () => {
  const identifiers = [{ type: 'dns', value: 'other.example.test' }]
  await assert.rejects(client.createOrder({ identifiers, profile: 'tlsserver' } as OrderRequest), /not one of/)
  const refused = front.orders.at(-1)!
  assert.equal(refused.problem, 'urn:ietf:params:acme:error:invalidProfile')
  assert.equal(refused.httpStatus, 400)
  assert.equal(refused.profile, 'tlsserver')

  front.rejectReplaces({ type: 'conflict', times: 1 })
  front.rejectReplaces({ type: 'malformed', times: 1 })
  // An order without replaces is not affected by the script.
  await client.createOrder({ identifiers } as OrderRequest)
  await assert.rejects(client.createOrder({ identifiers, replaces: second } as OrderRequest), /scripted conflict/)
  await assert.rejects(client.createOrder({ identifiers, replaces: second } as OrderRequest), /scripted malformed/)
  const accepted = await client.createOrder({ identifiers, replaces: second } as OrderRequest)
  assert.equal(accepted.status, 'pending')
  assert.deepEqual(
    front.orders.slice(-4).map((o) => [o.httpStatus, o.problem?.split(':').pop()]),
    [
      [201, undefined],
      [409, 'conflict'],
      [400, 'malformed'],
      [201, undefined],
    ],
  )
})

test('fault injection still works in front of the front: an answering rule goes first (order not recorded); a response hold is recorded', async () => {
  const recorded = front.orders.length
  front.inject({
    method: 'POST',
    path: /^\/order-plz$/,
    status: 503,
    times: 1,
    body: { type: 'urn:x', detail: 'down' },
  })
  const identifiers = [{ type: 'dns', value: 'other.example.test' }]
  await assert.rejects(client.createOrder({ identifiers, replaces: second } as OrderRequest), /down/)
  assert.equal(front.orders.length, recorded)
  assert.equal(front.requests.filter((r) => r.injected && r.status === 503).length, 1)

  // A 'response' hold: Pebble creates the order, the client never hears back; the front still records it.
  front.inject({ method: 'POST', path: /^\/order-plz$/, hold: 'response', times: 1 })
  const lost = client.createOrder({ identifiers: [{ type: 'dns', value: 'held.example.test' }] } as OrderRequest)
  lost.catch(() => {}) // never settles while held; the front's stop() ends it
  assert.deepEqual(await front.waitForHold(5000), { method: 'POST', path: '/order-plz' })
  const held = front.orders.at(-1)!
  assert.deepEqual([held.identifiers[0]?.value, held.httpStatus, held.status], ['held.example.test', 201, 'pending'])
})

test('ARI scripts: fixed window + explanationURL, renewNow by serial, Retry-After forms, 5xx, invalid window, 404', async () => {
  const polls = front.ariRequests.length
  front.setAri(first, {
    window: { start: '2030-01-01T00:00:00Z', end: '2030-01-02T00:00:00Z' },
    explanationURL: 'https://ca.example/why',
  })
  let reply = await ari(first)
  assert.deepEqual(reply.json, {
    suggestedWindow: { start: '2030-01-01T00:00:00Z', end: '2030-01-02T00:00:00Z' },
    explanationURL: 'https://ca.example/why',
  })

  const serial = front.certificates.find((c) => c.certId === second)!.serial
  front.renewNow(serial, { retryAfter: 60 })
  reply = await ari(second)
  const past = reply.json['suggestedWindow'] as { start: string; end: string }
  assert.ok(Date.parse(past.end) < Date.now() && Date.parse(past.start) < Date.parse(past.end), JSON.stringify(past))
  assert.equal(reply.headers['retry-after'], '60')

  const at = new Date(Date.now() + 3_600_000)
  front.setAri(second, { retryAfter: at })
  reply = await ari(second)
  assert.equal(reply.headers['retry-after'], at.toUTCString())
  assert.ok(Math.abs(Date.parse(String(reply.headers['retry-after'])) - at.getTime()) < 1000)
  assert.ok(reply.json['suggestedWindow'], 'a default window with only Retry-After scripted')

  front.setAri(second, { status: 503, retryAfter: 5, times: 1 })
  reply = await ari(second)
  assert.equal(reply.status, 503)
  assert.equal(reply.headers['retry-after'], '5')
  assert.equal(reply.json['type'], 'urn:ietf:params:acme:error:serverInternal')
  reply = await ari(second)
  assert.equal(reply.status, 200, 'the 5xx script retired after one answer')

  front.setAri(second, { window: 'invalid' })
  reply = await ari(second)
  const invalid = reply.json['suggestedWindow'] as { start: string; end: string }
  assert.ok(Date.parse(invalid.end) <= Date.parse(invalid.start), JSON.stringify(invalid))

  front.clearAri()
  assert.equal((await ari(first)).json['explanationURL'], undefined)
  assert.equal((await ari('aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE')).status, 404, 'unknown CertID')
  assert.equal((await ari('not-a-cert-id')).status, 400)
  assert.equal(front.ariRequests.length - polls, 9)
  assert.equal(front.ariRequests.filter((r) => r.certId === second).length, 5)
})

test('a front without ARI or profiles: directory has neither, any profile passes to Pebble', async () => {
  const plain = await startAcmeFront({
    upstreamPort: pebble.listenPort,
    upstreamCa: pebble.caBundle,
    renewalInfo: false,
    profiles: {},
  })
  try {
    const dir = JSON.parse((await get(plain.directoryUrl, plain.caBundle)).body) as Record<string, unknown> & {
      meta: Record<string, unknown>
    }
    assert.equal(dir['renewalInfo'], undefined)
    assert.equal(dir.meta['profiles'], undefined)
    assert.equal((await get(`${plain.renewalInfoUrl}/${first}`, plain.caBundle)).status, 404, 'Pebble: no such path')
    acme.axios.defaults.httpsAgent = new Agent({ ca: [front.caBundle, plain.caBundle] })
    const other = new acme.Client({
      directoryUrl: plain.directoryUrl,
      accountKey: await acme.crypto.createPrivateEcdsaKey(),
    })
    await other.createAccount({ termsOfServiceAgreed: true })
    const identifiers = [{ type: 'dns', value: 'plain.example.test' }]
    const order = await other.createOrder({ identifiers, profile: 'anything' } as OrderRequest)
    assert.equal(order.status, 'pending')
    assert.deepEqual(
      plain.orders.map((o) => [o.profile, o.httpStatus]),
      [['anything', 201]],
    )
  } finally {
    acme.axios.defaults.httpsAgent = new Agent({ ca: front.caBundle })
    await plain.stop()
  }
})
