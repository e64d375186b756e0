// Prometheus metrics (prom-client, one registry per proxy), created only when the admin listener is on. Figures
// that already exist elsewhere are read when scraped, never copied per event: certificate dates from
// fastify-acme's statuses() and the file certificates' status(), handshake counts from the resolver's and the
// TLS-ALPN-01 responder's counters. Per-request figures (requests by route and status, upstream latency) come from
// two hooks on each routing generation, registered only here.
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { ACME_REQUEST_CHANNEL, type CertResolver, type FastifyAcme } from '@autotls/fastify-acme'
import type { FastifyInstance } from 'fastify'
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { ManualCertificates } from './manual-certs.js'
import type { ResolvedRoute } from './route-options.js'

export interface MetricsSources {
  acme: () => FastifyAcme | undefined
  certificates: () => ManualCertificates | undefined
  resolver: CertResolver
  /** Upstream health per route: label -> upstream -> healthy. */
  upstreamHealth: () => Array<{ route: string; upstream: string; healthy: boolean }>
}

const seconds = (iso: string | undefined): number | undefined => {
  if (!iso) return undefined
  const ms = Date.parse(iso)
  return Number.isFinite(ms) ? ms / 1000 : undefined
}

export class ProxyMetrics {
  readonly registry = new Registry()
  readonly #requests: Counter<'route' | 'status'>
  readonly #upstreamSeconds: Histogram<'route'>
  readonly #reloads: Counter<'result'>
  readonly #orders: Counter<'result'>
  readonly #orderSeconds: Histogram<'result'>
  readonly #acmeRequestSeconds: Histogram<'step' | 'outcome'>
  #sources: MetricsSources | undefined

