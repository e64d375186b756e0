// WebSockets through the proxy (HTTP/1.1 upgrade on the HTTPS listener, which also speaks HTTP/2): echo, forwarded
// headers on the upstream handshake, and refusal on routes where websockets are off.
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, test } from 'node:test'
import WebSocket, { WebSocketServer } from 'ws'
import { createProxy, type ProxyHandle } from '../src/index.js'
import { type CertFiles, certFiles, startUpstream, type Upstream } from './helpers.js'

describe('websocket', () => {
  let certs: CertFiles
  let proxy: ProxyHandle
  let port: number
  let plain: Upstream
  const upstreamHandshakes: Array<Record<string, string | string[] | undefined>> = []
  const wsHttp = createServer((_req, res) => res.end('plain http from the ws upstream'))
  const wss = new WebSocketServer({ server: wsHttp })
  wss.on('connection', (socket, req) => {
    upstreamHandshakes.push(req.headers)
    socket.on('message', (data, binary) => socket.send(binary ? data : `echo:${data.toString()}`, { binary }))
  })

  before(async () => {
    certs = await certFiles(['ws.test.local'])
    plain = await startUpstream('plain')
    await new Promise<void>((resolve) => wsHttp.listen(0, '127.0.0.1', resolve))
    const wsUrl = `http://127.0.0.1:${(wsHttp.address() as AddressInfo).port}`
    proxy = await createProxy({
      logger: false,
      https: { host: '127.0.0.1', port: 0 },
      http: false,
      certificates: [{ cert: certs.cert, key: certs.key }],
      routes: [
        { host: 'ws.test.local', path: '/socket', upstream: wsUrl, websocket: true },
        { host: 'ws.test.local', upstream: plain.url },
      ],
    })
    port = (await proxy.listen()).https.port
  })
  after(async () => {
    await proxy?.close()
    wss.close()
    await new Promise<void>((resolve) => wsHttp.close(() => resolve()))
    await plain?.close()
    await certs?.remove()
  })

  function open(path: string, headers: Record<string, string> = {}): WebSocket {
    return new WebSocket(`wss://127.0.0.1:${port}${path}`, {
      ca: certs.ca,
      servername: 'ws.test.local',
      headers: { host: 'ws.test.local', ...headers },
    } as WebSocket.ClientOptions)
  }

  test('echo through the proxy, text and binary', async () => {
    const ws = open('/socket/chat?room=1', { 'x-forwarded-for': '6.6.6.6', cookie: 'session=abc' })
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve())
      ws.once('error', reject)
    })
    const replies: Array<string | Buffer> = []
    const got = new Promise<void>((resolve) => {
      ws.on('message', (data, binary) => {
        replies.push(binary ? (data as Buffer) : data.toString())
        if (replies.length === 3) resolve()
      })
    })
    ws.send('hello')
    ws.send(Buffer.from([1, 2, 3]))
    ws.send('bye')
    await got
    assert.deepEqual(replies, ['echo:hello', Buffer.from([1, 2, 3]), 'echo:bye'])
    ws.close()
    const handshake = upstreamHandshakes.at(-1)!
    assert.equal(handshake['x-forwarded-for'], '127.0.0.1', 'the client-sent X-Forwarded-For is replaced')
    assert.equal(handshake['x-forwarded-proto'], 'https')
    assert.equal(handshake['cookie'], 'session=abc')
  })

  test('an upgrade on a route without websocket is refused with 400, not left hanging', async () => {
    const ws = open('/elsewhere')
    const status = await new Promise<number>((resolve, reject) => {
      ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0))
      ws.once('open', () => reject(new Error('should not open')))
      ws.once('error', (err) => reject(err))
    })
    assert.equal(status, 400)
    assert.equal(plain.seen.length, 0)
  })
})
