// Differential test of the fast path (src/fast-path.ts): the same generated requests go to a proxy that takes it
// and to one whose requests all go the Fastify way (metrics on: the admin listener's per-request hooks keep every
// request in the routing app). Status, headers (but Date and Keep-Alive) and body must be the same at the client,
// and the request the upstream saw (method, path, headers) the same.
import assert from 'node:assert/strict'
import { EventEmitter, once } from 'node:events'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { connect as h2connect } from 'node:http2'
import { request as httpsRequest } from 'node:https'
import { after, before, test } from 'node:test'
import { createProxy, type ProxyHandle } from '../src/index.js'
import { type CertFiles, certFiles, startUpstream, type Upstream } from './helpers.js'

const endlessClosed = new EventEmitter()
const BIG = Buffer.alloc(300 * 1024, 'abcdefghij')

function upstreamHandler(req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? '/').split('?')[0]!
  const echo = JSON.stringify({ method: req.method, url: req.url, headers: req.headers })
  if (path.endsWith('/big')) {
    res.setHeader('content-length', BIG.length)
    res.end(BIG)
  } else if (path.endsWith('/chunked')) {
    res.write('first,')
    setImmediate(() => res.end('second'))
  } else if (path.endsWith('/304')) {
    res.writeHead(304, { etag: '"x"' }).end()
  } else if (path.endsWith('/204')) {
    res.writeHead(204, { 'x-a': '1' }).end()
  } else if (path.endsWith('/hop')) {
    res.writeHead(200, {
      connection: 'x-private',
      'x-private': 'secret',
      'keep-alive': 'timeout=1',
      'set-cookie': ['a=1', 'b=2'],
      'content-type': 'text/plain',
    })
    res.end('hop')
  } else if (path.endsWith('/redirect')) {
    res.writeHead(302, { location: '/api/next?x=1' }).end()
  } else if (path.endsWith('/reset')) {
    req.socket.destroy()
  } else if (path.endsWith('/mid-reset')) {
    res.writeHead(200, { 'content-length': '100000' })
    res.write('partial')
    setTimeout(() => req.socket.destroy(), 20)
  } else if (path.endsWith('/head-reset')) {
    // The status line and headers arrive, then the connection ends before the first body byte.
    res.writeHead(200, { 'content-length': '100', 'x-a': '1' })
    res.flushHeaders()
    setTimeout(() => req.socket.destroy(), 20)
  } else if (path.endsWith('/early-hints')) {
    // A 103 before the final response: only the final one reaches the client, whichever way the request went.
    res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' })
    setImmediate(() => res.end('after hints'))
  } else if (path.endsWith('/endless')) {
    // Streams until the proxy lets go of the connection.
    const timer = setInterval(() => res.write('x'.repeat(1024)), 5)
    res.on('close', () => {
      clearInterval(timer)
      endlessClosed.emit('closed', res.writableFinished)
    })
  } else if (path.endsWith('/slow')) {
    // Answers well after the route's responseMs (200 ms; undici's timers are coarse, up to about a second late).
    setTimeout(() => res.end('late'), 5000).unref()
  } else {
    res.setHeader('content-type', 'application/json')
    res.end(echo)
  }
}

interface Answer {
  status: number
  headers: Record<string, unknown>
  body: string
  error?: string
}

function send(
  port: number,
  host: string,
  ca: string,
  method: string,
  path: string,
  headers: Record<string, string | string[]>,
): Promise<Answer> {
  return new Promise((resolve) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path,
        method,
        servername: host,
        headers: { host, ...headers },
        ca,
        agent: false,
        ALPNProtocols: ['http/1.1'],
      } as import('node:https').RequestOptions,
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        const done = (error?: string) =>
          resolve({
            status: res.statusCode ?? 0,
            headers: { ...res.headers },
            body: Buffer.concat(chunks).toString('utf8'),
            ...(error === undefined ? {} : { error }),
          })
        res.on('end', () => done())
        res.on('error', (e) => done(`client: ${(e as NodeJS.ErrnoException).code ?? e.message}`))
        res.on('aborted', () => done('aborted'))
      },
    )
    req.on('error', (e) =>
      resolve({ status: 0, headers: {}, body: '', error: (e as NodeJS.ErrnoException).code ?? e.message }),
    )
    req.end()
  })
}