  constructor() {
    const registers = [this.registry]
    this.#requests = new Counter({
      name: 'autotls_proxy_requests_total',
      help: 'Requests answered by the routing of configured hosts, by route and status code',
      labelNames: ['route', 'status'],
      registers,
    })
    this.#upstreamSeconds = new Histogram({
      name: 'autotls_upstream_response_seconds',
      help: 'Time from the request to the upstream response headers, by route',
      labelNames: ['route'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    })
    this.#reloads = new Counter({
      name: 'autotls_config_reloads_total',
      help: 'Configuration reloads, by result (applied or refused)',
      labelNames: ['result'],
      registers,
    })
    this.#orders = new Counter({
      name: 'autotls_acme_orders_total',
      help: 'ACME orders finished by this process, by result (issued or failed)',
      labelNames: ['result'],
      registers,
    })
    this.#orderSeconds = new Histogram({
      name: 'autotls_acme_order_duration_seconds',
      help: 'Time from an order start to its certificate or failure (all ACME requests of the order)',
      labelNames: ['result'],
      buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers,
    })
    this.#acmeRequestSeconds = new Histogram({
      name: 'autotls_acme_request_duration_seconds',
      help: 'Duration of each request to the ACME CA, by step (new order, finalize, renewal info, ...) and outcome',
      labelNames: ['step', 'outcome'],
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    })
    const self = this
    new Gauge({
      name: 'autotls_certificate_not_after_seconds',
      // With `workers`, the primary merges every worker's: the lowest (the oldest certificate still served, the
      // soonest renewal, an upstream down for any worker).
      aggregator: 'min',
      help: 'Expiry (Unix time) of the certificate served for each name, by source (acme or file)',
      labelNames: ['name', 'source'],
      registers,
      collect() {
        this.reset()
        for (const s of self.#sources?.acme()?.statuses() ?? []) {
          const at = seconds(s.notAfter)
          if (at !== undefined) this.set({ name: s.name, source: 'acme' }, at)
        }
        for (const file of self.#sources?.certificates()?.status() ?? []) {
          const at = seconds(file.notAfter)
          if (at === undefined) continue
          for (const name of file.isDefault ? ['(default)'] : file.hosts) this.set({ name, source: 'file' }, at)
        }
      },
    })
    new Gauge({
      name: 'autotls_certificate_next_renewal_seconds',
      aggregator: 'min',
      help: 'When the next ACME order for each name is scheduled (Unix time)',
      labelNames: ['name'],
      registers,
      collect() {
        this.reset()
        for (const s of self.#sources?.acme()?.statuses() ?? []) {
          const at = seconds(s.nextAction?.at)
          if (at !== undefined) this.set({ name: s.name }, at)
        }
      },
    })
    new Counter({
      name: 'autotls_tls_handshakes_total',
      help: 'TLS handshakes by outcome: certificate (known name), unknown_name (no certificate), challenge (TLS-ALPN-01 diverted), context_failed',
      labelNames: ['outcome'],
      registers,
      collect() {
        this.reset()
        const stats = self.#sources?.resolver.stats
        if (stats) {
          this.inc({ outcome: 'certificate' }, stats.hits)
          this.inc({ outcome: 'unknown_name' }, stats.misses)
          this.inc({ outcome: 'context_failed' }, stats.contextsFailed)
        }
        this.inc({ outcome: 'challenge' }, self.#sources?.acme()?.tlsAlpnStats.diverted ?? 0)
      },
    })
    new Gauge({
      name: 'autotls_upstream_healthy',
      aggregator: 'min',
      help: '1 when an upstream takes requests, 0 while ejected or failing its health check',
      labelNames: ['route', 'upstream'],
      registers,
      collect() {
        this.reset()
        for (const u of self.#sources?.upstreamHealth() ?? []) {
          this.set({ route: u.route, upstream: u.upstream }, u.healthy ? 1 : 0)
        }
      },
    })
  }

  /** Connects the scrape-time sources and ACME events (once the proxy is built). */
  attach(sources: MetricsSources): void {
    this.#sources = sources
    const acme = sources.acme()
    if (!acme) return
    const observe = (message: unknown) => {
      const m = message as { what: string; ms: number; ok: boolean }
      this.#acmeRequestSeconds.observe({ step: m.what, outcome: m.ok ? 'ok' : 'error' }, m.ms / 1000)
    }
    subscribe(ACME_REQUEST_CHANNEL, observe)
    this.#unsubscribe = () => unsubscribe(ACME_REQUEST_CHANNEL, observe)
    const started = new Map<string, number>()
    acme.on('order-started', ({ name }) => started.set(name, performance.now()))
    const finished = (name: string, result: 'issued' | 'failed') => {
      this.#orders.inc({ result })
      const t0 = started.get(name)
      if (t0 !== undefined) this.#orderSeconds.observe({ result }, (performance.now() - t0) / 1000)
      started.delete(name)
    }
    acme.on('certificate-issued', ({ name }) => finished(name, 'issued'))
    acme.on('order-failed', ({ name }) => finished(name, 'failed'))
  }

  #unsubscribe: (() => void) | undefined

  /** Stops listening to fastify-acme's request channel (the proxy closes). */
  detach(): void {
    this.#unsubscribe?.()
    this.#unsubscribe = undefined
  }

  reloaded(applied: boolean): void {
    this.#reloads.inc({ result: applied ? 'applied' : 'refused' })
  }

  /** The per-request hooks, on a routing generation. */
  instrument(app: FastifyInstance): void {
    const requests = this.#requests
    const upstream = this.#upstreamSeconds
    // onSend of a proxied reply runs when the upstream's response headers are in.
    app.addHook('onSend', (request, reply, payload, done) => {
      const route = (request.routeOptions.config as unknown as { proxyRoute?: ResolvedRoute }).proxyRoute
      if (route !== undefined && reply.statusCode < 502)
        upstream.observe({ route: route.label }, reply.elapsedTime / 1000)
      done(null, payload)
    })
    app.addHook('onResponse', (request, reply, done) => {
      const route = (request.routeOptions.config as unknown as { proxyRoute?: ResolvedRoute }).proxyRoute
      requests.inc({ route: route?.label ?? '(no route)', status: String(reply.statusCode) })
      done()
    })
  }

  text(): Promise<string> {
    return this.registry.metrics()
  }

  get contentType(): string {
    return this.registry.contentType
  }
}
