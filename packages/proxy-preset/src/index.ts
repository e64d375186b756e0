// Entry point: createProxy() builds the edge proxy from options (HTTPS app with routes, certificates from ACME and/or
// files, the port-80 app, health, graceful close) without listening; startProxy() also listens and handles signals.
import type { AddressInfo } from 'node:net'
import type { Server as TlsServer } from 'node:tls'
import { CertResolver, type FastifyAcme, fastifyAcme } from '@autotls/fastify-acme'
import type { FastifyInstance } from 'fastify'
import { type CertificatePlan, planCertificates } from './certificates.js'
import { registerHealth } from './health.js'
import { ManualCertificates } from './manual-certs.js'
import { type ProxyOptions, type ResolvedListen, type ResolvedProxyOptions, resolveProxyOptions } from './options.js'
import { buildRedirectApp } from './redirect.js'
import { buildSiteTable, registerRoutes } from './routes.js'
import { baseTlsOptions, buildHttpsApp } from './server.js'
import { ConnectionTracker, gracefulClose, onSignals } from './shutdown.js'

export interface ProxyAddresses {
  https: AddressInfo
  http: AddressInfo | undefined
}

/** What createProxy()/startProxy() return. */
export interface ProxyHandle {
  /** The HTTPS Fastify instance: add hooks, plugins, decorators (before listen() for createProxy). */
  readonly app: FastifyInstance
  /** The plain-HTTP instance (redirects, HTTP-01), or undefined with `http: false`. */
  readonly redirectApp: FastifyInstance | undefined
  /** fastify-acme's decorator when some names are managed over ACME, else undefined. */
  readonly acme: FastifyAcme | undefined
  /** The manual certificate files and their reload state, when any are configured. */
  readonly certificates: ManualCertificates | undefined
  /** The SNI resolver shared by ACME and manual certificates. */
  readonly resolver: CertResolver
  /** Which names are served from where. */
  readonly plan: CertificatePlan
  readonly options: ResolvedProxyOptions
  /** Listens on the HTTP listener (if any), then the HTTPS one, and starts watching certificate files. */
  listen(): Promise<ProxyAddresses>
  addresses(): ProxyAddresses
  /** Graceful close: stop accepting, finish in-flight requests within shutdown.graceMs, close. Idempotent. */
  close(): Promise<void>
}

async function listenOn(app: FastifyInstance, where: ResolvedListen): Promise<void> {
  try {
    await app.listen({ host: where.host, port: where.port })
  } catch (err) {
    const code = (err as { code?: string }).code
    // '::' (the default) fails where IPv6 is disabled; IPv4 everywhere is the closest meaning.
    if (where.host === '::' && (code === 'EAFNOSUPPORT' || code === 'EADDRNOTAVAIL')) {
      await app.listen({ host: '0.0.0.0', port: where.port })
      return
    }
    throw err
  }
}

function addressOf(app: FastifyInstance): AddressInfo {
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('server is not listening on a TCP port')
  return address
}

