// Routing: which upstream a request goes to, and everything checked on the way (path escapes, body size,
// websocket upgrades, hop-by-hop and forwarding headers, upstream failures).
//
// Host dispatch. Fastify's host constraint keeps, per route path, a bitmask of handlers (find-my-way allows at most
// 31 constrained handlers per path), and every host of a proxy shares the paths `/` and `/*`: it stops at 31
// hosts. So hosts are dispatched before the router instead: Fastify's `rewriteUrl` looks the Host up in a Map
// (exact name, then `*.parent`: at most two lookups, whatever the number of hosts) and prefixes the URL with that
// site's internal prefix (`/_vhost/<id>`); each route is an @fastify/http-proxy registration under
// `/_vhost/<id><path>`, so the radix tree does the path matching, longest prefix first. The prefix is stripped again
// before proxying (it is http-proxy's own prefix), and a custom `vhost` route constraint, derived from the
// rewrite, makes a client-forged `/_vhost/<id>/...` path useless: it only matches when the Host chose that site.
// Requests for hosts without routes are not rewritten: they reach the health route, routes the user added to the
// returned instance, or the not-found handler (421, or 404 for a known host without a matching path prefix).
import type { IncomingMessage } from 'node:http'
import { connect as netConnect, type Socket } from 'node:net'
import { Transform, type TransformCallback } from 'node:stream'
import { connect as tlsConnect } from 'node:tls'
import httpProxy from '@fastify/http-proxy'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { Agent, type Dispatcher } from 'undici'
import {
  ERR_BAD_PATH,
  ERR_BODY_TOO_LARGE,
  ERR_HEADERS_TOO_LARGE,
  ERR_NO_ROUTE,
  ERR_UNKNOWN_HOST,
  ERR_UPSTREAM_TIMEOUT,
  ERR_UPSTREAM_UNAVAILABLE,
  ERR_WEBSOCKET_DISABLED,
} from './errors.js'
import { type TrustFunction, upstreamRequestHeaders } from './forwarded.js'
import { endToEndCopy } from './headers.js'
import { HostTable, requestHost } from './hosts.js'
import type { ResolvedProxyOptions } from './options.js'
import type { ResolvedRoute } from './route-options.js'
import { UpstreamSet } from './upstreams.js'

export const VHOST_PREFIX = '/_vhost'
const kSite = Symbol('proxy-preset.site')
const kTooLarge = Symbol('proxy-preset.body-too-large')
const kUpstreamSocket = Symbol('proxy-preset.upstream-socket')

export interface Site {
  id: string
  host: string
  prefix: string
  routes: ResolvedRoute[]
  /** For the `*` site: which hosts it takes (those with an on-demand certificate); others are unknown hosts. */
  accept?: (host: string) => boolean
}

type RawRequest = IncomingMessage & {
  [kSite]?: Site
  [kTooLarge]?: boolean
  [kUpstreamSocket]?: Socket
  originalUrl?: string
}

/** The site a request was dispatched to (undefined for hosts without routes). */
export function siteOf(request: FastifyRequest): Site | undefined {
  return (request.raw as RawRequest)[kSite]
}

export function buildSiteTable(
  routes: readonly ResolvedRoute[],
  acceptOnDemand: (host: string) => boolean = () => false,
): HostTable<Site> {
  const table = new HostTable<Site>()
  for (const route of routes) {
    let site = table.has(route.host) ? table.get(route.host) : undefined
    if (site === undefined) {
      const id = String(table.size)
      site = { id, host: route.host, prefix: `${VHOST_PREFIX}/${id}`, routes: [] }
      if (route.host === '*') site.accept = acceptOnDemand
      table.set(route.host, site)
    }
    site.routes.push(route)
  }
  return table
}

/** find-my-way constraint strategy: a route constrained to `vhost: id` matches only requests dispatched to that site. */
export const vhostConstraint = {
  name: 'vhost',
  mustMatchWhenDerived: false,
  storage() {
    const map = new Map<string, unknown>()
    return {
      get: (id: string) => map.get(id) ?? null,
      set: (id: string, store: unknown) => {
        map.set(id, store)
      },
    }
  },
  deriveConstraint: (req: IncomingMessage) => (req as RawRequest)[kSite]?.id,
  validate(value: unknown) {
    if (typeof value !== 'string') throw new TypeError('vhost constraint must be a site id')
  },
}

