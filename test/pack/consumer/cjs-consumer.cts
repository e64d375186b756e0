// A CommonJS application as a user writes it (compiled to require() calls), run by the pack test from installed
// tarballs with plain `node`: startProxy() serves a certificate file in front of an upstream and answers a real
// HTTPS request with it. Prints one JSON line; exits non-zero on any failure.
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:http'
import { request } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TLSSocket } from 'node:tls'
import { makeTestCertificates } from '@autotls/pebble-harness'
import { acmeErrors, MemoryStorage, type ProxyOptions, startProxy } from '@autotls/proxy-preset'

const NAME = 'cjs.consumer.test'

function get(port: number, ca: string): Promise<{ status: number; body: string; subject: string }> {
  return new Promise((resolve, reject) => {
    const options = { host: '127.0.0.1', port, servername: NAME, ca, path: '/x', agent: false, headers: { host: NAME } }
    const req = request(options, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        body += chunk
      })
      res.on('end', () => {
        const subject = String((res.socket as TLSSocket).getPeerCertificate().subject?.CN ?? '')
        resolve({ status: res.statusCode ?? 0, body, subject })
      })
    })
    req.on('error', reject)
    req.end()
  })
}

async function main(): Promise<void> {
  // The re-exports a preset user needs are there, from the one package.
  if (typeof acmeErrors.ERR_ORDER_FAILED !== 'function' || typeof MemoryStorage !== 'function')
    throw new Error('proxy-preset does not re-export fastify-acme error classes and storages')
  const dir = await mkdtemp(join(tmpdir(), 'autotls-cjs-consumer-'))
  const upstream = createServer((req, res) => res.end(`upstream saw ${req.headers.host} ${req.url}`))
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  try {
    const { caCert } = await makeTestCertificates({ names: [NAME], dir })
    const options: ProxyOptions = {
      logger: false,
      https: { host: '127.0.0.1', port: 0 },
      http: false,
      certificates: [{ cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') }],
      shutdown: { signals: false },
      routes: [{ host: NAME, upstream: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` }],
    }
    const proxy = await startProxy(options)
    try {
      const reply = await get(proxy.addresses().https.port, caCert)
      console.log(JSON.stringify(reply))
      if (reply.status !== 200 || reply.body !== `upstream saw ${NAME} /x` || reply.subject !== NAME)
        process.exitCode = 1
    } finally {
      await proxy.close()
    }
  } finally {
    await new Promise<void>((resolve) => upstream.close(() => resolve()))
    await rm(dir, { recursive: true, force: true })
  }
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
