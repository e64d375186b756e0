// The admin listener (option `admin`; loopback by default, optional bearer token): GET /metrics (Prometheus text),
// GET /status (JSON, or a small HTML page for browsers: certificates, routes, upstream health), POST /reload (re-read
// the configuration source, as SIGHUP does). Plain HTTP on its own port, never on the proxy's listeners.
import { timingSafeEqual } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import type { FastifyAcme } from '@autotls/fastify-acme'
import Fastify, { type FastifyBaseLogger, LogController } from 'fastify'
import { listenError } from './listen-error.js'
import type { ManualCertificates } from './manual-certs.js'
import type { ResolvedProxyOptions } from './options.js'
import type { ReloadResult } from './reload.js'

export interface AdminStatusSources {
  draining: boolean
  generation: number
  options: ResolvedProxyOptions
  acme: FastifyAcme | undefined
  certificates: ManualCertificates | undefined
  upstreamHealth: (route: string, upstream: string) => { healthy: boolean; checked: boolean; lastError?: string }
}

export interface AdminDeps {
  options: NonNullable<ResolvedProxyOptions['admin']>
  /** The proxy's logger, or (the primary, with `workers`, which has none) options for Fastify to make one. */
  log: FastifyBaseLogger | { level: string; base: Record<string, unknown> }
  /** The Prometheus text (this proxy's registry, or with `workers` every worker's, merged by the primary). */
  metrics: { readonly contentType: string; text(): Promise<string> }
  reload: () => Promise<ReloadResult>
  status: () => StatusJson | Promise<StatusJson>
}

export interface AdminServer {
  listen(): Promise<void>
  address(): AddressInfo | undefined
  close(): Promise<void>
}

export interface StatusJson {
  state: 'running' | 'draining'
  uptimeSeconds: number
  generation: number
  certificates: Array<{
    name: string
    source: 'acme' | 'file'
    state: string
    issuer: string | null
    notAfter: string | null
    nextRenewal: string | null
    lastError: { message: string; at: string; code?: string } | null
  }>
  routes: Array<{
    route: string
    upstreams: Array<{ url: string; healthy: boolean; checked: boolean; lastError?: string }>
  }>
  /**
   * With `workers`: each worker's own state, as the primary collected it for this answer. The fields above are then
   * merged: draining if any worker drains, the lowest generation, an upstream healthy only if every worker that
   * answered finds it so, the certificates of the first worker that answered (they share one store).
   */
  workers?: Array<{ worker: number; pid: number | undefined; answered: boolean; state?: string; generation?: number }>
}

const started = Date.now()

export function statusJson(s: AdminStatusSources): StatusJson {
  const certificates: StatusJson['certificates'] = []
  for (const c of s.acme?.statuses() ?? []) {
    certificates.push({
      name: c.name,
      source: 'acme',
      state: c.state,
      issuer: c.issuer ?? null,
      notAfter: c.notAfter ?? null,
      nextRenewal: c.nextAction?.at ?? null,
      lastError: c.lastError ? { message: c.lastError.message, at: c.lastError.at, code: c.lastError.code } : null,
    })
  }
  for (const f of s.certificates?.status() ?? []) {
    for (const name of f.isDefault ? ['(default)'] : f.hosts) {
      certificates.push({
        name,
        source: 'file',
        state: f.lastError ? 'file refused (previous kept)' : 'valid',
        issuer: f.issuer.replace(/\n/g, ', ') || null,
        notAfter: f.notAfter || null,
        nextRenewal: null,
        lastError: f.lastError ?? null,
      })
    }
  }
  return {
    state: s.draining ? 'draining' : 'running',
    uptimeSeconds: Math.round((Date.now() - started) / 1000),
    generation: s.generation,
    certificates,
    routes: s.options.routes.map((r) => ({
      route: r.label,
      upstreams: r.upstreams.map((url) => ({ url, ...s.upstreamHealth(r.label, url) })),
    })),
  }
}

const html = (value: unknown): string => String(value ?? '-').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)

