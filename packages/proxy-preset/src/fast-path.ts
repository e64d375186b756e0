// The fast path: a bodiless GET or HEAD (HTTP/1.1 or HTTP/2) for a route with one upstream (no health check, no websocket)
// goes from the listener straight to the route's undici Agent and back to the client's ServerResponse, without the
// routing app (Fastify's request/reply objects, hooks, http-proxy, reply-from). It applies what that path applies
// (routes.ts): the path checks, the same request headers (hop-by-hop removal, X-Forwarded-*, Host, header changes),
// the same response headers (hop-by-hop removal, Location, header changes, Connection: close while draining), the
// same 502/504 bodies, the same timeouts (the same Agent), and the client's abort ends the upstream request.
//
// A request takes it only when nothing needs the routing app: the access log and metrics are off (their figures
// come from per-request Fastify hooks), the proxy is not draining, and the path holds none of the characters whose
// handling belongs to the router (percent-encodings, ';', '\\', '#'); every other request goes the Fastify way.
// test/fast-path.test.ts checks both ways give the same answer, at the upstream and at the client.
import { type IncomingMessage, type ServerResponse, STATUS_CODES } from 'node:http'
import type { FastifyBaseLogger } from 'fastify'
import type { Dispatcher } from 'undici'
import type { TrustFunction } from './forwarded.js'
import { connectionTokens } from './headers.js'
import type { ResolvedRoute } from './route-options.js'
import {
  headerListSize,
  pathProblem,
  requestHeadersFor,
  responseHeadersFor,
  type Site,
  upstreamFailure,
} from './routes.js'

