// A fault-injecting HTTPS proxy in front of Pebble: forwards every request unchanged (keeping the Host header, so
// Pebble builds its URLs and checks JWS "url" fields against the proxy's address), and answers chosen requests
// itself, e.g. 429 with Retry-After on newOrder, or drops connections to play a CA outage. Hooks let the ACME front
// (acme-front.ts) add ARI and profiles on top of the same forwarding.
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import { createServer, request as httpsRequest, type Server } from 'node:https'
import type { Socket } from 'node:net'
import { makeTestCertificates } from './certs.js'

export interface CaProxyRule {
  /** Which requests the rule answers: method and a test on the path (e.g. /order-plz is Pebble's newOrder). */
  method?: string
  path: RegExp
  /**
   * Instead of answering: hold the request, never answering it. 'request' holds it before Pebble sees it; 'response'
   * forwards it and holds Pebble's answer (the CA has acted, the client never learns it). Used to stop a client at
   * an exact point of an order (e.g. to SIGKILL it there). `status` is ignored.
   */
  hold?: 'request' | 'response'
  status?: number
  headers?: Record<string, string>
  body?: unknown
  /** How many matching requests to answer before the rule retires; default unlimited. */
  times?: number
}

export interface CaProxy {
  /** The directory URL to give the ACME client instead of Pebble's. */
  directoryUrl: string
  port: number
  /** PEM roots to trust for the proxy's own HTTPS. */
  caBundle: string
  /** Every request seen, in order: method, path and the status returned. */
  requests: Array<{ method: string; path: string; status: number; injected: boolean }>
  inject(rule: CaProxyRule): void
  /** Resolves when a `hold` rule holds its next request (for 'response': once Pebble has answered it). */
  waitForHold(timeoutMs?: number): Promise<{ method: string; path: string }>
  clearRules(): void
  /** While down, every connection is destroyed at once (connection reset), as if the CA were unreachable. */
  setDown(down: boolean): void
  stop(): Promise<void>
}

export interface CaProxyOptions {
  /** Pebble's HTTPS port and the CA bundle that trusts it. */
  upstreamPort: number
  upstreamCa: string
  /** Port to listen on; default ephemeral. */
  port?: number
}

/** One request as the proxy saw it, body read in full (ACME bodies are small). */
export interface ProxyExchange {
  method: string
  path: string
  headers: IncomingHttpHeaders
  body: Buffer
}

/** An answer, from Pebble or made up by the proxy. */
export interface ProxyAnswer {
  status: number
  headers: OutgoingHttpHeaders
  body: Buffer
}

/** Sends a request to Pebble (Host kept as given) and reads its whole answer. */
export type Upstream = (exchange: ProxyExchange) => Promise<ProxyAnswer>

/**
 * How a front built on this proxy (the ACME front) adds behaviour; rules (`inject`) are applied first, so fault
 * injection keeps working in front of it. Both hooks see only requests no rule answered; `transform` also sees
 * the answers a `hold: 'response'` rule keeps from the client (Pebble has acted on them).
 */
export interface CaProxyHooks {
  /** Answers the request itself, or returns undefined to forward it to Pebble. */
  intercept?(exchange: ProxyExchange, upstream: Upstream): Promise<ProxyAnswer | undefined>
  /** Observes or rewrites Pebble's answer before the client gets it. */
  transform?(exchange: ProxyExchange, answer: ProxyAnswer, upstream: Upstream): Promise<ProxyAnswer>
}

// Hop-by-hop and length headers of Pebble's answer: the proxy re-frames the (possibly rewritten) body itself.
const REFRAMED = ['content-length', 'transfer-encoding', 'connection', 'keep-alive']

function readBody(stream: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    stream.on('data', (chunk: Buffer) => chunks.push(chunk))
    stream.on('end', () => resolve(Buffer.concat(chunks)))
    stream.on('error', reject)
  })
}

export async function startCaProxy(options: CaProxyOptions): Promise<CaProxy> {
  return startCaProxyWith(options, {})
}