/**
 * The host dispatch described at the top of this file, for the listener's request handler: the site a request
 * goes to (marked on the request, so the routing app's rewriteUrl does not look it up again), or undefined for the
 * health path and hosts without routes.
 */
export function dispatchSite(
  req: IncomingMessage,
  sites: HostTable<Site>,
  health: ResolvedProxyOptions['health'],
): Site | undefined {
  const url = req.url ?? '/'
  const host = requestHost(req.headers)
  if (host === undefined || url.charCodeAt(0) !== 47 /* '/' */) return undefined
  if (health && (health.host === undefined || health.host === host)) {
    const q = url.indexOf('?')
    if ((q < 0 ? url : url.slice(0, q)) === health.path) return undefined
  }
  const site = sites.get(host)
  if (site === undefined || (site.accept !== undefined && !site.accept(host))) return undefined
  ;(req as RawRequest)[kSite] = site
  return site
}

/** Fastify `rewriteUrl` of a routing app: prefixes the URL with the site's internal prefix. */
export function createRewriteUrl(sites: HostTable<Site>): (req: IncomingMessage) => string {
  return (req) => {
    const url = req.url ?? '/'
    let site = (req as RawRequest)[kSite]
    if (site === undefined) {
      const host = requestHost(req.headers)
      if (host === undefined || url.charCodeAt(0) !== 47) return url
      site = sites.get(host)
      if (site === undefined) return url
      ;(req as RawRequest)[kSite] = site
    }
    return site.prefix + url
  }
}

/** Characters all but one refusal of pathProblem() need: '%' (encodings), '\\', ';', NUL. */
const SUSPECT = /[%\\;\0]/
/** The remaining refusal, for a path without those: a '.' or '..' segment. */
const DOT_SEGMENT = /(?:^|\/)\.\.?(?:\/|$)/

/**
 * Why a path must not be proxied, or undefined. Refuses what could make an upstream (or a rewrite) resolve outside
 * the route's prefix: dot-segments (also percent-encoded or double-encoded), backslashes, NUL, and, unless allowed,
 * `;` path parameters (`/..;/` is a dot-segment to some servers).
 */
export function pathProblem(rawPath: string, allowSemicolon: boolean): string | undefined {
  // Most paths hold none of the characters the checks below are about: one scan instead of decoding and splitting.
  if (!SUSPECT.test(rawPath)) return DOT_SEGMENT.test(rawPath) ? 'dot-segment in path' : undefined
  if (rawPath.includes('\\')) return 'backslash in path'
  let decoded: string
  try {
    decoded = decodeURIComponent(rawPath)
  } catch {
    return 'malformed percent-encoding'
  }
  if (decoded.includes('\\')) return 'encoded backslash in path'
  if (decoded.includes('\0')) return 'NUL in path'
  if (!allowSemicolon && decoded.includes(';')) return "';' path parameters are not accepted"
  for (const segment of decoded.split('/')) {
    const bare = allowSemicolon ? (segment.split(';')[0] ?? '') : segment
    if (bare === '.' || bare === '..') return 'dot-segment in path'
  }
  if (/%(?:2e|2f|5c|00)/i.test(decoded)) return 'double-encoded dot, slash or backslash in path'
  return undefined
}

function applyChanges(headers: Record<string, unknown>, changes: ResolvedRoute['requestHeaders']): void {
  for (const name of changes.remove) delete headers[name]
  for (const [name, value] of changes.set) headers[name] = value
}

/**
 * An upstream's path-absolute `Location` as the client must see it: under rewritePrefix (at a segment boundary) it
 * is moved under the route's path; anything else (other paths, relative, absolute and `//` URLs) is left alone.
 * http-proxy's own rewrite would put its prefix, our internal `/_vhost/<id>/...`, in front.
 */
function publicLocation(location: string, path: string, rewritePrefix: string): string {
  if (rewritePrefix === path || location[0] !== '/' || location[1] === '/') return location
  if (rewritePrefix !== '') {
    if (!location.startsWith(rewritePrefix)) return location
    const next = location[rewritePrefix.length]
    if (next !== undefined && next !== '/' && next !== '?' && next !== '#') return location
  }
  const moved = path + location.slice(rewritePrefix.length)
  return moved[0] === '/' ? moved : `/${moved}`
}