/** Path characters the router treats specially (decoding, parameters, fragments): such requests go the Fastify way. */
const ROUTER_CHARACTERS = /[%;\\#]/

export interface FastPathDeps {
  log: FastifyBaseLogger
  trusted: TrustFunction
  draining: () => boolean
  /** limits.headerBytes (HTTP/2 requests over it go to the routing app, which answers 431). */
  headerBytes: number
  /** The Agent of each route that qualifies (one upstream, no health check, no websocket). */
  agents: ReadonlyMap<ResolvedRoute, Dispatcher>
}

/** The route of a site a path goes to: the longest prefix at a segment boundary, as the router picks it. */
function routeFor(site: Site, path: string): ResolvedRoute | undefined {
  let best: ResolvedRoute | undefined
  for (const route of site.routes) {
    const p = route.path
    if (p !== '' && path !== p && !(path.startsWith(p) && path.charCodeAt(p.length) === 47)) continue
    if (best === undefined || p.length > best.path.length) best = route
  }
  return best
}

/** The client is gone or answered (HTTP/2's compatibility response has no `destroyed`: its stream has). */
function gone(res: ServerResponse): boolean {
  const r = res as ServerResponse & { stream?: { destroyed?: boolean } }
  return r.writableEnded || r.destroyed === true || r.stream?.destroyed === true
}

function errorBody(error: Error & { statusCode?: number; code?: string }): string {
  const statusCode = error.statusCode ?? 500
  return JSON.stringify({ statusCode, code: error.code, error: STATUS_CODES[statusCode], message: error.message })
}

/**
 * Returns the fast path's handler: true when it took the request (it answers it), false when the request must go
 * to the routing app.
 */
export function createFastPath(deps: FastPathDeps): (req: IncomingMessage, res: ServerResponse, site: Site) => boolean {
  const { log, trusted, draining, agents } = deps
  return (req, res, site) => {
    const method = req.method
    if (method !== 'GET' && method !== 'HEAD') return false
    if (draining()) return false
    const h2 = req.httpVersionMajor === 2
    // HTTP/2: a request whose HEADERS did not end the stream may carry a body.
    if (h2 && (req as { stream?: { endAfterHeaders?: boolean } }).stream?.endAfterHeaders === false) return false
    const headers = req.headers
    if (
      headers['content-length'] !== undefined ||
      headers['transfer-encoding'] !== undefined ||
      headers.upgrade !== undefined
    )
      return false
    const url = req.url ?? '/'
    const q = url.indexOf('?')
    const path = q < 0 ? url : url.slice(0, q)
    // ';' never gets past ROUTER_CHARACTERS, so allowSemicolonInPath cannot matter here.
    if (ROUTER_CHARACTERS.test(path) || pathProblem(path, false) !== undefined) return false
    const route = routeFor(site, path)
    const agent = route === undefined ? undefined : agents.get(route)
    if (route === undefined || agent === undefined) return false
    // The header list limit of an HTTP/2 request sent with the connection preface is the routing app's to answer
    // (431, routes.ts registerHttp2HeaderLimit).
    if (h2 && headerListSize(req.rawHeaders) > deps.headerBytes) return false
    const upstream = route.upstreams[0]!
    let target: URL
    try {
      const dest = route.rewritePrefix + path.slice(route.path.length)
      // http-proxy refuses a destination starting with '//' (400); URL would read it as another host.
      if (dest.startsWith('//')) return false
      target = new URL(dest === '' ? '/' : dest, upstream)
    } catch {
      return false
    }
    forward(req, res, route, agent, target.pathname + (q < 0 ? '' : url.slice(q)), target.host)
    return true
  }

  function forward(
    req: IncomingMessage,
    res: ServerResponse,
    route: ResolvedRoute,
    agent: Dispatcher,
    upstreamPath: string,
    upstreamHost: string,
  ): void {
    // The request headers as reply-from builds them, then the routing's own rewrite (routes.ts upstreamHeaders).
    const h2 = req.httpVersionMajor === 2
    let source: Record<string, unknown>
    if (h2) {
      source = {}
      for (const name of Object.keys(req.headers)) if (name.charCodeAt(0) !== 58) source[name] = req.headers[name]
    } else source = { ...req.headers }
    if (source['connection'] !== undefined) {
      for (const name of connectionTokens(source['connection'])) delete source[name]
      delete source['connection']
    }
    source['host'] = upstreamHost
    const authority = h2 ? req.headers[':authority'] : undefined
    const original = typeof authority === 'string' ? authority : req.headers.host
    const out = requestHeadersFor(route, source, req.socket.remoteAddress, original, trusted)
    for (const name of connectionTokens(out['connection'])) delete out[name]
    delete out['connection']
    delete out['transfer-encoding']

    // A dispatch handler writes the upstream response into the client's response as it arrives: no body stream
    // between the two (undici's request() would put a Readable and a pipe there: 1 MiB bodies cost ~20% more CPU
    // that way, BENCHMARKS.md), backpressure by pausing undici while the client's buffer is full.
    let controller: Dispatcher.DispatchController | undefined
    let started = false
    let done = false
    const onClose = (): void => {
      // The client left before the upstream response ended: end the upstream request (as Fastify's path does).
      if (!done) controller?.abort(new Error('client closed the connection'))
    }
    const onDrain = (): void => controller?.resume()
    res.once('close', onClose)
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart(c) {
        controller = c
        if (gone(res)) c.abort(new Error('client closed the connection'))
      },
      onResponseStart(_c, status, upstreamHeaders) {
        // 1xx: undici goes on to the final response; the client gets only that one (as through Fastify).
        if (status < 200) return
        started = true
        const headers = responseHeadersFor(route, upstreamHeaders as Record<string, unknown>)
        delete headers['transfer-encoding']
        if (h2) delete headers['host']
        else if (draining() || !req.complete) headers['connection'] = 'close'
        if (status === 204) {
          delete headers['content-type']
          delete headers['content-length']
        }
        res.statusCode = status
        for (const name of Object.keys(headers)) res.setHeader(name, headers[name] as string)
      },
      onResponseData(c, chunk) {
        if (!started || res.write(chunk) || c.paused) return
        c.pause()
        res.once('drain', onDrain)
      },
      onResponseEnd() {
        done = true
        res.off('close', onClose)
        if (started) res.end()
        else if (!gone(res)) failed(req, res, route, new Error('the upstream ended without a final response'))
      },
      onResponseError(_c, error) {
        done = true
        res.off('close', onClose)
        if (gone(res)) return
        if (!started) {
          failed(req, res, route, error)
          return
        }
        // As Fastify streams a reply: an upstream failure after the headers went out ends the client connection;
        // before the first body byte, the client gets a 500 with the headers already set, as Fastify answers an
        // error there (its error reply keeps them, replacing the content type and length).
        if (res.headersSent) {
          log.warn({ route: route.label, err: error }, 'upstream body failed')
          res.destroy()
          return
        }
        const e = error as Error & { statusCode?: number }
        log.error({ route: route.label, err: error }, error.message)
        sendError(res, Object.assign(e, { statusCode: e.statusCode ?? 500 }))
      },
    }
    agent.dispatch(
      { origin: route.upstreams[0]!, path: upstreamPath, method: req.method as 'GET', headers: out as never },
      handler,
    )
  }

  function failed(req: IncomingMessage, res: ServerResponse, route: ResolvedRoute, error: Error): void {
    if (gone(res) || res.headersSent) return
    const { codes, answer } = upstreamFailure(route, error)
    log.error({ route: route.label, upstream: route.upstreams, codes, err: error }, 'upstream request failed')
    if (draining() && req.httpVersionMajor === 1) res.setHeader('connection', 'close')
    sendError(res, answer)
  }

  function sendError(res: ServerResponse, error: Error & { statusCode?: number }): void {
    const body = errorBody(error)
    res.statusCode = error.statusCode ?? 500
    res.setHeader('content-type', 'application/json; charset=utf-8')
    res.setHeader('content-length', Buffer.byteLength(body))
    res.end(body)
  }
}
