// The proxy's options: one TypeBox schema is the source of truth for validation, types and documented defaults.
// resolveProxyOptions() turns user input into a fully-defaulted ResolvedProxyOptions or throws an FPROXY_* error
// naming the option to fix. Pure: no I/O (certificate files are read later, by manual-certs.ts).
import { availableParallelism } from 'node:os'
import { AcmeOptionsSchema, type FastifyAcmeOptions, type Storage } from '@autotls/fastify-acme'
import { type Static, Type } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import type { FastifyBaseLogger, FastifyServerOptions } from 'fastify'
import { atOption, ERR_DUPLICATE_ROUTE, ERR_INVALID_OPTIONS, type OptionPath } from './errors.js'
import { compileTrust, type TrustFunction } from './forwarded.js'
import { parseRouteHost } from './hosts.js'

export const DEFAULT_HTTPS_PORT = 443
export const DEFAULT_HTTP_PORT = 80
/** All interfaces, IPv6 and IPv4 (falls back to 0.0.0.0 where IPv6 is unavailable). */
export const DEFAULT_LISTEN_HOST = '::'
export const DEFAULT_BODY_BYTES = 10 * 1024 * 1024
export const DEFAULT_HEADER_BYTES = 16 * 1024
export const DEFAULT_HEADERS_TIMEOUT_MS = 30_000
export const DEFAULT_REQUEST_TIMEOUT_MS = 300_000
export const DEFAULT_KEEP_ALIVE_TIMEOUT_MS = 72_000
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000
export const DEFAULT_HTTP2_SESSION_TIMEOUT_MS = 72_000
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000
export const DEFAULT_RESPONSE_TIMEOUT_MS = 60_000
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000
export const DEFAULT_HEALTH_PATH = '/.well-known/proxy-health'
export const DEFAULT_HEALTH_CHECK_PATH = '/'
export const DEFAULT_HEALTH_CHECK_INTERVAL_MS = 5_000
export const DEFAULT_HEALTH_CHECK_TIMEOUT_MS = 2_000
export const DEFAULT_HEALTHY_THRESHOLD = 2
export const DEFAULT_UNHEALTHY_THRESHOLD = 2
/** How long a connection error takes an upstream out of a route with several (or until a health check sees it up). */
export const DEFAULT_EJECT_MS = 10_000
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000
export const DEFAULT_SHUTDOWN_SIGNALS = ['SIGINT', 'SIGTERM'] as const
export const DEFAULT_RELOAD_DEBOUNCE_MS = 200
export const DEFAULT_RELOAD_POLL_MS = 5_000
/** The admin listener (metrics, status, reload) binds loopback unless told otherwise. */
export const DEFAULT_ADMIN_HOST = '127.0.0.1'
export const DEFAULT_ADMIN_PORT = 9180

// A path prefix: '/'-separated segments of unreserved/sub-delim characters. No ':' '*' (router syntax), no '%',
// '?', '#', ';', no dot-segments: a prefix must mean the same thing to the router and to the upstream.
const PREFIX_PATTERN = "^(/[A-Za-z0-9._~!$&'+,=@-]+)*/?$"
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/

const Millis = (description: string) => Type.Integer({ minimum: 0, maximum: 2_147_483_647, description })

const HeaderChangesSchema = Type.Object(
  {
    set: Type.Optional(
      Type.Record(Type.String(), Type.String(), { description: 'Headers to set (replacing any value)' }),
    ),
    remove: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { description: 'Header names to remove' })),
  },
  { additionalProperties: false },
)

const UpstreamUrlSchema = Type.String({ pattern: '^https?://', description: 'http:// or https:// origin' })