/** The same over HTTP/2 (one session per request). Header values with a list are sent as repeated fields. */
function send2(
  port: number,
  host: string,
  ca: string,
  method: string,
  path: string,
  headers: Record<string, string | string[]>,
): Promise<Answer> {
  return new Promise((resolve) => {
    const session = h2connect(`https://127.0.0.1:${port}`, { ca, servername: host })
    const finish = (answer: Answer) => {
      session.destroy()
      resolve(answer)
    }
    session.on('error', (e) =>
      finish({ status: 0, headers: {}, body: '', error: `session: ${(e as NodeJS.ErrnoException).code}` }),
    )
    // Connection-specific fields are not allowed in HTTP/2: only the end-to-end ones of a set are sent.
    const sent: Record<string, string | string[]> = {}
    for (const [name, value] of Object.entries(headers)) {
      if (!['connection', 'keep-alive', 'te', 'transfer-encoding', 'upgrade', 'proxy-connection'].includes(name))
        sent[name] = value
    }
    const stream = session.request(
      { ':method': method, ':path': path, ':authority': host, ...sent },
      { endStream: true },
    )
    let status = 0
    let got: Record<string, unknown> = {}
    const chunks: Buffer[] = []
    stream.on('response', (h) => {
      status = Number(h[':status'])
      got = { ...h }
      delete got[':status']
    })
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => finish({ status, headers: got, body: Buffer.concat(chunks).toString('utf8') }))
    stream.on('error', (e) =>
      finish({
        status,
        headers: got,
        body: Buffer.concat(chunks).toString('utf8'),
        error: `stream: ${(e as NodeJS.ErrnoException).code}`,
      }),
    )
  })
}

/** What may differ between two answers: the date, and for the upstream echo the per-connection peer fields. */
function normal(answer: Answer): Answer {
  const headers = { ...answer.headers }
  delete headers['date']
  let body = answer.body
  if (typeof headers['content-type'] === 'string' && headers['content-type'].startsWith('application/json')) {
    try {
      const parsed = JSON.parse(body) as { headers?: Record<string, unknown> }
      if (parsed.headers !== undefined) {
        // The upstream port and X-Forwarded-For source port do not differ; nothing else to strip.
        body = JSON.stringify(parsed)
      }
    } catch {}
  }
  return { ...answer, headers, body }
}

/**
 * A silent logger that counts child loggers: Fastify makes one per request it handles, the fast path none. That
 * is how the test knows which way a request went.
 */
function countingLogger(counter: { children: number }): unknown {
  const noop = () => {}
  return {
    level: 'info',
    fatal: noop,
    error: noop,
    warn: noop,
    info: noop,
    debug: noop,
    trace: noop,
    silent: noop,
    child: () => {
      counter.children++
      return countingLogger(counter)
    },
  }
}

const fastLog = { children: 0 }
const oracleLog = { children: 0 }
let fastUp: Upstream
let slowUp: Upstream
let certs: CertFiles
let fast: ProxyHandle
let oracle: ProxyHandle
const HOST = 'site.fast.test.local'
const ports = { fast: 0, oracle: 0 }

before(async () => {
  // One upstream for both proxies, so the echoed Host is the same.
  fastUp = await startUpstream('up', upstreamHandler)
  slowUp = await startUpstream('refused')
  const refused = slowUp.url
  await slowUp.close()
  certs = await certFiles(['*.fast.test.local'])
  const routes = [
    { host: HOST, upstream: fastUp.url, timeouts: { responseMs: 200 } },
    { host: HOST, path: '/api', rewritePrefix: '/v2', upstream: fastUp.url, timeouts: { responseMs: 200 } },
    { host: HOST, path: '/down', upstream: refused },
  ]
  const base = {
    https: { host: '127.0.0.1', port: 0, http2: true },
    http: false as const,
    certificates: [{ cert: certs.cert, key: certs.key }],
    routes,
  }
  fast = await createProxy({ ...base, logger: countingLogger(fastLog) } as never)
  oracle = await createProxy({
    ...base,
    logger: countingLogger(oracleLog),
    admin: { host: '127.0.0.1', port: 0 },
  } as never)
  ports.fast = (await fast.listen()).https.port
  ports.oracle = (await oracle.listen()).https.port
})

after(async () => {
  await Promise.all([fast?.close(), oracle?.close()])
  await Promise.all([fastUp?.close(), certs?.remove()])
})

