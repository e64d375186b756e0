// Entry point: createProxy() builds the edge proxy from options (HTTPS app with routes, certificates from ACME and/or
// files, the port-80 app, health, admin, graceful close) without listening; startProxy() also listens and handles
// signals. proxy.reload() applies a new configuration while running (routes, upstreams, certificate files; the
// applying is live-reload.ts).
import { watch as watchFs } from 'node:fs'
import { ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { basename, dirname } from 'node:path'
import type { Server as TlsServer } from 'node:tls'
import { CertResolver, type FastifyAcme, fastifyAcme } from '@autotls/fastify-acme'
import type { FastifyInstance } from 'fastify'
import { registerAccessLog } from './access-log.js'
import { type AdminServer, type StatusJson, startAdmin, statusJson } from './admin.js'
import { type CertificatePlan, planCertificates } from './certificates.js'
import { buildGeneration, type Generation } from './generation.js'
import { registerHealth } from './health.js'
import { listenError } from './listen-error.js'
import { createReloader, type LiveState } from './live-reload.js'
import { ManualCertificates } from './manual-certs.js'
import { ProxyMetrics } from './metrics.js'
import { type ProxyOptions, type ResolvedListen, type ResolvedProxyOptions, resolveProxyOptions } from './options.js'
import { buildRedirectApp } from './redirect.js'
import type { ReloadResult } from './reload.js'
import { dispatchSite, registerHttp2HeaderLimit, registerNotFound } from './routes.js'
import { baseTlsOptions, buildHttpsApp } from './server.js'
import { ConnectionTracker, gracefulClose, onSignals } from './shutdown.js'

export { listenError } from './listen-error.js'
export type { ReloadResult } from './reload.js'

export interface ProxyAddresses {
  https: AddressInfo
  http: AddressInfo | undefined
}

/** How a running proxy finds its next configuration (the CLI passes its file). Not needed for proxy.reload(options). */
export interface ProxyRuntime {
  /** Reads the configuration again: for reloads on `reloadSignal`, on a change of `watchFile`, and from the admin. */
  reloadSource?: () => Promise<{ options: ProxyOptions; describeError?: (err: unknown) => string }>
  /** A signal that reloads from reloadSource (startProxy only), e.g. 'SIGHUP'. */
  reloadSignal?: NodeJS.Signals
  /** A file whose changes reload from reloadSource (startProxy only). */
  watchFile?: string
  /**
   * False: with `admin` configured, collect metrics and status but do not listen on the admin port (a worker under
   * `workers`, whose primary listens and asks every worker). Default true.
   */
  adminListener?: boolean
}

const WATCH_DEBOUNCE_MS = 200

async function listenOn(app: FastifyInstance, where: ResolvedListen, listener: string): Promise<void> {
  // Fastify cannot tell that a serverFactory server speaks TLS: its start line would say http:// for the HTTPS one.
  const listenTextResolver = (address: string) =>
    `Server listening at ${listener === 'https' ? address.replace(/^http:/, 'https:') : address}`
  try {
    try {
      await app.listen({ host: where.host, port: where.port, listenTextResolver })
    } catch (err) {
      const code = (err as { code?: string }).code
      // '::' (the default) fails where IPv6 is disabled; IPv4 everywhere is the closest meaning.
      if (where.host === '::' && (code === 'EAFNOSUPPORT' || code === 'EADDRNOTAVAIL')) {
        await app.listen({ host: '0.0.0.0', port: where.port, listenTextResolver })
        return
      }
      throw err
    }
  } catch (err) {
    throw listenError(err, where, listener)
  }
}

function addressOf(app: FastifyInstance): AddressInfo {
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('server is not listening on a TCP port')
  return address
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
  /** The running configuration (changes with each applied reload). */
  readonly options: ResolvedProxyOptions
  /** The configuration generation: 1 at start, +1 per applied reload. */
  readonly generation: number
  /** The metrics registry (prom-client), when the admin listener is on. */
  readonly metrics: ProxyMetrics | undefined
  /** Listens on the HTTP listener (if any), then the HTTPS one (and admin), and starts watching certificate files. */
  listen(): Promise<ProxyAddresses>
  addresses(): ProxyAddresses
  /** The admin listener's address, when it is on and listening. */
  adminAddress(): AddressInfo | undefined
  /** What the admin's GET /status answers: certificates, routes and upstream health, generation, draining. */
  status(): StatusJson
  /**
   * Applies a new configuration without dropping a request: routes, upstreams, certificate files, trusted proxies,
   * access log, body limit. Listener options (ports, limits, ACME account, admin) need a restart: they are kept and
   * listed in `ignored`. An invalid configuration is refused (`applied: false`, `errors`) and the running one kept.
   * Reloads run one at a time.
   */
  reload(options: ProxyOptions): Promise<ReloadResult>
  /** Resolves once every generation replaced by a reload has closed (its last upstream requests done). */
  settled(): Promise<void>
  /** Reloads from the runtime's reloadSource (what SIGHUP, a file change and the admin's POST /reload do). */
  reloadFromSource(): Promise<ReloadResult>
  /** Graceful close: stop accepting, finish in-flight requests within shutdown.graceMs, close. Idempotent. */
  close(): Promise<void>
}

/** Builds the proxy without listening. Throws FPROXY_* (or FACME_*) errors for unusable options or certificates. */
export async function createProxy(options: ProxyOptions, runtime: ProxyRuntime = {}): Promise<ProxyHandle> {
  const initial = resolveProxyOptions(options)
  const resolver = new CertResolver()
  // What a reload replaces (live-reload.ts); everything below reads it from here. The plan is made once the
  // certificate files are loaded.
  const live: LiveState = {
    active: initial,
    current: undefined,
    certificates: undefined,
    plan: { acmeNames: [], manualHosts: [] },
  }
  const retiring = new Map<Generation, Promise<void>>()
  // The host dispatch of every request: configured hosts go to the current routing generation, the rest (health,
  // routes added to `app`, unknown hosts) to the listener's own app.
  const front = (
    req: Parameters<Generation['handler']>[0],
    res: Parameters<Generation['handler']>[1],
    main: Generation['handler'],
  ) => {
    const gen = live.current!
    const site = dispatchSite(req, gen.sites, initial.health)
    if (site === undefined) main(req, res)
    else if (!gen.fast(req, res as never, site)) gen.handler(req, res)
  }
  const app = buildHttpsApp(initial, resolver, front)
  const tracker = new ConnectionTracker()
  tracker.track(app.server)
  let draining = false
  let redirectApp: FastifyInstance | undefined
  let admin: AdminServer | undefined
  const metrics = initial.admin ? new ProxyMetrics() : undefined
  const log = app.log
  let generationId = 0
  let acceptOnDemand: (host: string) => boolean = () => false
  const buildNext = (opts: ResolvedProxyOptions) =>
    buildGeneration(++generationId, opts, {
      log,
      acceptOnDemand: (host) => acceptOnDemand(host),
      trusted: opts.trustedProxies,
      draining: () => draining,
      previous: live.current,
      fastPath: metrics === undefined && !opts.accessLog,
      decorate: (genApp, gen) => {
        metrics?.instrument(genApp)
        if (gen.options.accessLog) registerAccessLog(genApp, log)
      },
    })

  // Upgrades (websockets) go to the generation when it proxies websockets; otherwise they are answered as ordinary
  // requests (400 for a route without websockets, 421 for unknown hosts). Listened to only while needed: without an
  // 'upgrade' listener Node treats an upgrade request as an ordinary request on a kept connection.
  const onUpgrade = (req: import('node:http').IncomingMessage, socket: import('node:net').Socket, head: Buffer) => {
    const gen = live.current!
    if (gen.websocket && dispatchSite(req, gen.sites, initial.health) !== undefined) {
      gen.upgrade(req, socket, head)
      return
    }
    const res = new ServerResponse(req)
    res.assignSocket(socket)
    res.on('finish', () => socket.destroy())
    front(req, res, app.routing as unknown as Generation['handler'])
  }
  let upgrading = false
  const syncUpgrade = () => {
    const want = live.current?.websocket ?? false
    if (want && !upgrading) app.server.on('upgrade', onUpgrade)
    if (!want && upgrading) app.server.off('upgrade', onUpgrade)
    upgrading = want
  }

  const loadCertificates = async (
    opts: ResolvedProxyOptions,
    into: CertResolver,
  ): Promise<ManualCertificates | undefined> => {
    if (opts.certificates.length === 0 && !opts.defaultCertificate) return undefined
    const tlsBase = baseTlsOptions(initial.limits)
    const loaded = new ManualCertificates({
      sources: opts.certificates,
      defaultSource: opts.defaultCertificate,
      resolver: into,
      log: log.child({ component: 'certificates' }),
      debounceMs: opts.reload.debounceMs,
      pollIntervalMs: opts.reload.pollIntervalMs,
      // Clients without SNI get the server's own context, which must follow the default certificate too.
      onDefault:
        into === resolver
          ? (pair) =>
              (app.server as unknown as TlsServer).setSecureContext({ ...tlsBase, key: pair.key, cert: pair.cert })
          : undefined,
    })
    try {
      await loaded.load()
    } catch (err) {
      await loaded.close()
      throw err
    }
    return loaded
  }

  try {
    live.certificates = await loadCertificates(initial, resolver)
    live.plan = planCertificates(initial, live.certificates ?? { hosts: () => [] })

    let acme: FastifyAcme | undefined
    if ((live.plan.acmeNames.length > 0 || initial.acme?.onDemand) && initial.acme) {
      const { names: _names, ...acmeOptions } = initial.acme
      // TLS-ALPN-01 on the proxy's port, HTTP-01 on port 80 when it answers them, DNS-01 with a provider (wildcards).
      const challenges = acmeOptions.challenges ?? [
        'tls-alpn-01' as const,
        ...(initial.http?.acmeChallenges ? ['http-01' as const] : []),
        ...(acmeOptions.dns01 ? ['dns-01' as const] : []),
      ]
      await app.register(fastifyAcme, { ...acmeOptions, names: live.plan.acmeNames, challenges })
      acme = app.acme
    }
    const acmeNames = new Set(live.plan.acmeNames)
    // The `*` route takes the hosts fastify-acme serves on demand (a name it manages and no route names).
    acceptOnDemand = (host) => acme?.status(host) !== undefined

    const healthState = {
      draining: () => draining,
      sites: () => live.current?.sites.size ?? 0,
      certificates: () => {
        const statuses = acme?.statuses() ?? []
        return {
          acme: statuses.length,
          acmeValid: statuses.filter((s) => s.state === 'valid').length,
          manual: live.certificates?.status().length ?? 0,
        }
      },
    }
    if (initial.health) registerHealth(app, initial.health, healthState)
    registerHttp2HeaderLimit(app, initial)
    // Requests that did not come through the listener (app.inject()) are dispatched here instead.
    registerNotFound(app, (req) => {
      const gen = live.current!
      return dispatchSite(req, gen.sites, initial.health) === undefined ? undefined : (gen.handler as never)
    })
    live.current = await buildNext(initial)
    syncUpgrade()

    if (initial.http) {
      redirectApp = await buildRedirectApp({
        options: initial.http,
        health: initial.health,
        healthState,
        limits: initial.limits,
        knows: (host) => live.current!.sites.get(host) !== undefined || acmeNames.has(host) || acceptOnDemand(host),
        acme,
        log: app.log.child({ listener: 'http' }),
      })
      tracker.track(redirectApp.server)
    }

    const { reload, reloadFromSource } = createReloader({
      live,
      acmeNames,
      retiring,
      app,
      resolver,
      acme,
      metrics,
      log,
      draining: () => draining,
      reloadSource: runtime.reloadSource,
      loadCertificates,
      buildNext,
      syncUpgrade,
    })

    let closing: Promise<void> | undefined
    const http = redirectApp
    const currentStatus = (): StatusJson =>
      statusJson({
        draining,
        generation: live.current!.id,
        options: live.active,
        acme,
        certificates: live.certificates,
        upstreamHealth: (route, upstream) => live.current!.health(route, upstream),
      })
    if (initial.admin) {
      metrics!.attach({
        acme: () => acme,
        certificates: () => live.certificates,
        resolver,
        upstreamHealth: () =>
          live.active.routes.flatMap((r) =>
            r.upstreams.map((upstream) => ({
              route: r.label,
              upstream,
              healthy: live.current!.health(r.label, upstream).healthy,
            })),
          ),
      })
      if (runtime.adminListener !== false) {
        admin = await startAdmin({
          options: initial.admin,
          log: app.log.child({ listener: 'admin' }),
          metrics: metrics!,
          reload: reloadFromSource,
          status: currentStatus,
        })
      }
    }
    const proxy: ProxyHandle = {
      app,
      redirectApp: http,
      acme,
      get certificates() {
        return live.certificates
      },
      resolver,
      get plan() {
        return live.plan
      },
      get options() {
        return live.active
      },
      get generation() {
        return live.current!.id
      },
      metrics,
      async listen() {
        if (http) await listenOn(http, initial.http!, 'http')
        try {
          await listenOn(app, initial.https, 'https')
          if (admin) await admin.listen()
        } catch (err) {
          await http?.close()
          await app.close()
          throw err
        }
        live.certificates?.start()
        const addresses = proxy.addresses()
        app.log.info(
          {
            https: addresses.https.port,
            http: addresses.http?.port,
            sites: live.current!.sites.size,
            acme: live.plan.acmeNames,
          },
          'proxy listening',
        )
        return addresses
      },
      addresses() {
        return { https: addressOf(app), http: http?.server.listening ? addressOf(http) : undefined }
      },
      adminAddress: () => admin?.address(),
      status: currentStatus,
      reload: (input) => reload(input),
      reloadFromSource,
      settled: async () => {
        await Promise.all(retiring.values())
      },
      close() {
        closing ??= gracefulClose({
          graceMs: initial.shutdown.graceMs,
          log: app.log,
          tracker,
          servers: [app.server, ...(http ? [http.server] : [])] as never,
          // Upstream requests still waiting would hold the generations' onClose (pool close waits for them).
          onForce: () => {
            for (const gen of [live.current!, ...retiring.keys()]) gen.destroy()
          },
          close: async () => {
            draining = true
            try {
              await Promise.all([app.close(), http?.close(), admin?.close()])
              await Promise.all([live.current!, ...retiring.keys()].map((gen) => gen.close()))
            } finally {
              metrics?.detach()
              await live.certificates?.close()
            }
          },
        })
        return closing
      },
    }
    return proxy
  } catch (err) {
    await live.certificates?.close()
    await redirectApp?.close()
    await admin?.close()
    await live.current?.close()
    await app.close()
    throw err
  }
}

/**
 * Builds, starts and returns the proxy; SIGINT/SIGTERM (configurable) start a graceful shutdown, after which the
 * process exits (unless `shutdown.exit` is false). With a runtime, `reloadSignal` and changes of `watchFile` reload.
 */
export async function startProxy(options: ProxyOptions, runtime: ProxyRuntime = {}): Promise<ProxyHandle> {
  const proxy = await createProxy(options, runtime)
  await proxy.listen()
  const { signals, exit } = proxy.options.shutdown
  const log = proxy.app.log
  const cleanups: Array<() => void> = []
  if (runtime.reloadSignal) {
    const signal = runtime.reloadSignal
    const onReload = () => {
      log.info({ signal }, 'reloading the configuration')
      void proxy.reloadFromSource()
    }
    process.on(signal, onReload)
    cleanups.push(() => process.off(signal, onReload))
  }
  if (runtime.watchFile) {
    const file = runtime.watchFile
    let timer: NodeJS.Timeout | undefined
    // The directory, not the file: editors and deploy tools replace a file by renaming a new one over it.
    const watcher = watchFs(dirname(file), { persistent: false }, (_event, name) => {
      if (name !== null && name.toString() !== basename(file)) return
      clearTimeout(timer)
      timer = setTimeout(() => {
        log.info({ file }, 'configuration file changed: reloading')
        void proxy.reloadFromSource()
      }, WATCH_DEBOUNCE_MS)
    })
    watcher.on('error', (err) => log.warn({ err, file }, 'watching the configuration file failed'))
    cleanups.push(() => {
      clearTimeout(timer)
      watcher.close()
    })
  }
  const uninstall = onSignals(signals, log, async () => {
    for (const cleanup of cleanups) cleanup()
    try {
      await proxy.close()
    } catch (err) {
      log.error({ err }, 'error while closing')
      process.exitCode = 1
    }
    uninstall()
    if (exit) process.exit()
  })
  const close = proxy.close
  return Object.assign(proxy, {
    close: async () => {
      for (const cleanup of cleanups) cleanup()
      uninstall()
      await close()
    },
  })
}

// The public surface: what a preset user needs, including fastify-acme's storages, types and error classes, so one
// package is enough to install. Helpers for tests and the benchmark live behind `@autotls/proxy-preset/internal`.
export {
  type AcmeEventName,
  type AcmeEvents,
  type CaFacts,
  type CertificateInfo,
  type CertResolver,
  type DnsProvider,
  ExecProvider,
  type FastifyAcme,
  type FastifyAcmeOptions,
  FileStorage,
  type KeyCertPair,
  type Lease,
  type LockOptions,
  MemoryStorage,
  type NameState,
  type NameStatus,
  type OrderReason,
  Rfc2136Provider,
  type Storage,
} from '@autotls/fastify-acme'
// fastify-acme's error classes (codes FACME_*), as one namespace: their names overlap this package's FPROXY_* ones.
export * as acmeErrors from '@autotls/fastify-acme/errors'
export type { StatusJson } from './admin.js'
export type { CertificatePlan } from './certificates.js'
export * from './errors.js'
export type { ManualCertificateEvents, ManualCertificateStatus, ManualCertificates } from './manual-certs.js'
export {
  DEFAULT_BODY_BYTES,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_HEADER_BYTES,
  DEFAULT_HEADERS_TIMEOUT_MS,
  DEFAULT_HEALTH_PATH,
  DEFAULT_HTTP_PORT,
  DEFAULT_HTTP2_SESSION_TIMEOUT_MS,
  DEFAULT_HTTPS_PORT,
  DEFAULT_KEEP_ALIVE_TIMEOUT_MS,
  DEFAULT_LISTEN_HOST,
  DEFAULT_RELOAD_DEBOUNCE_MS,
  DEFAULT_RELOAD_POLL_MS,
  DEFAULT_REQUEST_TIMEOUT_MS,
  DEFAULT_SHUTDOWN_GRACE_MS,
  DEFAULT_SHUTDOWN_SIGNALS,
  type ProxyOptions,
  type ProxyOptionsData,
  ProxyOptionsSchema,
  type ResolvedProxyOptions,
} from './options.js'
export {
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_EJECT_MS,
  DEFAULT_HEALTH_CHECK_INTERVAL_MS,
  DEFAULT_HEALTH_CHECK_PATH,
  DEFAULT_HEALTH_CHECK_TIMEOUT_MS,
  DEFAULT_HEALTHY_THRESHOLD,
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_RESPONSE_TIMEOUT_MS,
  DEFAULT_UNHEALTHY_THRESHOLD,
  type ResolvedRoute,
  type RouteOptions,
  RouteSchema,
} from './route-options.js'
