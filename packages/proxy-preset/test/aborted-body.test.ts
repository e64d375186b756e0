// Regression from the reliability suite (check 15): a client whose request body breaks off (a chunked-encoding error,
// a reset) used to leave the upstream request waiting for the rest of the body until undici's timeouts (60-300 s),
// holding an upstream connection, and holding close() for as long (5 minutes, whatever shutdown.graceMs said).
import assert from 'node:assert/strict'
import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { test } from 'node:test'
import { connect as tlsConnect } from 'node:tls'
import { createProxy } from '../src/index.js'
import { certFiles } from './helpers.js'

const HOST = 'aborted.test.local'

test('a request body that breaks off aborts the upstream request at once; close() stays prompt', async (t) => {
  const certs = await certFiles([HOST])
  t.after(() => certs.remove())
  const upstreamRequests: Array<{ closedEarly: Promise<number> }> = []
  const upstream = createServer((req: IncomingMessage) => {
    const started = Date.now()
    upstreamRequests.push({
      closedEarly: new Promise((resolve) => req.on('close', () => resolve(req.complete ? -1 : Date.now() - started))),
    })
    req.resume()
  })
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  t.after(() => {
    upstream.closeAllConnections()
    upstream.close()
  })
  const proxy = await createProxy({
    logger: false,
    http: false,
    https: { host: '127.0.0.1', port: 0 },
    certificates: [{ cert: certs.cert, key: certs.key }],
    shutdown: { graceMs: 1000, signals: false },
    routes: [{ host: HOST, upstream: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` }],
  })
  const port = (await proxy.listen()).https.port
  const send = (payload: string, thenReset: boolean) =>
    new Promise<void>((resolve) => {
      const socket = tlsConnect({
        host: '127.0.0.1',
        port,
        servername: HOST,
        ca: certs.ca,
        ALPNProtocols: ['http/1.1'],
      })
      socket.on('secureConnect', () => {
        socket.write(payload)
        if (thenReset) setTimeout(() => socket.destroy(), 300)
      })
      socket.on('error', () => {})
      socket.on('close', () => resolve())
      socket.resume()
    })
  const head = `POST /upload HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n`
  // A chunk that does not end with CRLF: the proxy's parser fails mid-body.
  await send(`${head}5\r\nhelloX0\r\n\r\n`, false)
  // A client that sends part of the body and then disappears.
  await send(`${head}5\r\nhello\r\n`, true)
  // The first may be refused before it is dispatched; the second always reaches the upstream with part of its body.
  assert.ok(upstreamRequests.length >= 1, 'the partial body reached the upstream')
  for (const r of upstreamRequests) {
    const ms = await Promise.race([
      r.closedEarly,
      new Promise<number>((resolve) => setTimeout(() => resolve(99_999), 5000)),
    ])
    assert.ok(ms >= 0 && ms < 5000, `the upstream request was not aborted (${ms} ms)`)
  }
  const started = Date.now()
  await proxy.close()
  assert.ok(Date.now() - started < 2000, `close() took ${Date.now() - started} ms`)
})