/** Builds the proxy without listening. Throws FPROXY_* (or FACME_*) errors for unusable options or certificates. */
export async function createProxy(options: ProxyOptions): Promise<ProxyHandle> {
  const resolved = resolveProxyOptions(options)
  const sites = buildSiteTable(resolved.routes)
  const resolver = new CertResolver()
  const app = buildHttpsApp(resolved, resolver, sites)
  const tracker = new ConnectionTracker()
  tracker.track(app.server)
  let draining = false
  let certificates: ManualCertificates | undefined
  let redirectApp: FastifyInstance | undefined
  try {
    if (resolved.certificates.length > 0 || resolved.defaultCertificate) {
      const tlsBase = baseTlsOptions(resolved.limits)
      certificates = new ManualCertificates({
        sources: resolved.certificates,
        defaultSource: resolved.defaultCertificate,
        resolver,
        log: app.log.child({ component: 'certificates' }),
        debounceMs: resolved.reload.debounceMs,
        pollIntervalMs: resolved.reload.pollIntervalMs,
        // Clients without SNI get the server's own context, which must follow the default certificate too.
        onDefault: (pair) =>
          (app.server as unknown as TlsServer).setSecureContext({ ...tlsBase, key: pair.key, cert: pair.cert }),
      })
      await certificates.load()
    }
    const plan = planCertificates(resolved, certificates ?? { hosts: () => [] })

    let acme: FastifyAcme | undefined
    if (plan.acmeNames.length > 0 && resolved.acme) {
      const { names: _names, ...acmeOptions } = resolved.acme
      const challenges =
        acmeOptions.challenges ??
        (resolved.http?.acmeChallenges ? ['tls-alpn-01' as const, 'http-01' as const] : ['tls-alpn-01' as const])
      await app.register(fastifyAcme, { ...acmeOptions, names: plan.acmeNames, challenges })
      acme = app.acme
    }

    const healthState = {
      draining: () => draining,
      sites: sites.size,
      certificates: () => {
        const statuses = acme?.statuses() ?? []
        return {
          acme: statuses.length,
          acmeValid: statuses.filter((s) => s.state === 'valid').length,
          manual: certificates?.status().length ?? 0,
        }
      },
    }
    if (resolved.health) registerHealth(app, resolved.health, healthState)
    const { dispatchers } = registerRoutes(app, {
      sites,
      options: resolved,
      trusted: resolved.trustedProxies,
      draining: () => draining,
    })
    app.addHook('onClose', async () => {
      await Promise.all(dispatchers.map((d) => d.close().catch(() => d.destroy())))
    })

    if (resolved.http) {
      const acmeNames = new Set(plan.acmeNames)
      redirectApp = await buildRedirectApp({
        options: resolved.http,
        health: resolved.health,
        healthState,
        limits: resolved.limits,
        knows: (host) => sites.get(host) !== undefined || acmeNames.has(host),
        acme,
        log: app.log.child({ listener: 'http' }),
      })
      tracker.track(redirectApp.server)
    }

    let closing: Promise<void> | undefined
    const http = redirectApp
    const proxy: ProxyHandle = {
      app,
      redirectApp: http,
      acme,
      certificates,
      resolver,
      plan,
      options: resolved,
      async listen() {
        if (http) await listenOn(http, resolved.http!)
        try {
          await listenOn(app, resolved.https)
        } catch (err) {
          await http?.close()
          throw err
        }
        certificates?.start()
        const addresses = proxy.addresses()
        app.log.info(
          { https: addresses.https.port, http: addresses.http?.port, sites: sites.size, acme: plan.acmeNames },
          'proxy listening',
        )
        return addresses
      },
      addresses() {
        return { https: addressOf(app), http: http?.server.listening ? addressOf(http) : undefined }
      },
      close() {
        closing ??= gracefulClose({
          graceMs: resolved.shutdown.graceMs,
          log: app.log,
          tracker,
          servers: [app.server, ...(http ? [http.server] : [])] as never,
          // Upstream requests still waiting would hold the app's onClose (pool close waits for them).
          onForce: () => {
            for (const d of dispatchers) void d.destroy().catch(() => {})
          },
          close: async () => {
            draining = true
            try {
              await Promise.all([app.close(), http?.close()])
            } finally {
              await certificates?.close()
            }
          },
        })
        return closing
      },
    }
    return proxy
  } catch (err) {
    await certificates?.close()
    await redirectApp?.close()
    await app.close()
    throw err
  }
}

/**
 * Builds, starts and returns the proxy; SIGINT/SIGTERM (configurable) start a graceful shutdown, after which the
 * process exits (unless `shutdown.exit` is false).
 */
export async function startProxy(options: ProxyOptions): Promise<ProxyHandle> {
  const proxy = await createProxy(options)
  await proxy.listen()
  const { signals, exit } = proxy.options.shutdown
  const uninstall = onSignals(signals, proxy.app.log, async () => {
    try {
      await proxy.close()
    } catch (err) {
      proxy.app.log.error({ err }, 'error while closing')
      process.exitCode = 1
    }
    uninstall()
    if (exit) process.exit()
  })
  const close = proxy.close
  return Object.assign(proxy, {
    close: async () => {
      uninstall()
      await close()
    },
  })
}

export { type CertificatePlan, planCertificates } from './certificates.js'
export * from './errors.js'
export {
  compileTrust,
  FORWARDING_HEADERS,
  type TrustFunction,
  upstreamRequestHeaders,
} from './forwarded.js'
export { endToEndCopy, HOP_BY_HOP, stripHopByHop } from './headers.js'
export { HostTable, parseRouteHost, requestHost, wildcardOf } from './hosts.js'
export {
  type ManualCertificateEvents,
  type ManualCertificateStatus,
  ManualCertificates,
  validatePair,
} from './manual-certs.js'
export {
  DEFAULT_BODY_BYTES,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_HEADER_BYTES,
  DEFAULT_HEADERS_TIMEOUT_MS,
  DEFAULT_HEALTH_PATH,
  DEFAULT_HTTP_PORT,
  DEFAULT_HTTP2_SESSION_TIMEOUT_MS,
  DEFAULT_HTTPS_PORT,
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_KEEP_ALIVE_TIMEOUT_MS,
  DEFAULT_LISTEN_HOST,
  DEFAULT_RELOAD_DEBOUNCE_MS,
  DEFAULT_RELOAD_POLL_MS,
  DEFAULT_REQUEST_TIMEOUT_MS,
  DEFAULT_RESPONSE_TIMEOUT_MS,
  DEFAULT_SHUTDOWN_GRACE_MS,
  DEFAULT_SHUTDOWN_SIGNALS,
  type ProxyOptions,
  type ProxyOptionsData,
  ProxyOptionsSchema,
  type ResolvedProxyOptions,
  type ResolvedRoute,
  type RouteOptions,
  RouteSchema,
  resolveProxyOptions,
} from './options.js'
export { httpsLocation } from './redirect.js'
export { pathProblem, VHOST_PREFIX } from './routes.js'
