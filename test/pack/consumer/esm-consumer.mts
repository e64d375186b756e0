// An ESM application as a user writes it, run by the pack test from installed tarballs with plain `node`: the
// plugin example (fastify-acme in a Fastify app, storing in Redis through @autotls/storage-redis) gets a certificate
// from the harness's Pebble over TLS-ALPN-01 and serves a real HTTPS request with it. Prints one JSON line; exits
// non-zero on any failure.
import { request } from 'node:https'
import { acmeServerFactory, type FastifyAcmeOptions, fastifyAcme } from '@autotls/fastify-acme'
import { startPebble, startRedis } from '@autotls/pebble-harness'
import { RedisStorage } from '@autotls/storage-redis'
import Fastify from 'fastify'

const NAME = 'esm.consumer.test'

function get(port: number, ca: string): Promise<{ status: number; body: string; issuer: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, servername: NAME, ca, path: '/', agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        body += chunk
      })
      res.on('end', () => {
        const issuer = String((res.socket as import('node:tls').TLSSocket).getPeerCertificate().issuer?.CN ?? '')
        resolve({ status: res.statusCode ?? 0, body, issuer })
      })
    })
    req.on('error', reject)
    req.end()
  })
}

const pebble = await startPebble()
const redis = await startRedis()
const storage = new RedisStorage({ url: redis.url })
try {
  const app = Fastify({ serverFactory: acmeServerFactory() })
  const options: FastifyAcmeOptions = {
    names: [NAME],
    directory: pebble.directoryUrl,
    termsOfServiceAgreed: true,
    caRoots: pebble.caBundle,
    storage,
  }
  await app.register(fastifyAcme, options)
  app.get('/', async () => 'hello from the packed plugin')
  try {
    await app.listen({ host: '127.0.0.1', port: pebble.tlsPort })
    const status = await app.acme.waitForCertificate(NAME)
    const reply = await get(pebble.tlsPort, await pebble.issuingRoot())
    console.log(JSON.stringify({ ...reply, serial: status.serial }))
    if (reply.status !== 200 || reply.body !== 'hello from the packed plugin') process.exitCode = 1
  } finally {
    await app.close()
  }
} finally {
  await storage.close()
  await redis.stop()
  await pebble.stop()
}