/** Counts body bytes on the way to the upstream and fails the stream past the limit. */
class BodyLimit extends Transform {
  #seen = 0
  constructor(
    readonly limit: number,
    readonly onExceeded: () => void,
  ) {
    super()
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#seen += chunk.length
    if (this.#seen > this.limit) {
      this.onExceeded()
      callback(new ERR_BODY_TOO_LARGE(this.limit))
      return
    }
    callback(null, chunk)
  }
}

/** HTTP/1.1: end the connection after this response (its request body may be unread). HTTP/2 has no such header. */
function closeAfter(reply: FastifyReply): void {
  if (reply.request.raw.httpVersionMajor === 1) reply.header('connection', 'close')
}

function errorCodes(error: unknown): string[] {
  const codes: string[] = []
  let current: unknown = error
  for (let depth = 0; current && depth < 5; depth++) {
    const code = (current as { code?: unknown }).code
    if (typeof code === 'string') codes.push(code)
    current = (current as { cause?: unknown }).cause
  }
  return codes
}

function describeFailure(codes: string[]): string {
  if (codes.includes('ECONNREFUSED')) return 'connection refused'
  if (codes.some((c) => c === 'ECONNRESET' || c === 'UND_ERR_SOCKET' || c === 'EPIPE')) return 'connection reset'
  if (codes.some((c) => c === 'ENOTFOUND' || c === 'EAI_AGAIN')) return 'host name not resolved'
  if (codes.some((c) => c === 'EHOSTUNREACH' || c === 'ENETUNREACH')) return 'unreachable'
  if (codes.some((c) => c.startsWith('ERR_TLS') || c.includes('CERT'))) return 'TLS failure'
  return 'request failed'
}

export interface RoutingDeps {
  sites: HostTable<Site>
  options: ResolvedProxyOptions
  trusted: TrustFunction
  /** True once a graceful close has started: proxied HTTP/1.1 responses then end their connection. */
  draining: () => boolean
}

function changes(c: ResolvedRoute['requestHeaders']): boolean {
  return c.remove.length > 0 || c.set.length > 0
}

/**
 * The headers sent upstream for a request to `route`, from the client's end-to-end headers: X-Forwarded-* and
 * Forwarded (forwarded.ts), the client's Host kept with `preserveHost`, then the route's header changes.
 */
export function requestHeadersFor(
  route: ResolvedRoute,
  headers: Record<string, unknown>,
  peer: string | undefined,
  host: string | undefined,
  trusted: TrustFunction,
): Record<string, unknown> {
  const out = upstreamRequestHeaders(headers, { peer, secure: true, host, trusted })
  if (route.preserveHost && host !== undefined) out['host'] = host
  if (changes(route.requestHeaders)) applyChanges(out, route.requestHeaders)
  return out
}

/** The headers a client gets for an upstream response of `route` (Connection: close is the caller's). */
export function responseHeadersFor(route: ResolvedRoute, upstream: Record<string, unknown>): Record<string, unknown> {
  const headers = endToEndCopy(upstream)
  const location = headers['location']
  if (typeof location === 'string') headers['location'] = publicLocation(location, route.path, route.rewritePrefix)
  if (changes(route.responseHeaders)) applyChanges(headers, route.responseHeaders)
  return headers
}

/** What a client gets when the upstream request failed: 504 for a timeout, else 502; and the codes seen. */
export function upstreamFailure(route: ResolvedRoute, error: Error): { codes: string[]; answer: Error } {
  const codes = errorCodes(error)
  const timedOut =
    (error as { statusCode?: number }).statusCode === 504 || codes.some((c) => /TIMEOUT/i.test(c) || c === 'ETIMEDOUT')
  return {
    codes,
    answer: timedOut
      ? new ERR_UPSTREAM_TIMEOUT(route.label)
      : new ERR_UPSTREAM_UNAVAILABLE(route.label, describeFailure(codes)),
  }
}

/**
 * Registers every route (and the not-found handler) on the HTTPS app. Returns the dispatchers to close and, per
 * route label, the upstream sets of routes with several upstreams or a health check.
 */
