// Pure logic of the ACME front, no network: the default ARI window, script keys and retirement, newOrder decisions.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { OrderBook } from '../src/order-book.js'
import { defaultAriWindow, RenewalInfo } from '../src/renewal-info.js'

const DAY = 86_400_000

test('default ARI window: from 2/3 to 3/4 of the lifetime after notBefore', () => {
  const notBefore = new Date('2026-01-01T00:00:00Z')
  const w = defaultAriWindow({ notBefore, notAfter: new Date(notBefore.getTime() + 90 * DAY) })
  assert.equal(w.start.toISOString(), '2026-03-02T00:00:00.000Z') // day 60
  assert.equal(w.end.toISOString(), '2026-03-09T12:00:00.000Z') // day 67.5
})

test('ARI scripts: by serial before the certificate is known, retire after `times`, unknown -> 404, malformed -> 400', () => {
  const ari = new RenewalInfo(100)
  const certId = 'aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE' // serial 0x87654321
  assert.equal(ari.answer(certId).status, 404)
  ari.script('87:65:43:21', { status: 500, times: 2 })
  assert.equal(ari.answer(certId).status, 500)
  assert.equal(ari.answer(certId).headers['retry-after'], '100')
  assert.equal(ari.answer(certId).status, 404, 'retired after two answers; the certificate is unknown')
  ari.script(certId, { window: 'past' })
  const body = ari.answer(certId).body as { suggestedWindow: { start: string; end: string } }
  assert.ok(Date.parse(body.suggestedWindow.end) < Date.now())
  assert.equal(ari.answer('no-dot').status, 400)
  assert.equal(ari.answer('a.b!').status, 400)
  assert.equal(ari.answer('a.b').status, 400)
  assert.equal(ari.answer('aa.bb.cc').status, 400)
  assert.deepEqual(
    ari.polls.map((p) => p.status),
    [404, 500, 500, 404, 200, 400, 400, 400, 400],
  )
})

test('newOrder decisions: scripted problem first, then invalidProfile, then alreadyReplaced', () => {
  const book = new OrderBook({ classic: 'c' })
  const identifiers = [{ type: 'dns', value: 'a.test' }]
  assert.equal(book.decide({ identifiers, profile: 'classic' }), undefined)
  assert.equal(book.decide({ identifiers, profile: 'x' })?.type, 'urn:ietf:params:acme:error:invalidProfile')
  book.rejectReplaces({ type: 'conflict' })
  assert.equal(book.decide({ identifiers, profile: 'x' })?.status, 400, 'scripts only hit orders carrying replaces')
  const scripted = book.decide({ identifiers, replaces: 'A.B', profile: 'x' })
  assert.deepEqual([scripted?.status, scripted?.type], [409, 'urn:ietf:params:acme:error:conflict'])
  assert.equal(book.decide({ identifiers, replaces: 'A.B' }), undefined, 'script used up')
  // An order replacing A.B becomes valid: A.B is replaced from then on.
  const order = { status: 'pending', finalize: 'https://ca.test/finalize-order/1' }
  book.record({ identifiers, replaces: 'A.B' }, 201, { url: 'https://ca.test/my-order/1', order })
  assert.equal(book.decide({ identifiers, replaces: 'A.B' }), undefined, 'pending replacement: not yet replaced')
  book.observe({ ...order, status: 'valid', certificate: 'https://ca.test/certZ/1' })
  assert.equal(book.decide({ identifiers, replaces: 'A.B' })?.status, 409)
  book.certificateSeen('/certZ/1', 'C.D')
  assert.deepEqual(book.orders[0], {
    identifiers,
    replaces: 'A.B',
    httpStatus: 201,
    status: 'valid',
    url: 'https://ca.test/my-order/1',
    certId: 'C.D',
  })
})
