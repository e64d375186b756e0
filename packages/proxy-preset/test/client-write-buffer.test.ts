// The write buffer of client connections (server.ts, CLIENT_WRITE_HIGH_WATER_MARK): HTTP/1.1 connections get the
// larger buffer, HTTP/2 sessions keep theirs, and a large body streamed through a slow reader arrives whole.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { request as httpsRequest } from 'node:https'
import { test } from 'node:test'
import type { TLSSocket } from 'node:tls'
import { createProxy } from '../src/index.js'
import { CLIENT_WRITE_HIGH_WATER_MARK } from '../src/server.js'
import { certFiles, h2, startUpstream } from './helpers.js'

const BODY = Buffer.alloc(3 * 1024 * 1024 + 17)
for (let i = 0; i < BODY.length; i++) BODY[i] = (i * 7919) & 0xff
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex')

test('HTTP/1.1 client connections get the larger write buffer; a 3 MiB body read slowly arrives whole', async (t) => {
  const files = await certFiles(['big.write-buffer.test'])
  t.after(() => files.remove())
  const upstream = await startUpstream('big', (_req, res) => {
    res.setHeader('content-length', BODY.length)
    res.end(BODY)
  })
  t.after(() => upstream.close())
  const proxy = await createProxy({
    logger: false,
    https: { host: '127.0.0.1', port: 0 },
    http: false,
    certificates: [{ cert: files.cert, key: files.key }],
    routes: [{ host: 'big.write-buffer.test', upstream: upstream.url }],
  } as never)
  t.after(() => proxy.close())
  // Registered after the proxy's own listener, so it sees the socket as the proxy left it.
  const seen: Array<[string | false | null, number]> = []
  proxy.app.server.on('secureConnection', (socket: TLSSocket) => {
    seen.push([socket.alpnProtocol, socket.writableHighWaterMark])
  })
  const { https } = await proxy.listen()

  // HTTP/1.1, reading with pauses so that the proxy's writes meet backpressure on the way.
  const body = await new Promise<Buffer>((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port: https.port,
        path: '/big',
        servername: 'big.write-buffer.test',
        headers: { host: 'big.write-buffer.test' },
        ca: files.ca,
        agent: false,
        ALPNProtocols: ['http/1.1'],
      } as import('node:https').RequestOptions,
      (res) => {
        assert.equal(res.statusCode, 200)
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => {
          chunks.push(c)
          if (chunks.length % 8 === 0) {
            res.pause()
            setImmediate(() => res.resume())
          }
        })
        res.on('end', () => resolve(Buffer.concat(chunks)))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end()
  })
  assert.equal(body.length, BODY.length)
  assert.equal(sha(body), sha(BODY))

  const viaH2 = await h2({ port: https.port, host: 'big.write-buffer.test', path: '/big', ca: files.ca })
  assert.equal(viaH2.status, 200)
  assert.equal(viaH2.body.length, BODY.toString('utf8').length)

  assert.deepEqual(seen, [
    ['http/1.1', CLIENT_WRITE_HIGH_WATER_MARK],
    ['h2', 16 * 1024],
  ])
})