/** The proxy with hooks: what `startCaProxy` and the ACME front share. Not part of the public API. */
export async function startCaProxyWith(options: CaProxyOptions, hooks: CaProxyHooks): Promise<CaProxy> {
  const certs = await makeTestCertificates({ names: ['localhost', '127.0.0.1'] })
  const rules: Array<CaProxyRule & { used: number }> = []
  const requests: CaProxy['requests'] = []
  let down = false
  const sockets = new Set<Socket>()
  const holds: Array<{ method: string; path: string }> = []
  const holdWaiters: Array<(held: { method: string; path: string }) => void> = []
  const held = (h: { method: string; path: string }) => {
    const waiter = holdWaiters.shift()
    if (waiter) waiter(h)
    else holds.push(h)
  }

  const upstream: Upstream = (exchange) =>
    new Promise((resolve, reject) => {
      const up = httpsRequest(
        {
          host: '127.0.0.1',
          port: options.upstreamPort,
          method: exchange.method,
          path: exchange.path,
          headers: exchange.headers,
          ca: options.upstreamCa,
          servername: 'localhost',
          agent: false,
        },
        (res: IncomingMessage) => {
          readBody(res).then((body) => resolve({ status: res.statusCode ?? 502, headers: res.headers, body }), reject)
        },
      )
      up.on('error', reject)
      up.end(exchange.body)
    })

  const reply = (res: ServerResponse, exchange: ProxyExchange, answer: ProxyAnswer) => {
    const headers: OutgoingHttpHeaders = { ...answer.headers }
    // A HEAD answer describes a body it does not carry: keep Pebble's framing headers as they are.
    if (exchange.method !== 'HEAD') {
      for (const name of REFRAMED) delete headers[name]
      headers['content-length'] = String(answer.body.length)
    }
    res.writeHead(answer.status, headers)
    res.end(exchange.method === 'HEAD' ? undefined : answer.body)
  }

  const handle = async (req: IncomingMessage, res: ServerResponse, rule: (typeof rules)[number] | undefined) => {
    const method = req.method ?? 'GET'
    const path = req.url ?? '/'
    const exchange: ProxyExchange = { method, path, headers: req.headers, body: await readBody(req) }
    const own = await hooks.intercept?.(exchange, upstream)
    if (own) {
      requests.push({ method, path, status: own.status, injected: true })
      reply(res, exchange, own)
      return
    }
    let answer: ProxyAnswer
    try {
      answer = await upstream(exchange)
    } catch (err) {
      requests.push({ method, path, status: 502, injected: false })
      res.writeHead(502, { 'content-type': 'text/plain' })
      res.end(`upstream error: ${(err as Error).message}`)
      return
    }
    // Before a 'response' hold too: the CA has acted, so the front's bookkeeping (orders, certificates) follows.
    if (hooks.transform) answer = await hooks.transform(exchange, answer, upstream)
    if (rule?.hold === 'response') {
      // Pebble has acted; the client never learns it.
      rule.used++
      requests.push({ method, path, status: answer.status, injected: true })
      held({ method, path })
      return
    }
    requests.push({ method, path, status: answer.status, injected: false })
    reply(res, exchange, answer)
  }

  const server: Server = createServer({ key: certs.key, cert: certs.cert }, (req, res) => {
    const path = req.url ?? '/'
    const method = req.method ?? 'GET'
    const rule = rules.find(
      (r) =>
        (r.method === undefined || r.method === method) &&
        r.path.test(path) &&
        (r.times === undefined || r.used < r.times),
    )
    if (rule?.hold === 'request') {
      rule.used++
      requests.push({ method, path, status: 0, injected: true })
      req.resume()
      held({ method, path })
      return
    }
    if (rule && rule.hold === undefined) {
      rule.used++
      requests.push({ method, path, status: rule.status ?? 500, injected: true })
      // Drain the request body, then answer.
      req.resume()
      req.on('end', () => {
        const body = rule.body === undefined ? '' : JSON.stringify(rule.body)
        res.writeHead(rule.status ?? 500, { 'content-type': 'application/problem+json', ...rule.headers })
        res.end(body)
      })
      return
    }
    handle(req, res, rule).catch((err: Error) => {
      requests.push({ method, path, status: 500, injected: true })
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' })
      res.end(`proxy error: ${err.message}`)
    })
  })
  server.on('connection', (socket: Socket) => {
    if (down) {
      socket.destroy()
      return
    }
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  server.keepAliveTimeout = 1000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve())
  })
  const port = (server.address() as { port: number }).port
  let stopped = false
  return {
    directoryUrl: `https://127.0.0.1:${port}/dir`,
    port,
    caBundle: certs.caCert,
    requests,
    inject(rule) {
      rules.push({ ...rule, used: 0 })
    },
    waitForHold(timeoutMs = 30_000) {
      const ready = holds.shift()
      if (ready) return Promise.resolve(ready)
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          const i = holdWaiters.indexOf(done)
          if (i >= 0) holdWaiters.splice(i, 1)
          reject(new Error(`no request was held within ${timeoutMs} ms`))
        }, timeoutMs)
        const done = (h: { method: string; path: string }) => {
          clearTimeout(timer)
          resolve(h)
        }
        holdWaiters.push(done)
      })
    },
    clearRules() {
      rules.length = 0
    },
    setDown(value) {
      down = value
      if (value) for (const s of sockets) s.destroy()
    },
    async stop() {
      if (stopped) return
      stopped = true
      for (const s of sockets) s.destroy()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}