const PATHS = [
  '/',
  '/echo?q=1&r=%2F+%20&flag',
  '/a/b/c?x=y&x=z',
  "/odd/!$&'()*+,=:@~",
  '/odd/"<>`{}|^',
  '/odd/%20space',
  '/odd;param',
  '/odd/%2e%2e/x',
  '//double',
  '/api',
  '/api/',
  '/api/x?y=1',
  '/apix',
  '/api/redirect',
  '/big',
  '/chunked',
  '/304',
  '/204',
  '/hop',
  '/reset',
  '/mid-reset',
  '/head-reset',
  '/early-hints',
  '/slow',
  '/down/x',
]
const HEADER_SETS: Array<Record<string, string | string[]>> = [
  {},
  { accept: 'text/html', 'x-many': ['1', '2'], cookie: 'a=1' },
  { connection: 'keep-alive, x-drop', 'x-drop': 'gone', 'keep-alive': 'timeout=5', te: 'trailers', 'x-kept': 'yes' },
  { 'x-forwarded-for': '6.6.6.6', forwarded: 'for=6.6.6.6', x_forwarded_for: '6.6.6.6', 'x-real-ip': '6.6.6.6' },
  { 'if-none-match': '"x"', 'proxy-authorization': 'Basic eA==' },
]

const CLIENTS = [
  ['HTTP/1.1', send],
  ['HTTP/2', send2],
] as const

test('a plain GET takes the fast path on one proxy and the Fastify path on the other', async () => {
  for (const [protocol, client] of CLIENTS)
    for (const method of ['GET', 'HEAD']) {
      const before = { fast: fastLog.children, oracle: oracleLog.children }
      const a = await client(ports.fast, HOST, certs.ca, method, '/echo?x=1', {})
      const b = await client(ports.oracle, HOST, certs.ca, method, '/echo?x=1', {})
      assert.equal(a.status, 200)
      assert.equal(b.status, 200)
      assert.equal(fastLog.children, before.fast, `${protocol} ${method}: the fast proxy's routing app saw the request`)
      assert.ok(
        oracleLog.children > before.oracle,
        `${protocol} ${method}: the oracle's routing app did not see the request`,
      )
    }
  // A path the router must decode goes the Fastify way on both.
  const before = fastLog.children
  await send(ports.fast, HOST, certs.ca, 'GET', '/odd/%20space', {})
  assert.ok(fastLog.children > before)
})

test('fast path and Fastify path give the same answers, at the client and at the upstream', async () => {
  let compared = 0
  for (const [protocol, client] of CLIENTS)
    for (const method of ['GET', 'HEAD']) {
      for (const path of PATHS) {
        for (const headers of HEADER_SETS) {
          const label = `${protocol} ${method} ${path} ${JSON.stringify(headers)}`
          const seenBefore = fastUp.seen.length
          const a = await client(ports.fast, HOST, certs.ca, method, path, headers)
          const upA = fastUp.seen.slice(seenBefore)
          const seenMid = fastUp.seen.length
          const b = await client(ports.oracle, HOST, certs.ca, method, path, headers)
          const upB = fastUp.seen.slice(seenMid)
          assert.deepEqual(normal(a), normal(b), label)
          assert.deepEqual(
            upA.map((s) => ({ method: s.method, url: s.url, headers: s.headers })),
            upB.map((s) => ({ method: s.method, url: s.url, headers: s.headers })),
            `${label}: at the upstream`,
          )
          compared++
        }
      }
    }
  assert.equal(compared, 2 * 2 * PATHS.length * HEADER_SETS.length)
})

test('a client that leaves mid-body ends the upstream request (fast path)', { timeout: 30_000 }, async () => {
  for (const protocol of ['HTTP/1.1', 'HTTP/2']) {
    const before = fastLog.children
    const closed = once(endlessClosed, 'closed')
    await new Promise<void>((resolve, reject) => {
      if (protocol === 'HTTP/2') {
        const session = h2connect(`https://127.0.0.1:${ports.fast}`, { ca: certs.ca, servername: HOST })
        session.on('error', () => {})
        const stream = session.request({ ':path': '/endless', ':authority': HOST }, { endStream: true })
        stream.on('error', () => {})
        stream.once('data', () => {
          session.destroy()
          resolve()
        })
        return
      }
      const req = httpsRequest(
        {
          host: '127.0.0.1',
          port: ports.fast,
          path: '/endless',
          servername: HOST,
          headers: { host: HOST },
          ca: certs.ca,
          agent: false,
        },
        (res) => {
          res.once('data', () => {
            req.destroy()
            resolve()
          })
        },
      )
      req.on('error', (e) => (req.destroyed ? undefined : reject(e)))
      req.end()
    })
    // The upstream's response closes without having finished: the proxy dropped its upstream connection.
    const [finished] = await closed
    assert.equal(finished, false, protocol)
    assert.equal(fastLog.children, before, `${protocol}: not on the fast path`)
  }
})
