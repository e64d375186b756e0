// The supported wiring: acmeServerFactory() gives Fastify a TLS server (HTTPS or HTTP/2 with HTTP/1.1 fallback)
// whose certificates come from a CertResolver and whose TLS port answers TLS-ALPN-01. The plugin finds the
// resolver of the server it is registered on through a WeakMap, so a server made any other way is detected at boot.

import { createSecureServer, type Http2SecureServer, type Http2Server, type Http2Session } from 'node:http2'
import { createServer as createHttpsServer } from 'node:https'
import type { TlsOptions, Server as TlsServer } from 'node:tls'
import type { FastifyServerFactory, RawServerBase, RawServerDefault } from 'fastify'
import { DEFAULT_PEEK_TIMEOUT_MS, installTlsAlpnResponder, type TlsAlpnResponder } from './challenge-tls-alpn.js'
import { CertResolver, type KeyCertPair } from './resolver.js'

export interface AcmeServerOptions {
  /** A resolver to share (e.g. between the plugin and a manual-certificate loader); default: a new one. */
  resolver?: CertResolver
  /** Served to clients without SNI and for names we do not manage. Without it, such handshakes fail. */
  defaultCertificate?: KeyCertPair
  /** How long the ClientHello peek waits (only while a TLS-ALPN-01 challenge is pending). Default 10 s. */
  peekTimeoutMs?: number
  /**
   * HTTP/2 with HTTP/1.1 fallback. Default: Fastify's own `http2` option. Set it here too when you use TypeScript,
   * so the instance gets HTTP/2 request types: `Fastify({ http2: true, serverFactory: acmeServerFactory({ http2: true }) })`.
   */
  http2?: boolean
  /** Extra TLS options (ciphers, minVersion, ...). `SNICallback`, `key` and `cert` are ours and are ignored. */
  tls?: TlsOptions
}

export interface Wiring {
  resolver: CertResolver
  responder: TlsAlpnResponder
  http2: boolean
  /** Gracefully closes open HTTP/2 sessions (GOAWAY) so server.close() can complete. */
  closeHttp2Sessions(): void
}

export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 30_000

const wirings = new WeakMap<object, Wiring>()

/** The wiring of a server made by acmeServerFactory(), or undefined. */
export function wiringOf(server: unknown): Wiring | undefined {
  return typeof server === 'object' && server !== null ? wirings.get(server) : undefined
}

/**
 * A Fastify `serverFactory`: `Fastify({ serverFactory: acmeServerFactory() })` for HTTPS, or
 * `Fastify({ http2: true, serverFactory: acmeServerFactory({ http2: true }) })` for HTTP/2 with HTTP/1.1 fallback.
 */
export function acmeServerFactory(options: AcmeServerOptions & { http2: true }): FastifyServerFactory<Http2Server>
export function acmeServerFactory<Server extends RawServerBase = RawServerDefault>(
  options?: AcmeServerOptions,
): FastifyServerFactory<Server>
export function acmeServerFactory(options: AcmeServerOptions = {}): FastifyServerFactory<RawServerBase> {
  return (handler, fastifyOptions) => {
    const resolver = options.resolver ?? new CertResolver()
    if (options.defaultCertificate) resolver.setFallback(options.defaultCertificate)
    const { SNICallback: _sni, key: _key, cert: _cert, pfx: _pfx, ...extraTls } = options.tls ?? {}
    const tlsOptions: TlsOptions = {
      minVersion: 'TLSv1.2',
      // Node's default is 120 s; a handshake that has not finished in 30 s is a stalled or hostile client.
      handshakeTimeout: DEFAULT_HANDSHAKE_TIMEOUT_MS,
      ...extraTls,
      SNICallback: resolver.sni,
      ...(options.defaultCertificate
        ? { key: options.defaultCertificate.key, cert: options.defaultCertificate.cert }
        : {}),
    }
    const opts = fastifyOptions as {
      http2?: boolean
      http2SessionTimeout?: number
      keepAliveTimeout?: number
      requestTimeout?: number
      connectionTimeout?: number
      maxRequestsPerSocket?: number
    }
    let server: TlsServer
    const sessions = new Set<Http2Session>()
    const useHttp2 = options.http2 ?? opts.http2 === true
    if (useHttp2) {
      const h2 = createSecureServer({ ...tlsOptions, allowHTTP1: true }, handler as never) as Http2SecureServer
      const sessionTimeout = opts.http2SessionTimeout ?? 72_000
      h2.on('session', (session: Http2Session) => {
        sessions.add(session)
        session.once('close', () => sessions.delete(session))
        session.setTimeout(sessionTimeout, () => session.close())
      })
      h2.setTimeout(opts.connectionTimeout ?? 0)
      // HTTP/1.1 fallback connections are served by Node's HTTP/1 code, which reads these from the server object.
      const fallback = h2 as unknown as { keepAliveTimeout: number; requestTimeout: number }
      fallback.keepAliveTimeout = opts.keepAliveTimeout ?? 72_000
      if (opts.requestTimeout && opts.requestTimeout > 0) fallback.requestTimeout = opts.requestTimeout
      server = h2 as unknown as TlsServer
    } else {
      const https = createHttpsServer(tlsOptions, handler as never)
      https.keepAliveTimeout = opts.keepAliveTimeout ?? 72_000
      https.requestTimeout = opts.requestTimeout ?? 0
      https.setTimeout(opts.connectionTimeout ?? 0)
      if (opts.maxRequestsPerSocket && opts.maxRequestsPerSocket > 0)
        https.maxRequestsPerSocket = opts.maxRequestsPerSocket
      server = https
    }
    const responder = installTlsAlpnResponder(server, resolver, options.peekTimeoutMs ?? DEFAULT_PEEK_TIMEOUT_MS)
    wirings.set(server, {
      resolver,
      responder,
      http2: useHttp2,
      closeHttp2Sessions: () => {
        for (const session of sessions) session.close()
      },
    })
    return server as never
  }
}