export function registerRoutes(
  app: FastifyInstance,
  deps: RoutingDeps,
): {
  dispatchers: Dispatcher[]
  upstreamSets: Map<string, UpstreamSet>
  /** The Agent of each route the fast path may take (one upstream, no health check, no websocket). */
  agents: Map<ResolvedRoute, Dispatcher>
} {
  const { sites, options } = deps
  const dispatchers: Dispatcher[] = []
  const routeAgents = new Map<ResolvedRoute, Dispatcher>()
  const upstreamSets = new Map<string, UpstreamSet>()
  // Routes with identical timeouts share one connection pool per upstream origin.
  const agents = new Map<string, Agent>()
  const dispatcherFor = (route: ResolvedRoute): Dispatcher => {
    const settings = {
      connect: { timeout: route.connectMs },
      headersTimeout: route.responseMs,
      bodyTimeout: route.idleMs,
    }
    if (route.upstreams.length > 1 || route.healthCheck !== undefined) {
      const set = new UpstreamSet(route)
      dispatchers.push(set)
      upstreamSets.set(route.label, set)
      return set
    }
    const key = `${route.connectMs}/${route.responseMs}/${route.idleMs}`
    let agent = agents.get(key)
    if (agent === undefined) {
      agent = new Agent(settings)
      agents.set(key, agent)
      dispatchers.push(agent)
    }
    if (!route.websocket) routeAgents.set(route, agent)
    return agent
  }
  const anyWebsocket = options.routes.some((r) => r.websocket)

  for (const site of sites.values()) {
    app.register(
      async (siteApp) => {
        // Bodies stream through untouched; the only parser counts bytes against the limit.
        siteApp.removeAllContentTypeParsers()
        siteApp.addContentTypeParser('*', (request, payload, done) => {
          const raw = request.raw as RawRequest
          const limit = new BodyLimit(options.limits.bodyBytes, () => {
            raw[kTooLarge] = true
          })
          // pipe() does not pass on a failure of the source: a client that dies mid-body (reset, a chunked-encoding
          // error) would leave the upstream request waiting for the rest until its timeouts, holding an upstream
          // connection and the proxy's close(). End the upstream body with the error instead.
          payload.on('error', (err) => limit.destroy(err))
          payload.on('close', () => {
            if (!payload.readableEnded) limit.destroy(new Error('the client closed before sending the whole body'))
          })
          done(null, payload.pipe(limit))
        })
        // Callback-style hooks: an async hook costs a promise and a microtask turn per request.
        siteApp.addHook('onRequest', (request, reply, done) => {
          const route = request.routeOptions.config as unknown as { proxyRoute?: ResolvedRoute }
          const target = route.proxyRoute
          const raw = request.raw as RawRequest
          const rawUrl = raw.originalUrl ?? request.url
          const q = rawUrl.indexOf('?')
          const problem = pathProblem(q < 0 ? rawUrl : rawUrl.slice(0, q), options.allowSemicolonInPath)
          if (problem !== undefined) {
            closeAfter(reply)
            reply.send(new ERR_BAD_PATH(problem))
            return
          }
          // Fastify treats a request without Content-Type, Content-Length and Transfer-Encoding as bodiless; an
          // HTTP/2 request may still carry a body (no END_STREAM on its HEADERS). Mark it so the body is streamed
          // (the marker is a hop-by-hop header, removed before the request goes upstream).
          const stream = (raw as { stream?: { endAfterHeaders?: boolean } }).stream
          if (
            raw.httpVersionMajor === 2 &&
            stream?.endAfterHeaders === false &&
            request.headers['content-length'] === undefined &&
            request.headers['transfer-encoding'] === undefined
          ) {
            raw.headers['transfer-encoding'] = 'chunked'
          }
          const length = Number(request.headers['content-length'] ?? 0)
          if (length > options.limits.bodyBytes) {
            closeAfter(reply)
            reply.send(new ERR_BODY_TOO_LARGE(options.limits.bodyBytes))
            return
          }
          if (target?.websocket && (raw as { upgrade?: boolean }).upgrade && raw.method === 'GET') {
            connectUpstream(target, upstreamSets.get(target.label)).then(
              (socket) => {
                raw[kUpstreamSocket] = socket
                // Not consumed (a later hook answered, the client left): do not keep the connection.
                raw.socket.once('close', () => socket.destroy())
                done()
              },
              (error: unknown) => {
                reply.log.error(
                  { route: target.label, codes: errorCodes(error), err: error },
                  'websocket upstream failed',
                )
                closeAfter(reply)
                reply.send(new ERR_UPSTREAM_UNAVAILABLE(target.label, describeFailure(errorCodes(error))))
              },
            )
            return
          }
          if (
            target &&
            !target.websocket &&
            request.headers.upgrade !== undefined &&
            (anyWebsocket || /websocket/i.test(String(request.headers.upgrade)))
          ) {
            closeAfter(reply)
            reply.send(new ERR_WEBSOCKET_DISABLED(target.label))
            return
          }
          done()
        })
        for (const route of site.routes) registerRoute(siteApp, site, route, dispatcherFor(route), deps)
      },
      { prefix: site.prefix },
    )
  }

  registerHttp2HeaderLimit(app, options)
  registerNotFound(app)
  return { dispatchers, upstreamSets, agents: routeAgents }
}

