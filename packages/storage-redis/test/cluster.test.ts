// Two instances of an app sharing one Redis against a real CA (Pebble): one order for a name both serve, the other
// instance waits on the lock, reads storage again and adopts the certificate; after a restart both serve it from
// Redis with the CA stopped.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { test } from 'node:test'
import { connect } from 'node:tls'
import { acmeServerFactory, fastifyAcme } from '@autotls/fastify-acme'
import { countOrders, freePort, startPebble, startRedis } from '@autotls/pebble-harness'
import Fastify, { type FastifyInstance } from 'fastify'
import { RedisStorage } from '../src/index.js'

const NAME = 'shared.cluster.test'

/** The serial of the certificate served for NAME on 127.0.0.1:port, its chain verified against `ca`. */
function servedSerial(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername: NAME, ca, ALPNProtocols: ['http/1.1'] }, () => {
      const serial = socket.getPeerCertificate().serialNumber
      socket.end()
      resolve(serial.toUpperCase())
    })
    socket.on('error', reject)
  })
}

test('two instances, one Redis: one order at the CA, both serve the certificate, also after a restart', async (t) => {
  const started = performance.now()
  const [redis, pebble] = await Promise.all([startRedis(), startPebble()])
  t.after(() => Promise.all([redis.stop(), pebble.stop()]))
  const prefix = `cluster-${randomBytes(3).toString('hex')}:`
  const stores: RedisStorage[] = []
  const apps: FastifyInstance[] = []
  t.after(async () => {
    for (const app of apps) await app.close()
    for (const store of stores) await store.close()
  })

  /** Registers an app (load() reads Redis now); it orders once `listen()` is called. */
  const register = async (events: string[], delayLockMs = 0) => {
    const storage = new RedisStorage({ url: redis.url, prefix })
    stores.push(storage)
    if (delayLockMs > 0) {
      // This instance reaches the lock a little later than the other one, as a slower peer would: it then waits
      // for the lock, reads Redis again and finds the certificate.
      const lock = storage.lock.bind(storage)
      storage.lock = async (key, options) => {
        await new Promise((resolve) => setTimeout(resolve, delayLockMs))
        return lock(key, options)
      }
    }
    const app = Fastify({ serverFactory: acmeServerFactory() }) as unknown as FastifyInstance
    apps.push(app)
    await app.register(fastifyAcme, {
      names: [NAME],
      directory: pebble.directoryUrl,
      termsOfServiceAgreed: true,
      caRoots: pebble.caBundle,
      storage,
    })
    for (const event of ['order-started', 'certificate-issued', 'certificate-adopted', 'certificate-loaded'] as const)
      app.acme.on(event, () => events.push(event))
    await app.ready()
    return app
  }

  // Both start together with nothing in Redis. A listens where Pebble validates TLS-ALPN-01 and takes the order
  // lock first; B asks for it 200 ms later, while A's order runs.
  const ordersBefore = countOrders(pebble)
  const portB = await freePort()
  const eventsA: string[] = []
  const eventsB: string[] = []
  const [a, b] = await Promise.all([register(eventsA), register(eventsB, 200)])
  await Promise.all([
    a.listen({ port: pebble.tlsPort, host: '127.0.0.1' }),
    b.listen({ port: portB, host: '127.0.0.1' }),
  ])
  await Promise.all([a.acme.waitForCertificate(NAME), b.acme.waitForCertificate(NAME)])
  const issuedMs = performance.now() - started

  assert.equal(countOrders(pebble) - ordersBefore, 1, 'exactly one order at the CA')
  assert.equal(a.acme.ordersSent, 1)
  assert.equal(b.acme.ordersSent, 0, 'B waited for the lock, read Redis again and adopted')
  assert.deepEqual(eventsA, ['order-started', 'certificate-issued'])
  assert.deepEqual(eventsB, ['certificate-adopted'])
  const root = await pebble.issuingRoot()
  const serial = await servedSerial(pebble.tlsPort, root)
  assert.equal(await servedSerial(portB, root), serial, 'both serve the same certificate')
  assert.deepEqual(await stores[0]!.list(''), (await stores[1]!.list('')).sort())

  // Restart both with the CA gone: the certificate comes from Redis.
  for (const app of apps.splice(0)) await app.close()
  for (const store of stores.splice(0)) await store.close()
  await pebble.stop()
  const again = [[], []] as string[][]
  const [a2, b2] = await Promise.all([register(again[0]!), register(again[1]!)])
  await a2.listen({ port: pebble.tlsPort, host: '127.0.0.1' })
  await b2.listen({ port: portB, host: '127.0.0.1' })
  assert.equal(await servedSerial(pebble.tlsPort, root), serial)
  assert.equal(await servedSerial(portB, root), serial)
  assert.deepEqual(again, [['certificate-loaded'], ['certificate-loaded']])
  console.log(
    `# two instances on one Redis: 1 order, issued+adopted in ${issuedMs.toFixed(0)} ms (incl. starting Redis and Pebble)`,
  )
})
