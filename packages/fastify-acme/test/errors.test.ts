// Every failure that reaches issue(), the order-failed event and status().lastError carries a FACME_* code and
// keeps the CA's facts as properties (problem type, HTTP status, network code) and its cause. Real CA (Pebble behind
// the fault-injecting front), real HTTPS servers for the wrong-directory and untrusted-CA cases.
import assert from 'node:assert/strict'
import { createServer } from 'node:https'
import { after, before, describe, test } from 'node:test'
import {
  type CaProxy,
  freePort,
  makeTestCertificates,
  type Pebble,
  startCaProxy,
  startPebble,
} from '@autotls/pebble-harness'
import type { FastifyInstance } from 'fastify'
import { ERR_CA_PROBLEM, ERR_CA_UNTRUSTED, ERR_NOT_A_DIRECTORY, MemoryStorage } from '../src/index.js'
import { startApp } from './helpers.js'

/** An app that orders nothing by itself: each test calls issue() and looks at what it rejects with. */
async function quietApp(directory: string, caRoots: string | undefined, name: string): Promise<FastifyInstance> {
  return startApp({
    port: await freePort(),
    acme: {
      names: [name],
      directory,
      termsOfServiceAgreed: true,
      ...(caRoots ? { caRoots } : {}),
      storage: new MemoryStorage(),
      issueOnStart: false,
    },
  })
}

/** issue()'s rejection, the order-failed event's error and the status' lastError of one failed attempt. */
async function failOnce(app: FastifyInstance, name: string) {
  const event = new Promise<Error & Record<string, unknown>>((resolve) =>
    app.acme.once('order-failed', (e) => resolve(e.error as unknown as Error & Record<string, unknown>)),
  )
  const rejected = await app.acme.issue(name).then(
    () => assert.fail('issue() resolved'),
    (err: Error & Record<string, unknown>) => err,
  )
  return { rejected, event: await event, lastError: app.acme.status(name)?.lastError }
}

describe('coded errors from the CA', () => {
  let pebble: Pebble
  let proxy: CaProxy
  before(async () => {
    pebble = await startPebble()
    proxy = await startCaProxy({ upstreamPort: pebble.listenPort, upstreamCa: pebble.caBundle })
  })
  after(async () => {
    await proxy?.stop()
    await pebble?.stop()
  })

  test('an order the CA refuses: FACME_CA_PROBLEM with its problem type, status and cause', async (t) => {
    const name = 'refused.errors.test'
    proxy.inject({
      method: 'POST',
      path: /^\/order-plz/,
      status: 400,
      body: { type: 'urn:ietf:params:acme:error:rejectedIdentifier', detail: 'policy forbids this name', status: 400 },
      times: 1,
    })
    const app = await quietApp(proxy.directoryUrl, proxy.caBundle, name)
    t.after(() => app.close())
    const { rejected, event, lastError } = await failOnce(app, name)
    assert.ok(rejected instanceof ERR_CA_PROBLEM, `${rejected.name}: ${rejected.message}`)
    assert.equal(rejected.code, 'FACME_CA_PROBLEM')
    assert.equal(rejected['problemType'], 'urn:ietf:params:acme:error:rejectedIdentifier')
    assert.equal(rejected['status'], 400)
    assert.ok(rejected.cause instanceof Error, 'the library error is kept as cause')
    assert.match(rejected.message, /policy forbids this name/)
    assert.equal(event, rejected, 'the event carries the same error')
    assert.equal(lastError?.code, 'FACME_CA_PROBLEM')
    assert.equal(lastError?.problemType, 'urn:ietf:params:acme:error:rejectedIdentifier')
    assert.equal(lastError?.status, 400)
  })

  test('a validation the CA fails: FACME_VALIDATION_FAILED with the challenge type', async (t) => {
    const name = 'invalid.errors.test'
    // Nothing answers the challenge: the app does not listen on the port Pebble validates.
    const app = await quietApp(pebble.directoryUrl, pebble.caBundle, name)
    t.after(() => app.close())
    const { rejected, lastError } = await failOnce(app, name)
    assert.equal(rejected.code, 'FACME_VALIDATION_FAILED', rejected.message)
    assert.equal(rejected['validation'], true)
    assert.equal(rejected['challengeType'], 'tls-alpn-01')
    assert.match(String(rejected['problemType']), /^urn:ietf:params:acme:error:/)
    assert.equal(lastError?.code, 'FACME_VALIDATION_FAILED')
  })
})

describe('coded errors before any order', () => {
  test('a CA whose TLS certificate is not trusted: FACME_CA_UNTRUSTED naming the caRoots option', async (t) => {
    const pebble = await startPebble()
    t.after(() => pebble.stop())
    const name = 'untrusted.errors.test'
    const app = await quietApp(pebble.directoryUrl, undefined, name)
    t.after(() => app.close())
    const { rejected, lastError } = await failOnce(app, name)
    assert.ok(rejected instanceof ERR_CA_UNTRUSTED, `${rejected.code}: ${rejected.message}`)
    assert.match(rejected.message, /caRoots/)
    assert.match(String(rejected['networkCode']), /CERT|SIGNATURE|ISSUER/)
    assert.equal(lastError?.code, 'FACME_CA_UNTRUSTED')
    assert.equal(app.acme.ordersSent, 0)
  })

  test('a URL that is not an ACME directory: FACME_NOT_A_DIRECTORY', async (t) => {
    const certs = await makeTestCertificates({ names: ['127.0.0.1', 'localhost'] })
    const pages = createServer({ key: certs.key, cert: certs.cert }, (req, res) => {
      if (req.url === '/json') {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"hello":"world"}')
      } else {
        res.writeHead(200, { 'content-type': 'text/html' }).end('<html>a web site</html>')
      }
    })
    await new Promise<void>((resolve) => pages.listen(0, '127.0.0.1', resolve))
    t.after(() => new Promise((resolve) => pages.close(resolve)))
    const port = (pages.address() as { port: number }).port
    for (const [path, why] of [
      ['/html', /not JSON/],
      ['/json', /no newNonce, newAccount, newOrder/],
    ] as const) {
      const name = `notdir${path.slice(1)}.errors.test`
      const app = await quietApp(`https://127.0.0.1:${port}${path}`, certs.caCert, name)
      const { rejected, lastError } = await failOnce(app, name)
      await app.close()
      assert.ok(rejected instanceof ERR_NOT_A_DIRECTORY, `${rejected.code}: ${rejected.message}`)
      assert.match(rejected.message, why)
      assert.equal(lastError?.code, 'FACME_NOT_A_DIRECTORY')
    }
  })
})