function workerTable(status: StatusJson): string {
  if (status.workers === undefined) return ''
  const rows = status.workers
    .map(
      (w) =>
        `<tr><td>${w.worker}</td><td>${html(w.pid)}</td><td class="${w.answered ? 'up' : 'down'}">${w.answered ? html(w.state) : 'no answer'}</td><td>${html(w.generation)}</td></tr>`,
    )
    .join('')
  return `<h2>Workers</h2><table id="workers"><thead><tr><th>worker</th><th>pid</th><th>state</th><th>generation</th></tr></thead><tbody>${rows}</tbody></table>
`
}

export function statusHtml(status: StatusJson): string {
  const certRows = status.certificates
    .map(
      (c) =>
        `<tr><td>${html(c.name)}</td><td>${html(c.source)}</td><td>${html(c.state)}</td><td>${html(c.issuer)}</td>` +
        `<td>${html(c.notAfter)}</td><td>${html(c.nextRenewal)}</td><td>${html(c.lastError?.message)}</td></tr>`,
    )
    .join('')
  const routeRows = status.routes
    .flatMap((r) =>
      r.upstreams.map(
        (u) =>
          `<tr><td>${html(r.route)}</td><td>${html(u.url)}</td><td class="${u.healthy ? 'up' : 'down'}">${u.healthy ? 'up' : 'down'}</td><td>${html(u.lastError)}</td></tr>`,
      ),
    )
    .join('')
  return `<!doctype html><html><head><meta charset="utf-8"><title>autotls status</title>
<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}.down{color:#b00;font-weight:bold}.up{color:#070}</style></head>
<body><h1>autotls</h1><p id="summary">${html(status.state)}, up ${status.uptimeSeconds} s, configuration generation ${status.generation}</p>
<h2>Certificates</h2><table id="certificates"><thead><tr><th>name</th><th>source</th><th>state</th><th>issuer</th><th>expires</th><th>next renewal</th><th>last error</th></tr></thead><tbody>${certRows}</tbody></table>
<h2>Routes</h2><table id="routes"><thead><tr><th>route</th><th>upstream</th><th>health</th><th>last error</th></tr></thead><tbody>${routeRows}</tbody></table>
${workerTable(status)}</body></html>`
}

function tokenMatches(header: string | undefined, token: string): boolean {
  if (header === undefined || !header.startsWith('Bearer ')) return false
  const given = Buffer.from(header.slice(7))
  const expected = Buffer.from(token)
  return given.length === expected.length && timingSafeEqual(given, expected)
}

export async function startAdmin(deps: AdminDeps): Promise<AdminServer> {
  // No per-request lines (scrapes would fill the log); Fastify 5.8+ takes this through a LogController.
  const logController = new LogController({ disableRequestLogging: true })
  const app =
    'child' in deps.log
      ? Fastify({ loggerInstance: deps.log, logController })
      : Fastify({ logger: deps.log, logController })
  const { token } = deps.options
  if (token !== undefined) {
    app.addHook('onRequest', (request, reply, done) => {
      if (tokenMatches(request.headers.authorization, token)) return done()
      reply.code(401).header('www-authenticate', 'Bearer').send({ statusCode: 401, message: 'bearer token required' })
    })
  }
  app.get('/metrics', async (_request, reply) => {
    reply.header('content-type', deps.metrics.contentType)
    return deps.metrics.text()
  })
  app.get('/status', async (request, reply) => {
    const status = await deps.status()
    const query = request.query as { format?: string }
    const html = query.format === 'html' || (query.format !== 'json' && /text\/html/.test(request.headers.accept ?? ''))
    reply.header('cache-control', 'no-store')
    if (html) return reply.type('text/html; charset=utf-8').send(statusHtml(status))
    return status
  })
  app.post('/reload', async (_request, reply) => {
    const result = await deps.reload()
    return reply.code(result.applied ? 200 : 422).send(result)
  })
  await app.ready()
  return {
    async listen() {
      try {
        await app.listen({ host: deps.options.host, port: deps.options.port })
      } catch (err) {
        throw listenError(err, deps.options, 'admin')
      }
    },
    address() {
      const address = app.server.listening ? app.server.address() : null
      return address !== null && typeof address === 'object' ? address : undefined
    },
    close: () => app.close(),
  }
}
