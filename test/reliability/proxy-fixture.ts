// Shared bits of the proxy checks: a recording upstream (requests and websocket upgrades, exactly as received),
// raw TLS and HTTP/2 clients that send what well-behaved clients refuse to, and the certificate files for the proxy.
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import { connect as h2connect } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import { makeTestCertificates } from '@autotls/pebble-harness'
import { tempDir } from './helpers.js'

export interface Seen {
  kind: 'request' | 'upgrade'
  method: string
  url: string
  headers: IncomingHttpHeaders
  rawHeaders: string[]
  body: string
  peer: string | undefined
}

export interface Upstream {
  url: string
  port: number
  seen: Seen[]
  /** Upgraded sockets the peer (the proxy) had not closed 2 s after this upstream ended them. */
  upgradeSocketsLeftOpen(): number
  server: Server
  close(): Promise<void>
}

/** An HTTP/1.1 upstream that records every request and upgrade and answers 200 with what it saw. */
export async function recordingUpstream(): Promise<Upstream> {
  const seen: Seen[] = []
  const upgraded = new Set<import('node:stream').Duplex>()
  const lingering = new Set<import('node:stream').Duplex>()
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const entry: Seen = {
        kind: 'request',
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        body: Buffer.concat(chunks).toString('latin1'),
        peer: req.socket.remoteAddress,
      }
      seen.push(entry)
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ url: entry.url, headers: entry.headers, bodyLength: entry.body.length }))
    })
  })
  server.on('upgrade', (req, socket) => {
    seen.push({
      kind: 'upgrade',
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      body: '',
      peer: req.socket.remoteAddress,
    })
    socket.on('error', () => {})
    upgraded.add(socket)
    socket.on('close', () => {
      upgraded.delete(socket)
      lingering.delete(socket)
    })
    socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')
    setTimeout(() => {
      if (upgraded.has(socket)) lingering.add(socket)
    }, 2000).unref()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    seen,
    server,
    upgradeSocketsLeftOpen: () => lingering.size,
    close: () =>
      new Promise<void>((resolve) => {
        // Upgraded sockets are no longer the HTTP server's: closeAllConnections() does not see them.
        for (const socket of upgraded) socket.destroy()
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

export interface CertFiles {
  cert: string
  key: string
  ca: string
  remove(): Promise<void>
}

export async function proxyCertificate(names: string[]): Promise<CertFiles> {
  const dir = await tempDir('proxy-cert')
  const made = await makeTestCertificates({ names, dir: dir.path })
  return { cert: join(dir.path, 'cert.pem'), key: join(dir.path, 'key.pem'), ca: made.caCert, remove: dir.remove }
}

export interface RawReply {
  text: string
  closed: boolean
  /** Status codes of every HTTP/1.1 response in the reply, in order. */
  statuses: number[]
}

/** Writes `payload` on a TLS connection (ALPN http/1.1) and collects the reply until the server closes or timeout. */
export function rawTls(port: number, servername: string, ca: string, payload: string | Buffer, timeoutMs = 3000) {
  return new Promise<RawReply>((resolve) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, servername, ca, ALPNProtocols: ['http/1.1'] })
    const chunks: Buffer[] = []
    let done = false
    const finish = (closed: boolean) => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      const text = Buffer.concat(chunks).toString('latin1')
      const statuses = [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]))
      resolve({ text, closed, statuses })
    }
    const timer = setTimeout(() => finish(false), timeoutMs)
    socket.on('secureConnect', () => socket.write(payload))
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('end', () => finish(true))
    socket.on('close', () => finish(true))
    socket.on('error', () => finish(true))
  })
}

/** One HTTP/2 request with exactly these pseudo-headers and headers; resolves with the status (0: reset/refused). */
export function h2Request(
  port: number,
  servername: string,
  ca: string,
  headers: Record<string, string>,
  body?: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const session = h2connect(`https://127.0.0.1:${port}`, { ca, servername })
    session.on('error', () => resolve({ status: 0, body: '' }))
    const stream = session.request({ ':method': 'GET', ':authority': servername, ...headers })
    let status = 0
    const chunks: Buffer[] = []
    stream.on('response', (h) => {
      status = Number(h[':status'])
    })
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('close', () => {
      session.close()
      resolve({ status, body: Buffer.concat(chunks).toString('utf8') })
    })
    stream.on('error', () => {})
    stream.end(body)
  })
}