function connectTo(origin: string, timeoutMs: number): Promise<Socket> {
  const url = new URL(origin)
  const host = url.hostname.replace(/^\[|\]$/g, '')
  const secure = url.protocol === 'https:'
  const port = Number(url.port || (secure ? 443 : 80))
  return new Promise((resolve, reject) => {
    const socket: Socket = secure
      ? tlsConnect({ host, port, servername: /^[\d.]+$|:/.test(host) ? undefined : host, ALPNProtocols: ['http/1.1'] })
      : netConnect({ host, port })
    const event = secure ? 'secureConnect' : 'connect'
    const timer =
      timeoutMs > 0
        ? setTimeout(() => {
            const err = Object.assign(new Error('connect timeout'), { code: 'UND_ERR_CONNECT_TIMEOUT' })
            socket.destroy(err)
          }, timeoutMs)
        : undefined
    socket.once(event, () => {
      clearTimeout(timer)
      socket.removeListener('error', reject)
      resolve(socket)
    })
    socket.once('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
  })
}

/**
 * A websocket upgrade is answered 101 only once the proxy holds a connection to an upstream (http-proxy would answer
 * 101 first and then close with the connect error, internal address included). With several upstreams, a failed one
 * is ejected and another tried once.
 */
async function connectUpstream(route: ResolvedRoute, set: UpstreamSet | undefined): Promise<Socket> {
  if (set === undefined) return connectTo(route.upstreams[0]!, route.connectMs)
  const first = set.pickOrigin()!
  try {
    return await connectTo(first.origin, route.connectMs)
  } catch (error) {
    first.failed(error)
    const second = set.pickOrigin(first.origin)
    if (second === undefined) throw error
    try {
      return await connectTo(second.origin, route.connectMs)
    } catch (again) {
      second.failed(again)
      throw again
    }
  }
}

/** The size of a header list as HTTP/2 counts it (HPACK accounting: name + value + 32 per field). */
export function headerListSize(raw: readonly string[]): number {
  let size = 0
  for (let i = 0; i < raw.length; i += 2) size += (raw[i]?.length ?? 0) + (raw[i + 1]?.length ?? 0) + 32
  return size
}

/**
 * HTTP/2 enforces SETTINGS_MAX_HEADER_LIST_SIZE only once the client has acknowledged our SETTINGS; a request sent
 * with the connection preface is checked here instead (HPACK accounting: name + value + 32 per field).
 */
export function registerHttp2HeaderLimit(app: FastifyInstance, options: ResolvedProxyOptions): void {
  if (!options.https.http2) return
  app.addHook('onRequest', (request, reply, done) => {
    if (request.raw.httpVersionMajor !== 2) return done()
    if (headerListSize(request.raw.rawHeaders) > options.limits.headerBytes) {
      reply.send(new ERR_HEADERS_TOO_LARGE(options.limits.headerBytes))
      return
    }
    done()
  })
}

/**
 * 404 for a known host without a matching prefix, 421 for a host without routes. On the listener's own app,
 * `handOver` gets a request the listener did not dispatch (app.inject()) a last chance to reach the routing.
 */
export function registerNotFound(
  app: FastifyInstance,
  handOver?: (req: IncomingMessage) => ((req: IncomingMessage, res: unknown) => void) | undefined,
): void {
  app.setNotFoundHandler((request, reply) => {
    const handler = handOver?.(request.raw as IncomingMessage)
    if (handler !== undefined) {
      reply.hijack()
      handler(request.raw as IncomingMessage, reply.raw)
      return
    }
    const site = siteOf(request)
    if (site !== undefined) {
      const raw = request.raw as RawRequest
      const url = raw.originalUrl ?? request.url
      const path = url.split('?', 1)[0] ?? '/'
      return reply.send(new ERR_NO_ROUTE(path.slice(0, 200), requestHost(request.headers) ?? site.host))
    }
    const host = requestHost(request.headers)
    return reply.send(new ERR_UNKNOWN_HOST(host === undefined ? '(none or malformed)' : host))
  })
}

function registerRoute(
  siteApp: FastifyInstance,
  site: Site,
  route: ResolvedRoute,
  dispatcher: Dispatcher,
  deps: RoutingDeps,
): void {
  const { options, trusted, draining } = deps
  const upstream = route.upstreams[0]!
  let pendingSocket: Socket | undefined
  const originalHost = (request: FastifyRequest): string | undefined => {
    const value = request.headers[':authority'] ?? request.headers.host
    return typeof value === 'string' ? value : undefined
  }
  const upstreamHeaders = (request: FastifyRequest, headers: Record<string, unknown>): Record<string, unknown> =>
    requestHeadersFor(route, headers, request.socket.remoteAddress, originalHost(request), trusted)

  const onError = (reply: FastifyReply, { error }: { error: Error }): void => {
    const raw = reply.request.raw as RawRequest
    if (raw[kTooLarge]) {
      closeAfter(reply)
      reply.send(new ERR_BODY_TOO_LARGE(options.limits.bodyBytes))
      return
    }
    const { codes, answer } = upstreamFailure(route, error)
    reply.log.error({ route: route.label, upstream: route.upstreams, codes, err: error }, 'upstream request failed')
    if (draining()) closeAfter(reply)
    reply.send(answer)
  }

  siteApp.register(httpProxy, {
    upstream,
    prefix: route.path,
    rewritePrefix: route.rewritePrefix,
    constraints: { vhost: site.id },
    config: { proxyRoute: route },
    // Bodies are parsed (counted) by the site's own parser, registered above.
    proxyPayloads: false,
    // http-proxy turns `<path>?q` with rewritePrefix '' into the destination '' (the query is split off), and
    // reply-from takes an empty source to mean request.url, our `/_vhost/<id>/...`: the empty path is '/'. The
    // query is reply-from's, the client's byte for byte.
    handler: (_request: FastifyRequest, reply: FastifyReply, dest: string, replyOptions: object) =>
      reply.from(dest === '' ? '/' : dest, replyOptions),
    disableRequestLogging: true,
    // Location is rewritten by rewriteHeaders below (publicLocation).
    internalRewriteLocationHeader: false,
    undici: dispatcher as never,
    http2: false,
    websocket: route.websocket,
    ...(route.websocket
      ? {
          wsServerOptions: { maxPayload: options.limits.bodyBytes },
          wsClientOptions: {
            handshakeTimeout: route.connectMs,
            // The connection made before the 101 (connectUpstream): http-proxy creates the upstream WebSocket right
            // after calling rewriteRequestHeaders below, synchronously, so the socket is handed over through this slot.
            createConnection: () => {
              const socket = pendingSocket
              pendingSocket = undefined
              return socket
            },
            rewriteRequestHeaders: (_headers: Record<string, unknown>, request: FastifyRequest) => {
              const raw = request.raw as RawRequest
              pendingSocket = raw[kUpstreamSocket]
              raw[kUpstreamSocket] = undefined
              // Only end-to-end headers the upstream needs; ws sets the handshake headers itself.
              const headers: Record<string, unknown> = {}
              for (const name of ['cookie', 'authorization', 'origin', 'user-agent', 'accept-language']) {
                const value = request.headers[name]
                if (value !== undefined) headers[name] = value
              }
              return upstreamHeaders(request, headers)
            },
          },
        }
      : {}),
    replyOptions: {
      rewriteRequestHeaders: (request: FastifyRequest, headers: Record<string, unknown>) =>
        upstreamHeaders(request, headers) as never,
      rewriteHeaders: (upstream: Record<string, unknown>, request: FastifyRequest) => {
        const headers = responseHeadersFor(route, upstream)
        // Draining: an HTTP/1.1 connection ends after its current response (HTTP/2 sessions get GOAWAY; requests that
        // arrive during the close get Fastify's 503 with Connection: close). A flag read, no per-request hook.
        if (draining() && request.raw.httpVersionMajor === 1) headers['connection'] = 'close'
        return headers as never
      },
      onError: onError as never,
    },
  } as never)
}
