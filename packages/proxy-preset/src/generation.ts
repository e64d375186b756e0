// A routing generation: the routes of one configuration, compiled into their own Fastify instance that never
// listens. The HTTPS listener hands each request for a configured host to the current generation's handler (one
// Map lookup, the host dispatch of routes.ts). A reload builds the next generation beside the running one and swaps
// one reference: requests already inside the old generation finish there (its upstream pools close gracefully once
// they are done), new requests go to the new one, and no connection is touched.
import { EventEmitter } from 'node:events'
import type { IncomingMessage } from 'node:http'
import type { FastifyBaseLogger, FastifyInstance, FastifyServerOptions } from 'fastify'
import Fastify from 'fastify'
import type { Dispatcher } from 'undici'
import { createFastPath } from './fast-path.js'
import type { HostTable } from './hosts.js'
import type { ResolvedProxyOptions } from './options.js'
import type { ResolvedRoute } from './route-options.js'
import {
  buildSiteTable,
  createRewriteUrl,
  type RoutingDeps,
  registerRoutes,
  type Site,
  vhostConstraint,
} from './routes.js'
import { ProxyLogController, type RequestHandler } from './server.js'
import type { UpstreamSet } from './upstreams.js'

/** What a generation's app sees as its server: never listens; the real listener forwards 'upgrade' to it. */
class DetachedServer extends EventEmitter {
  readonly listening = false
  address(): null {
    return null
  }
  close(callback?: (err?: Error) => void): this {
    callback?.()
    return this
  }
  setTimeout(): this {
    return this
  }
}

export interface Generation {
  readonly id: number
  readonly options: ResolvedProxyOptions
  readonly sites: HostTable<Site>
  readonly app: FastifyInstance
  /** The routing app's request handler. */
  readonly handler: RequestHandler
  /** The fast path (fast-path.ts): true when it took the request, false when it goes to `handler`. */
  readonly fast: (req: IncomingMessage, res: import('node:http').ServerResponse, site: Site) => boolean
  /** True when some route proxies websockets (the listener forwards upgrades then). */
  readonly websocket: boolean
  /** Emits the listener's 'upgrade' events to the routing app. */
  upgrade(req: IncomingMessage, socket: unknown, head: Buffer): void
  /** Upstream state of routes with several upstreams or a health check, by route label. */
  readonly upstreamSets: ReadonlyMap<string, UpstreamSet>
  /** An upstream's health as this generation sees it (always up without health checks or several upstreams). */
  health(route: string, upstream: string): { healthy: boolean; checked: boolean; lastError?: string }
  /** Aborts upstream requests still running (end of a shutdown's grace period). */
  destroy(): void
  /** Closes the routing app: upstream pools close once their requests are done. */
  close(): Promise<void>
}

export interface GenerationDeps {
  log: FastifyBaseLogger
  trusted: RoutingDeps['trusted']
  draining: () => boolean
  /** Hosts the `*` route takes: those with an on-demand certificate. */
  acceptOnDemand?: (host: string) => boolean
  /** The generation being replaced: upstreams that stay keep their health state. */
  previous?: Generation | undefined
  /** Hooks added to every generation's app (metrics, access log), only when those features are on. */
  decorate?: (app: FastifyInstance, generation: { id: number; options: ResolvedProxyOptions }) => void
  /** False when per-request hooks (metrics, access log) need every request in the routing app. */
  fastPath?: boolean
}

export async function buildGeneration(
  id: number,
  options: ResolvedProxyOptions,
  deps: GenerationDeps,
): Promise<Generation> {
  const sites = buildSiteTable(options.routes, deps.acceptOnDemand)
  const server = new DetachedServer()
  let handler: RequestHandler | undefined
  const app = Fastify({
    loggerInstance: deps.log,
    http2: options.https.http2,
    serverFactory: (h: RequestHandler) => {
      handler = h
      return server
    },
    bodyLimit: options.limits.bodyBytes,
    rewriteUrl: createRewriteUrl(sites),
    routerOptions: { constraints: { vhost: vhostConstraint as never } },
    requestIdHeader: false,
    logController: new ProxyLogController(),
  } as unknown as FastifyServerOptions) as unknown as FastifyInstance
  deps.decorate?.(app, { id, options })
  let dispatchers: Dispatcher[] = []
  let upstreamSets = new Map<string, UpstreamSet>()
  let agents = new Map<ResolvedRoute, Dispatcher>()
  try {
    ;({ dispatchers, upstreamSets, agents } = registerRoutes(app, {
      sites,
      options,
      trusted: deps.trusted,
      draining: deps.draining,
    }))
    app.addHook('onClose', async () => {
      await Promise.all(dispatchers.map((d) => d.close().catch(() => d.destroy())))
    })
    await app.ready()
    // Routes are registered (and their upstream sets made) while the app gets ready.
    for (const [label, set] of upstreamSets) {
      const old = deps.previous?.upstreamSets.get(label)
      if (old !== undefined) set.inherit(old)
    }
  } catch (err) {
    await Promise.all(dispatchers.map((d) => d.destroy().catch(() => {})))
    await app.close().catch(() => {})
    throw err
  }
  let closing: Promise<void> | undefined
  return {
    id,
    options,
    sites,
    app,
    handler: handler!,
    // No qualifying route (or hooks that need every request): nothing to check per request.
    fast:
      deps.fastPath === false || agents.size === 0
        ? () => false
        : createFastPath({
            log: deps.log,
            trusted: deps.trusted,
            draining: deps.draining,
            headerBytes: options.limits.headerBytes,
            agents,
          }),
    websocket: options.routes.some((r) => r.websocket),
    upgrade: (req, socket, head) => {
      if (server.listenerCount('upgrade') > 0) server.emit('upgrade', req, socket, head)
    },
    upstreamSets,
    health: (route, upstream) => upstreamSets.get(route)?.health(upstream) ?? { healthy: true, checked: false },
    destroy: () => {
      for (const d of dispatchers) void d.destroy().catch(() => {})
    },
    close: () => {
      closing ??= app.close()
      return closing
    },
  }
}