export const RouteSchema = Type.Object(
  {
    host: Type.String({
      minLength: 1,
      maxLength: 255,
      description:
        "Exact host (app.example.com), one-label wildcard (*.example.com), or '*': any host that gets a certificate on demand (needs acme.onDemand)",
    }),
    path: Type.Optional(
      Type.String({ pattern: PREFIX_PATTERN, description: "Path prefix this route owns (default '/': everything)" }),
    ),
    upstream: Type.Union([UpstreamUrlSchema, Type.Array(UpstreamUrlSchema, { minItems: 1 })], {
      description: 'Upstream origin(s); several are load-balanced',
    }),
    rewritePrefix: Type.Optional(
      Type.String({
        pattern: `${PREFIX_PATTERN}|^$`,
        description: "Replaces `path` in the upstream request ('' strips it); default: `path` (kept)",
      }),
    ),
    websocket: Type.Optional(Type.Boolean({ description: 'Proxy WebSocket upgrades (HTTP/1.1); default false' })),
    preserveHost: Type.Optional(
      Type.Boolean({ description: "Send the client's Host upstream (default true); false sends the upstream's" }),
    ),
    headers: Type.Optional(
      Type.Object(
        { request: Type.Optional(HeaderChangesSchema), response: Type.Optional(HeaderChangesSchema) },
        { additionalProperties: false },
      ),
    ),
    healthCheck: Type.Optional(
      Type.Object(
        {
          path: Type.Optional(
            Type.String({ pattern: '^/[^#]*$', description: `GET this path (default '${DEFAULT_HEALTH_CHECK_PATH}')` }),
          ),
          intervalMs: Type.Optional(
            Type.Integer({
              minimum: 100,
              maximum: 2_147_483_647,
              description: `Between checks (default ${DEFAULT_HEALTH_CHECK_INTERVAL_MS})`,
            }),
          ),
          timeoutMs: Type.Optional(
            Type.Integer({
              minimum: 1,
              maximum: 2_147_483_647,
              description: `A check slower than this fails (default ${DEFAULT_HEALTH_CHECK_TIMEOUT_MS})`,
            }),
          ),
          healthyThreshold: Type.Optional(
            Type.Integer({
              minimum: 1,
              maximum: 100,
              description: `Successes in a row to mark an upstream up (default ${DEFAULT_HEALTHY_THRESHOLD})`,
            }),
          ),
          unhealthyThreshold: Type.Optional(
            Type.Integer({
              minimum: 1,
              maximum: 100,
              description: `Failures in a row to mark an upstream down (default ${DEFAULT_UNHEALTHY_THRESHOLD})`,
            }),
          ),
        },
        {
          additionalProperties: false,
          description: 'Active health checks of each upstream (off unless given); a 2xx or 3xx answer is a success',
        },
      ),
    ),
    ejectMs: Type.Optional(
      Millis(
        `With several upstreams, a connection error takes an upstream out for this long, or until a health check sees it up (default ${DEFAULT_EJECT_MS})`,
      ),
    ),
    timeouts: Type.Optional(
      Type.Object(
        {
          connectMs: Type.Optional(Millis(`Connecting to the upstream (default ${DEFAULT_CONNECT_TIMEOUT_MS})`)),
          responseMs: Type.Optional(
            Millis(`Waiting for the upstream's response headers (default ${DEFAULT_RESPONSE_TIMEOUT_MS}; 0: none)`),
          ),
          idleMs: Type.Optional(
            Millis(`Longest pause inside the upstream's response body (default ${DEFAULT_IDLE_TIMEOUT_MS}; 0: none)`),
          ),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
)
export type RouteOptions = Static<typeof RouteSchema>

const ListenProperties = {
  host: Type.Optional(Type.String({ minLength: 1, description: `Address to bind (default '${DEFAULT_LISTEN_HOST}')` })),
  port: Type.Optional(Type.Integer({ minimum: 0, maximum: 65535, description: '0 picks a free port' })),
}

const CertificateFilesSchema = Type.Object(
  {
    cert: Type.String({ minLength: 1, description: 'PEM file: leaf certificate then intermediates' }),
    key: Type.String({ minLength: 1, description: 'PEM file: private key' }),
  },
  { additionalProperties: false },
)

const { names: acmeNamesSchema, ...acmeProperties } = AcmeOptionsSchema.properties

export const ProxyOptionsSchema = Type.Object(
  {
    routes: Type.Array(RouteSchema, { minItems: 1, description: 'Where each host (and path prefix) goes' }),
    https: Type.Optional(
      Type.Object(
        {
          ...ListenProperties,
          http2: Type.Optional(Type.Boolean({ description: 'Offer HTTP/2 (with HTTP/1.1 fallback); default true' })),
        },
        { additionalProperties: false },
      ),
    ),
    http: Type.Optional(
      Type.Union([
        Type.Literal(false),
        Type.Object(
          {
            ...ListenProperties,
            redirect: Type.Optional(Type.Boolean({ description: 'Redirect to HTTPS with 308 (default true)' })),
            acmeChallenges: Type.Optional(Type.Boolean({ description: 'Answer HTTP-01 challenges (default true)' })),
            redirectPort: Type.Optional(
              Type.Integer({ minimum: 1, maximum: 65535, description: 'HTTPS port in redirects (default https.port)' }),
            ),
          },
          { additionalProperties: false },
        ),
      ]),
    ),
    acme: Type.Optional(
      Type.Object(
        { ...acmeProperties, names: Type.Optional(acmeNamesSchema) },
        { additionalProperties: false, description: 'fastify-acme options; names default to the exact route hosts' },
      ),
    ),
    certificates: Type.Optional(
      Type.Array(
        Type.Object(
          {
            cert: CertificateFilesSchema.properties.cert,
            key: CertificateFilesSchema.properties.key,
            hosts: Type.Optional(
              Type.Array(Type.String({ minLength: 1 }), {
                minItems: 1,
                description: "Hosts served with this pair (default: the certificate's DNS names)",
              }),
            ),
          },
          { additionalProperties: false },
        ),
        { description: 'Manual certificate files, reloaded when they change' },
      ),
    ),
    defaultCertificate: Type.Optional(CertificateFilesSchema),
    reload: Type.Optional(
      Type.Object(
        {
          debounceMs: Type.Optional(Millis(`Wait after a change event (default ${DEFAULT_RELOAD_DEBOUNCE_MS})`)),
          pollIntervalMs: Type.Optional(
            Millis(`Fallback stat() poll period (default ${DEFAULT_RELOAD_POLL_MS}; 0: no polling)`),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    trustedProxies: Type.Optional(
      Type.Array(Type.String({ minLength: 1 }), {
        description: 'Peers whose X-Forwarded-* are kept and extended: IPs, CIDRs, loopback, private, linklocal',
      }),
    ),
    allowSemicolonInPath: Type.Optional(
      Type.Boolean({ description: "Let ';' path parameters through (default false: 400)" }),
    ),
    limits: Type.Optional(
      Type.Object(
        {
          bodyBytes: Type.Optional(Type.Integer({ minimum: 0, description: 'Largest request body (413 above)' })),
          headerBytes: Type.Optional(
            Type.Integer({ minimum: 1024, maximum: 1024 * 1024, description: 'Largest request header block (431)' }),
          ),
          headersTimeoutMs: Type.Optional(Millis('Time a client has to send its request headers')),
          requestTimeoutMs: Type.Optional(Millis('Time a client has to send its whole request')),
          keepAliveTimeoutMs: Type.Optional(Millis('Idle HTTP/1.1 keep-alive connections are closed after this')),
          handshakeTimeoutMs: Type.Optional(Millis('Time a client has to complete the TLS handshake')),
          http2SessionTimeoutMs: Type.Optional(Millis('Idle HTTP/2 sessions are closed after this')),
        },
        { additionalProperties: false },
      ),
    ),
    health: Type.Optional(
      Type.Union([
        Type.Literal(false),
        Type.Object(
          {
            path: Type.Optional(Type.String({ pattern: '^/[^?#]*$', description: `default ${DEFAULT_HEALTH_PATH}` })),
            host: Type.Optional(Type.String({ minLength: 1, description: 'Only on this host (default: any host)' })),
          },
          { additionalProperties: false },
        ),
      ]),
    ),
    admin: Type.Optional(
      Type.Union([
        Type.Literal(false),
        Type.Object(
          {
            host: Type.Optional(
              Type.String({ minLength: 1, description: `Address to bind (default ${DEFAULT_ADMIN_HOST}: loopback)` }),
            ),
            port: Type.Optional(
              Type.Integer({ minimum: 0, maximum: 65535, description: `default ${DEFAULT_ADMIN_PORT}; 0 picks one` }),
            ),
            token: Type.Optional(
              Type.String({ minLength: 16, description: 'Bearer token required on every admin request' }),
            ),
          },
          { additionalProperties: false, description: 'Admin listener: /metrics, /status, POST /reload' },
        ),
      ]),
    ),
    accessLog: Type.Optional(
      Type.Boolean({ description: 'One JSON line per request through the logger (default false)' }),
    ),
    workers: Type.Optional(
      Type.Union([Type.Integer({ minimum: 1, maximum: 1024 }), Type.Literal('auto')], {
        description:
          "Processes serving the listeners (node:cluster, `autotls run` only): a number, or 'auto' for one per core (default 1: this process)",
      }),
    ),
    shutdown: Type.Optional(
      Type.Object(
        {
          signals: Type.Optional(
            Type.Union([Type.Literal(false), Type.Array(Type.String({ pattern: '^SIG[A-Z0-9]+$' }))], {
              description: 'Signals that start a graceful shutdown (default SIGINT, SIGTERM; false: none)',
            }),
          ),
          graceMs: Type.Optional(Millis(`In-flight requests get this long (default ${DEFAULT_SHUTDOWN_GRACE_MS})`)),
          exit: Type.Optional(Type.Boolean({ description: 'process.exit() after a signal-triggered shutdown' })),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
)

export type ProxyOptionsData = Static<typeof ProxyOptionsSchema>

/** Options of createProxy()/startProxy(): the schema's data plus objects that are not data. */
export interface ProxyOptions extends Omit<ProxyOptionsData, 'acme'> {
  acme?: Omit<FastifyAcmeOptions, 'names'> & { names?: string[] }
  /** Fastify logger options, `true`/`false`, or a pino-compatible logger instance. Default: info level. */
  logger?: boolean | FastifyServerOptions['logger'] | FastifyBaseLogger
}

export interface HeaderChanges {
  set: Array<[string, string]>
  remove: string[]
}

export interface ResolvedRoute {
  host: string
  wildcard: boolean
  /** '' for the whole host, else '/prefix' without a trailing slash. */
  path: string
  upstreams: string[]
  rewritePrefix: string
  websocket: boolean
  preserveHost: boolean
  requestHeaders: HeaderChanges
  responseHeaders: HeaderChanges
  connectMs: number
  responseMs: number
  idleMs: number
  healthCheck: ResolvedHealthCheck | undefined
  ejectMs: number
  /** host + path, for logs and error bodies. */
  label: string
}

export interface ResolvedHealthCheck {
  path: string
  intervalMs: number
  timeoutMs: number
  healthyThreshold: number
  unhealthyThreshold: number
}

export interface ResolvedListen {
  host: string
  port: number
}

export interface ResolvedProxyOptions {
  routes: ResolvedRoute[]
  https: ResolvedListen & { http2: boolean }
  http: (ResolvedListen & { redirect: boolean; acmeChallenges: boolean; redirectPort: number }) | undefined
  acme: (Omit<FastifyAcmeOptions, 'names'> & { names?: string[]; storage?: Storage }) | undefined
  certificates: Array<{ cert: string; key: string; hosts: string[] | undefined }>
  defaultCertificate: { cert: string; key: string } | undefined
  reload: { debounceMs: number; pollIntervalMs: number }
  trustedProxies: TrustFunction
  allowSemicolonInPath: boolean
  limits: {
    bodyBytes: number
    headerBytes: number
    headersTimeoutMs: number
    requestTimeoutMs: number
    keepAliveTimeoutMs: number
    handshakeTimeoutMs: number
    http2SessionTimeoutMs: number
  }
  health: { path: string; host: string | undefined } | undefined
  admin: { host: string; port: number; token: string | undefined } | undefined
  accessLog: boolean
  shutdown: { signals: NodeJS.Signals[]; graceMs: number; exit: boolean }
  /** Worker processes (1: none, this process serves). */
  workers: number
  logger: ProxyOptions['logger']
}

function normalizePrefix(prefix: string | undefined): string {
  if (prefix === undefined || prefix === '/' || prefix === '') return ''
  const trimmed = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix
  if (trimmed.split('/').some((segment) => segment === '.' || segment === '..')) {
    throw new ERR_INVALID_OPTIONS(`path prefix ${JSON.stringify(prefix)} contains a dot-segment`)
  }
  return trimmed
}

/** ERR_INVALID_OPTIONS for the option at `path`, its message prefixed with the dotted path. */
function invalid(path: OptionPath, message: string, cause?: unknown): Error {
  const error = new ERR_INVALID_OPTIONS(`${path.join('.')}: ${message}`, ...(cause === undefined ? [] : [{ cause }]))
  return atOption(error, path)
}

/** What a user probably meant by an upstream without a scheme (`127.0.0.1:3000`, `localhost:3000/`). */
function upstreamHint(url: string): string {
  const bare = url.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '').replace(/\/+$/, '')
  return `http://${bare}`
}

function upstreamOrigin(url: string, path: OptionPath): string {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch (err) {
    throw invalid(path, `${JSON.stringify(url)} is not a URL; write an origin such as "${upstreamHint(url)}"`, err)
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw invalid(path, `upstreams must be http:// or https:// URLs; write e.g. "${upstreamHint(url)}"`)
  }
  if (parsed.username || parsed.password) {
    throw invalid(path, 'credentials in upstream URLs are not supported; use headers.request.set')
  }
  if ((parsed.pathname !== '/' && parsed.pathname !== '') || parsed.search || parsed.hash) {
    throw invalid(
      path,
      `an upstream is an origin (scheme://host:port): write "${parsed.origin}" and, to send requests under ${JSON.stringify(parsed.pathname)} upstream, rewritePrefix: ${JSON.stringify(parsed.pathname.replace(/\/$/, ''))}`,
    )
  }
  return parsed.origin
}

function headerChanges(input: RouteOptions['headers'], which: 'request' | 'response', index: number): HeaderChanges {
  const where = `routes.${index}`
  const changes = input?.[which]
  const set: Array<[string, string]> = []
  for (const [name, value] of Object.entries(changes?.set ?? {})) {
    if (!HEADER_NAME.test(name)) {
      throw atOption(new ERR_INVALID_OPTIONS(`${where}.headers.${which}.set: bad header name ${name}`), [
        'routes',
        index,
        'headers',
        which,
        'set',
        name,
      ])
    }
    if (/[\r\n\0]/.test(value)) {
      throw invalid(['routes', index, 'headers', which, 'set', name], 'value contains CR, LF or NUL')
    }
    set.push([name.toLowerCase(), value])
  }
  const remove = (changes?.remove ?? []).map((name, i) => {
    if (!HEADER_NAME.test(name)) {
      throw atOption(new ERR_INVALID_OPTIONS(`${where}.headers.${which}.remove: bad header name ${name}`), [
        'routes',
        index,
        'headers',
        which,
        'remove',
        i,
      ])
    }
    return name.toLowerCase()
  })
  return { set, remove }
}

function resolveRoute(route: RouteOptions, index: number): ResolvedRoute {
  let parsedHost: ReturnType<typeof parseRouteHost>
  try {
    parsedHost = parseRouteHost(route.host)
  } catch (err) {
    throw atOption(err as Error, ['routes', index, 'host'])
  }
  const { host, wildcard } = parsedHost
  const path = atPath(['routes', index, 'path'], () => normalizePrefix(route.path))
  const upstreamList = Array.isArray(route.upstream) ? route.upstream : [route.upstream]
  const upstreams = [
    ...new Set(
      upstreamList.map((u, i) =>
        upstreamOrigin(
          u,
          Array.isArray(route.upstream) ? ['routes', index, 'upstream', i] : ['routes', index, 'upstream'],
        ),
      ),
    ),
  ]
  const rewritePrefix =
    route.rewritePrefix === undefined
      ? path
      : atPath(['routes', index, 'rewritePrefix'], () => normalizePrefix(route.rewritePrefix))
  return {
    host,
    wildcard,
    path,
    upstreams,
    rewritePrefix,
    websocket: route.websocket ?? false,
    preserveHost: route.preserveHost ?? true,
    requestHeaders: headerChanges(route.headers, 'request', index),
    responseHeaders: headerChanges(route.headers, 'response', index),
    connectMs: route.timeouts?.connectMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    responseMs: route.timeouts?.responseMs ?? DEFAULT_RESPONSE_TIMEOUT_MS,
    idleMs: route.timeouts?.idleMs ?? DEFAULT_IDLE_TIMEOUT_MS,
    healthCheck:
      route.healthCheck === undefined
        ? undefined
        : {
            path: route.healthCheck.path ?? DEFAULT_HEALTH_CHECK_PATH,
            intervalMs: route.healthCheck.intervalMs ?? DEFAULT_HEALTH_CHECK_INTERVAL_MS,
            timeoutMs: route.healthCheck.timeoutMs ?? DEFAULT_HEALTH_CHECK_TIMEOUT_MS,
            healthyThreshold: route.healthCheck.healthyThreshold ?? DEFAULT_HEALTHY_THRESHOLD,
            unhealthyThreshold: route.healthCheck.unhealthyThreshold ?? DEFAULT_UNHEALTHY_THRESHOLD,
          },
    ejectMs: route.ejectMs ?? DEFAULT_EJECT_MS,
    label: `${host}${path || '/'}`,
  }
}

function atPath<T>(path: OptionPath, fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    throw atOption(err as Error, path)
  }
}

/**
 * Mistakes the schema alone reports badly (an upstream without a scheme fails a union: "Expected union value"),
 * checked first so the message says what to write instead.
 */
function commonMistakes(data: Record<string, unknown>): void {
  const routes = data['routes']
  if (!Array.isArray(routes)) return
  routes.forEach((route: unknown, index) => {
    if (route === null || typeof route !== 'object') return
    const { upstream, host } = route as { upstream?: unknown; host?: unknown }
    const list = Array.isArray(upstream) ? upstream : [upstream]
    list.forEach((u, i) => {
      if (typeof u === 'string' && !/^https?:\/\//i.test(u)) {
        const path: OptionPath = Array.isArray(upstream)
          ? ['routes', index, 'upstream', i]
          : ['routes', index, 'upstream']
        throw invalid(
          path,
          `${JSON.stringify(u)} has no http:// or https:// scheme; write "${upstreamHint(u)}" (or https:// for a TLS upstream)`,
        )
      }
    })
    if (typeof host === 'string') {
      try {
        parseRouteHost(host)
      } catch (err) {
        throw atOption(err as Error, ['routes', index, 'host'])
      }
    }
  })
}

/** Words a misspelt option is compared with (the closest known property of the object it is in). */
function closest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined
  let bestDistance = 3
  for (const candidate of candidates) {
    const d = editDistance(word.toLowerCase(), candidate.toLowerCase())
    if (d < bestDistance) {
      bestDistance = d
      best = candidate
    }
  }
  return best
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0]!
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const saved = row[j]!
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1))
      previous = saved
    }
  }
  return row[b.length]!
}

function checkSchema(data: unknown): void {
  if (Value.Check(ProxyOptionsSchema, data)) return
  const first = Value.Errors(ProxyOptionsSchema, data).First()
  const path: OptionPath = (first?.path ?? '')
    .split('/')
    .filter((s) => s !== '')
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s.replace(/~1/g, '/').replace(/~0/g, '~')))
  let message = first?.message ?? 'does not match the schema'
  const schema = first?.schema as { description?: string; anyOf?: unknown[]; pattern?: string } | undefined
  if (first && /Unexpected property/i.test(message)) {
    // additionalProperties errors carry the object's schema: it lists what is allowed here.
    const parentSchema = first.schema as { properties?: Record<string, unknown> }
    const key = String(path.at(-1))
    const known = Object.keys(parentSchema?.properties ?? {})
    const suggestion = closest(key, known)
    message = `unknown option ${JSON.stringify(key)}${suggestion ? `; did you mean ${JSON.stringify(suggestion)}?` : ''}${known.length > 0 ? ` (allowed here: ${known.join(', ')})` : ''}`
  } else if (first && /Expected required property/i.test(message)) {
    message = `missing; this option is required`
  } else if (schema?.description) {
    message = `${message} (${schema.description})`
  }
  const where = path.length > 0 ? path.join('.') : '(root)'
  throw atOption(new ERR_INVALID_OPTIONS(`${where}: ${message}`), path)
}

/** Validates user options and fills defaults. Throws FPROXY_* errors that name the option to fix. */
export function resolveProxyOptions(input: unknown): ResolvedProxyOptions {
  if (input === null || typeof input !== 'object') throw new ERR_INVALID_OPTIONS('options must be an object')
  const { logger, acme, ...rest } = input as ProxyOptions
  let acmeData: Record<string, unknown> | undefined
  let acmeObjects: Record<string, unknown> = {}
  if (acme !== undefined) {
    if (acme === null || typeof acme !== 'object') throw new ERR_INVALID_OPTIONS('acme must be an object')
    const { storage, clock, ...data } = acme as Record<string, unknown>
    acmeData = data
    acmeObjects = { ...(storage !== undefined ? { storage } : {}), ...(clock !== undefined ? { clock } : {}) }
    // Objects inside the data: the DNS provider and the on-demand decision function, put back after the schema.
    for (const [option, field] of [
      ['dns01', 'provider'],
      ['onDemand', 'allow'],
    ] as const) {
      const value = data[option] as Record<string, unknown> | undefined
      if (value !== null && typeof value === 'object' && value[field] !== undefined) {
        const { [field]: object, ...rest } = value
        acmeData[option] = rest
        acmeObjects[option] = { ...rest, [field]: object }
      }
    }
  }
  const data = acmeData === undefined ? rest : { ...rest, acme: acmeData }
  commonMistakes(data as Record<string, unknown>)
  checkSchema(data)
  const opts = data as ProxyOptionsData

  const routes = opts.routes.map(resolveRoute)
  const seen = new Set<string>()
  for (const [index, route] of routes.entries()) {
    if (seen.has(route.label)) throw atOption(new ERR_DUPLICATE_ROUTE(route.label), ['routes', index])
    seen.add(route.label)
  }

  const httpsPort = opts.https?.port ?? DEFAULT_HTTPS_PORT
  const http =
    opts.http === false
      ? undefined
      : {
          host: opts.http?.host ?? DEFAULT_LISTEN_HOST,
          port: opts.http?.port ?? DEFAULT_HTTP_PORT,
          redirect: opts.http?.redirect ?? true,
          acmeChallenges: opts.http?.acmeChallenges ?? true,
          redirectPort: opts.http?.redirectPort ?? (httpsPort === 0 ? DEFAULT_HTTPS_PORT : httpsPort),
        }
  if (http && !http.redirect && !http.acmeChallenges) {
    throw invalid(['http'], 'with both redirect and acmeChallenges off, write `http: false` instead')
  }

  const health =
    opts.health === false
      ? undefined
      : {
          path: opts.health?.path ?? DEFAULT_HEALTH_PATH,
          host:
            opts.health?.host === undefined
              ? undefined
              : atPath(['health', 'host'], () => parseRouteHost((opts.health as { host: string }).host).host),
        }

  return {
    routes,
    https: {
      host: opts.https?.host ?? DEFAULT_LISTEN_HOST,
      port: httpsPort,
      http2: opts.https?.http2 ?? true,
    },
    http,
    acme: opts.acme === undefined ? undefined : ({ ...opts.acme, ...acmeObjects } as ResolvedProxyOptions['acme']),
    certificates: (opts.certificates ?? []).map((c) => ({ cert: c.cert, key: c.key, hosts: c.hosts })),
    defaultCertificate: opts.defaultCertificate,
    reload: {
      debounceMs: opts.reload?.debounceMs ?? DEFAULT_RELOAD_DEBOUNCE_MS,
      pollIntervalMs: opts.reload?.pollIntervalMs ?? DEFAULT_RELOAD_POLL_MS,
    },
    trustedProxies: atPath(['trustedProxies'], () => compileTrust(opts.trustedProxies ?? [])),
    allowSemicolonInPath: opts.allowSemicolonInPath ?? false,
    limits: {
      bodyBytes: opts.limits?.bodyBytes ?? DEFAULT_BODY_BYTES,
      headerBytes: opts.limits?.headerBytes ?? DEFAULT_HEADER_BYTES,
      headersTimeoutMs: opts.limits?.headersTimeoutMs ?? DEFAULT_HEADERS_TIMEOUT_MS,
      requestTimeoutMs: opts.limits?.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
      keepAliveTimeoutMs: opts.limits?.keepAliveTimeoutMs ?? DEFAULT_KEEP_ALIVE_TIMEOUT_MS,
      handshakeTimeoutMs: opts.limits?.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
      http2SessionTimeoutMs: opts.limits?.http2SessionTimeoutMs ?? DEFAULT_HTTP2_SESSION_TIMEOUT_MS,
    },
    health,
    admin:
      opts.admin === undefined || opts.admin === false
        ? undefined
        : {
            host: opts.admin.host ?? DEFAULT_ADMIN_HOST,
            port: opts.admin.port ?? DEFAULT_ADMIN_PORT,
            token: opts.admin.token,
          },
    accessLog: opts.accessLog ?? false,
    shutdown: {
      signals:
        opts.shutdown?.signals === false
          ? []
          : ((opts.shutdown?.signals ?? [...DEFAULT_SHUTDOWN_SIGNALS]) as NodeJS.Signals[]),
      graceMs: opts.shutdown?.graceMs ?? DEFAULT_SHUTDOWN_GRACE_MS,
      exit: opts.shutdown?.exit ?? true,
    },
    workers: opts.workers === 'auto' ? availableParallelism() : (opts.workers ?? 1),
    logger,
  }
}
