// Shared bits of this package's tests: real upstream servers on port 0, throw-away certificates on disk, and real
// clients (HTTPS/1.1, HTTP/2, raw TLS) that verify the chain against a given CA.

import { execFile } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import { connect as h2connect } from 'node:http2'
import { request as httpsRequest } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type PeerCertificate, type TLSSocket, connect as tlsConnect } from 'node:tls'
import { fileURLToPath } from 'node:url'
import { makeTestCertificates } from '@autotls/pebble-harness'

export interface Upstream {
  name: string
  port: number
  url: string
  /** Requests received, in order. */
  seen: Array<{ method: string; url: string; headers: IncomingHttpHeaders; body: string }>
  server: Server
  close(): Promise<void>
}

/** An HTTP/1.1 upstream that echoes what it received as JSON: { upstream, method, url, headers, body }. */
export async function startUpstream(
  name: string,
  handler?: (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse, body: string) => void,
): Promise<Upstream> {
  const seen: Upstream['seen'] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8')
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body })
      if (handler) return handler(req, res, body)
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ upstream: name, method: req.method, url: req.url, headers: req.headers, body }))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  return {
    name,
    port,
    url: `http://127.0.0.1:${port}`,
    seen,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

export interface CertFiles {
  dir: string
  cert: string
  key: string
  ca: string
  remove(): Promise<void>
}

/** A CA + leaf for `names`, written to a temp dir as cert.pem / key.pem (plus ca.pem). */
export async function certFiles(names: string[], days = 30): Promise<CertFiles> {
  const dir = await mkdtemp(join(tmpdir(), 'proxy-preset-certs-'))
  const made = await makeTestCertificates({ names, dir, days })
  return {
    dir,
    cert: join(dir, 'cert.pem'),
    key: join(dir, 'key.pem'),
    ca: made.caCert,
    remove: () => rm(dir, { recursive: true, force: true }),
  }
}

export interface Reply {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
  alpn: string | false | null
  cert: PeerCertificate | undefined
}

export interface RequestOptions {
  port: number
  host: string
  path?: string
  method?: string
  headers?: Record<string, string>
  body?: string
  ca: string | string[]
  /** SNI; default: host. */
  servername?: string
}

/** A real HTTPS/1.1 request to 127.0.0.1 with SNI and Host set, verifying the chain against `ca`. */
export function h1(opts: RequestOptions): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port: opts.port,
        path: opts.path ?? '/',
        method: opts.method ?? 'GET',
        servername: opts.servername ?? opts.host,
        headers: { host: opts.host, ...opts.headers },
        ca: opts.ca,
        agent: false,
        ALPNProtocols: ['http/1.1'],
      } as import('node:https').RequestOptions,
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => {
          const socket = res.socket as TLSSocket
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString('utf8'),
            alpn: socket.alpnProtocol,
            cert: socket.getPeerCertificate(),
          })
        })
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(opts.body)
  })
}

/** A real HTTP/2 request (ALPN h2), verifying the chain against `ca`. */
export function h2(opts: RequestOptions): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const session = h2connect(`https://127.0.0.1:${opts.port}`, {
      ca: opts.ca,
      servername: opts.servername ?? opts.host,
    })
    session.on('error', reject)
    const stream = session.request({
      ':method': opts.method ?? 'GET',
      ':path': opts.path ?? '/',
      ':authority': opts.host,
      ...opts.headers,
    })
    let status = 0
    let headers: Record<string, string | string[] | undefined> = {}
    const chunks: Buffer[] = []
    stream.on('response', (h) => {
      status = Number(h[':status'])
      headers = h as Record<string, string | string[] | undefined>
    })
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => {
      const socket = session.socket as TLSSocket
      const result = {
        status,
        headers,
        body: Buffer.concat(chunks).toString('utf8'),
        alpn: socket.alpnProtocol,
        cert: socket.getPeerCertificate(),
      }
      session.close()
      resolve(result)
    })
    stream.on('error', (err) => {
      session.destroy()
      reject(err)
    })
    stream.end(opts.body)
  })
}

export interface RawResult {
  /** Everything the server sent before closing (or before the timeout). */
  text: string
  /** True when the server closed the connection (as opposed to the timeout firing). */
  closed: boolean
  ms: number
}

/**
 * Writes `payload` on a raw TLS connection (ALPN http/1.1) and collects the reply until the server closes the
 * connection or `timeoutMs` passes. For shapes a well-behaved client library would refuse to send.
 */
export function rawTls(opts: {
  port: number
  servername: string
  ca: string | string[]
  payload: string | Buffer
  timeoutMs?: number
  /** Leave the connection open after writing (for slow-client tests). */
  keepWriting?: boolean
}): Promise<RawResult> {
  return new Promise((resolve, reject) => {
    const started = Date.now()
    const socket = tlsConnect({
      host: '127.0.0.1',
      port: opts.port,
      servername: opts.servername,
      ca: opts.ca,
      ALPNProtocols: ['http/1.1'],
    })
    const chunks: Buffer[] = []
    let done = false
    const finish = (closed: boolean) => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed, ms: Date.now() - started })
    }
    const timer = setTimeout(() => finish(false), opts.timeoutMs ?? 3000)
    socket.on('secureConnect', () => socket.write(opts.payload))
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('end', () => finish(true))
    socket.on('close', () => finish(true))
    socket.on('error', (err) => {
      if (chunks.length > 0 || (err as { code?: string }).code === 'ECONNRESET') finish(true)
      else if (!done) {
        done = true
        clearTimeout(timer)
        reject(err)
      }
    })
  })
}

export function json(reply: Reply): Record<string, unknown> {
  try {
    return JSON.parse(reply.body) as Record<string, unknown>
  } catch {
    throw new Error(`not JSON (status ${reply.status}): ${reply.body.slice(0, 300)}`)
  }
}

/** The `autotls` command run from the sources, as a real process. */
export const CLI = fileURLToPath(new URL('../src/cli.ts', import.meta.url))

/**
 * Runs `autotls`: from the sources, or the installed bin named by AUTOTLS_CLI_BIN (the pack-and-install test runs
 * the CLI tests against the packed tarball's bin that way).
 */
export function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const installed = process.env['AUTOTLS_CLI_BIN']
  return new Promise((resolve) => {
    execFile(
      installed ?? process.execPath,
      installed ? args : ['--import', 'tsx', '--conditions=source', CLI, ...args],
      { env: { ...process.env, ...env }, timeout: 60_000 },
      (error, stdout, stderr) => {
        resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr })
      },
    )
  })
}
