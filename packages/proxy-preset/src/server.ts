// The HTTPS app: Fastify on fastify-acme's server factory (TLS with an SNI resolver, TLS-ALPN-01 on the same port,
// HTTP/2 with HTTP/1.1 fallback by default), with the request limits and timeouts applied to the server itself.
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { TLSSocket, TlsOptions } from 'node:tls'
import { acmeServerFactory, type CertResolver } from '@autotls/fastify-acme'
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifyServerOptions,
  LogController,
} from 'fastify'
import type { ProxyOptions, ResolvedProxyOptions } from './options.js'

type Limits = ResolvedProxyOptions['limits']

/** Node checks headers/request timeouts on an interval; keep it fine enough for the configured timeouts. */
function checkingInterval(limits: Limits): number {
  const shortest = Math.min(...[limits.headersTimeoutMs, limits.requestTimeoutMs].filter((ms) => ms > 0), 30_000)
  return Math.max(100, Math.min(30_000, Math.floor(shortest / 2)))
}

/**
 * Header size and slow-client timeouts on an http/https server, or on an HTTP/2 server for its HTTP/1.1 fallback
 * connections (Node reads these from the server object for every HTTP/1.1 connection).
 */
export function applyHttpLimits(server: unknown, limits: Limits): void {
  const s = server as Record<string, unknown>
  s['maxHeaderSize'] = limits.headerBytes
  s['requestTimeout'] = limits.requestTimeoutMs
  s['headersTimeout'] =
    limits.requestTimeoutMs > 0 ? Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs) : limits.headersTimeoutMs
  s['keepAliveTimeout'] = limits.keepAliveTimeoutMs
  s['connectionsCheckingInterval'] = checkingInterval(limits)
}

/** TLS options shared by the server factory and every later setSecureContext() (which resets what it is not given). */
export function baseTlsOptions(limits: Limits): TlsOptions {
  return { minVersion: 'TLSv1.2', handshakeTimeout: limits.handshakeTimeoutMs }
}

function loggerOptions(logger: ProxyOptions['logger']): Partial<FastifyServerOptions> & {
  loggerInstance?: FastifyBaseLogger
} {
  if (logger === undefined) return { logger: { level: 'info' } }
  const candidate = logger as Partial<FastifyBaseLogger>
  if (typeof logger === 'object' && logger !== null && typeof candidate.child === 'function') {
    return { loggerInstance: logger as FastifyBaseLogger }
  }
  return { logger: logger as FastifyServerOptions['logger'] }
}

/**
 * Fastify's request logging without its two info lines per request ('incoming request', 'request completed'): an
 * access log on the hot path costs 4-16% of the CPU per proxied request (bench/). routes.ts meant this with
 * http-proxy's `disableRequestLogging`, which http-proxy does not have. Errors are still logged: requests that
 * errored, 5xx from the error handler, stream errors.
 */
export class ProxyLogController extends LogController {
  override incomingRequest(): void {}
  override requestCompleted(
    error: Error | null | undefined,
    request: FastifyRequest,
    reply: FastifyReply,
    metadata?: Record<string, unknown>,
  ): void {
    if (error) super.requestCompleted(error, request, reply, metadata)
  }
}

export type RequestHandler = (req: IncomingMessage, res: ServerResponse) => void

/**
 * How many bytes an HTTP/1.1 client connection buffers before a write reports backpressure (Node's default: 16 KiB).
 * A proxied body arrives from undici in chunks of up to 64 KiB, so at 16 KiB every chunk pauses the upstream body
 * and the next 'drain' resumes it: a pause/resume (two epoll_ctl calls, a stream state change) per chunk.
 * 256 KiB cuts the CPU per proxied MiB by about a fifth (BENCHMARKS.md) for at most 256 KiB more per busy connection.
 * Node's TLS server gives no option for the sockets it accepts, so it is set on the socket's writable state.
 */
export const CLIENT_WRITE_HIGH_WATER_MARK = 256 * 1024

/** Raises the write buffer of each HTTP/1.1 client connection (HTTP/2 sessions buffer in nghttp2 instead). */
export function raiseWriteBuffer(server: { on(event: 'secureConnection', l: (socket: TLSSocket) => void): unknown }) {
  server.on('secureConnection', (socket) => {
    if (socket.alpnProtocol === 'h2') return
    const state = (socket as unknown as { _writableState?: { highWaterMark: number } })._writableState
    if (state !== undefined && state.highWaterMark < CLIENT_WRITE_HIGH_WATER_MARK) {
      state.highWaterMark = CLIENT_WRITE_HIGH_WATER_MARK
    }
  })
}

/**
 * The listener's own app: the TLS server, ACME, health, routes a user adds, and 421 for unknown hosts. Every request
 * first goes through `front`, which hands requests for configured hosts to the current routing generation
 * (generation.ts) and the rest to this app's handler (`main`).
 */
export function buildHttpsApp(
  options: ResolvedProxyOptions,
  resolver: CertResolver,
  front: (req: IncomingMessage, res: ServerResponse, main: RequestHandler) => void,
) {
  const { limits } = options
  const factory = acmeServerFactory({
    resolver,
    tls: {
      ...baseTlsOptions(limits),
      // HTTP/2: a header block larger than this is refused (and advertised in SETTINGS).
      settings: { maxHeaderListSize: limits.headerBytes },
      maxHeaderSize: limits.headerBytes,
    } as TlsOptions,
  })
  const app = Fastify({
    ...loggerOptions(options.logger),
    http2: options.https.http2,
    serverFactory: (main: RequestHandler, opts: never) =>
      (factory as unknown as (h: RequestHandler, o: never) => unknown)((req, res) => front(req, res, main), opts),
    bodyLimit: limits.bodyBytes,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    http2SessionTimeout: limits.http2SessionTimeoutMs,
    return503OnClosing: true,
    // Proxied request ids are not read from clients.
    requestIdHeader: false,
    logController: new ProxyLogController(),
  } as unknown as FastifyServerOptions) as unknown as FastifyInstance
  applyHttpLimits(app.server, limits)
  raiseWriteBuffer(app.server as never)
  return app
}
