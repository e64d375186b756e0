// The proxy's options: one TypeBox schema is the source of truth for validation, types and documented defaults.
// resolveProxyOptions() turns user input into a fully-defaulted ResolvedProxyOptions or throws an FPROXY_* error
// naming the option to fix. Pure: no I/O (certificate files are read later, by manual-certs.ts).
import { AcmeOptionsSchema, type FastifyAcmeOptions, type Storage } from '@autotls/fastify-acme'
import { type Static, Type } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import type { FastifyBaseLogger, FastifyServerOptions } from 'fastify'
import { ERR_DUPLICATE_ROUTE, ERR_INVALID_OPTIONS } from './errors.js'
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
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000
export const DEFAULT_SHUTDOWN_SIGNALS = ['SIGINT', 'SIGTERM'] as const
export const DEFAULT_RELOAD_DEBOUNCE_MS = 200
export const DEFAULT_RELOAD_POLL_MS = 5_000

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
      description: 'Exact host (app.example.com) or one-label wildcard (*.example.com)',
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
  /** host + path, for logs and error bodies. */
  label: string
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
  shutdown: { signals: NodeJS.Signals[]; graceMs: number; exit: boolean }
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

function upstreamOrigin(url: string, where: string): string {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch (err) {
    throw new ERR_INVALID_OPTIONS(`${where}: ${JSON.stringify(url)} is not a URL`, { cause: err })
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new ERR_INVALID_OPTIONS(`${where}: upstreams must be http:// or https:// URLs`)
  }
  if (parsed.username || parsed.password) {
    throw new ERR_INVALID_OPTIONS(`${where}: credentials in upstream URLs are not supported; use headers.request.set`)
  }
  if ((parsed.pathname !== '/' && parsed.pathname !== '') || parsed.search || parsed.hash) {
    throw new ERR_INVALID_OPTIONS(
      `${where}: an upstream is an origin (scheme://host:port); to send requests under a path upstream, use rewritePrefix`,
    )
  }
  return parsed.origin
}

function headerChanges(input: RouteOptions['headers'], which: 'request' | 'response', where: string): HeaderChanges {
  const changes = input?.[which]
  const set: Array<[string, string]> = []
  for (const [name, value] of Object.entries(changes?.set ?? {})) {
    if (!HEADER_NAME.test(name)) throw new ERR_INVALID_OPTIONS(`${where}.headers.${which}.set: bad header name ${name}`)
    if (/[\r\n\0]/.test(value)) {
      throw new ERR_INVALID_OPTIONS(`${where}.headers.${which}.set.${name}: value contains CR, LF or NUL`)
    }
    set.push([name.toLowerCase(), value])
  }
  const remove = (changes?.remove ?? []).map((name) => {
    if (!HEADER_NAME.test(name)) {
      throw new ERR_INVALID_OPTIONS(`${where}.headers.${which}.remove: bad header name ${name}`)
    }
    return name.toLowerCase()
  })
  return { set, remove }
}

function resolveRoute(route: RouteOptions, index: number): ResolvedRoute {
  const where = `routes.${index}`
  const { host, wildcard } = parseRouteHost(route.host)
  const path = normalizePrefix(route.path)
  const upstreamList = Array.isArray(route.upstream) ? route.upstream : [route.upstream]
  const upstreams = [...new Set(upstreamList.map((u) => upstreamOrigin(u, `${where}.upstream`)))]
  const rewritePrefix = route.rewritePrefix === undefined ? path : normalizePrefix(route.rewritePrefix)
  return {
    host,
    wildcard,
    path,
    upstreams,
    rewritePrefix,
    websocket: route.websocket ?? false,
    preserveHost: route.preserveHost ?? true,
    requestHeaders: headerChanges(route.headers, 'request', where),
    responseHeaders: headerChanges(route.headers, 'response', where),
    connectMs: route.timeouts?.connectMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    responseMs: route.timeouts?.responseMs ?? DEFAULT_RESPONSE_TIMEOUT_MS,
    idleMs: route.timeouts?.idleMs ?? DEFAULT_IDLE_TIMEOUT_MS,
    label: `${host}${path || '/'}`,
  }
}

function checkSchema(data: unknown): void {
  if (Value.Check(ProxyOptionsSchema, data)) return
  const first = Value.Errors(ProxyOptionsSchema, data).First()
  const where = first?.path ? first.path.replace(/^\//, '').replace(/\//g, '.') : '(root)'
  throw new ERR_INVALID_OPTIONS(`${where}: ${first?.message ?? 'does not match the schema'}`)
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
  }
  const data = acmeData === undefined ? rest : { ...rest, acme: acmeData }
  checkSchema(data)
  const opts = data as ProxyOptionsData

  const routes = opts.routes.map(resolveRoute)
  const seen = new Set<string>()
  for (const route of routes) {
    if (seen.has(route.label)) throw new ERR_DUPLICATE_ROUTE(route.label)
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
    throw new ERR_INVALID_OPTIONS('http: with both redirect and acmeChallenges off, set `http: false` instead')
  }

  const health =
    opts.health === false
      ? undefined
      : {
          path: opts.health?.path ?? DEFAULT_HEALTH_PATH,
          host: opts.health?.host === undefined ? undefined : parseRouteHost(opts.health.host).host,
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
    trustedProxies: compileTrust(opts.trustedProxies ?? []),
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
    shutdown: {
      signals:
        opts.shutdown?.signals === false
          ? []
          : ((opts.shutdown?.signals ?? [...DEFAULT_SHUTDOWN_SIGNALS]) as NodeJS.Signals[]),
      graceMs: opts.shutdown?.graceMs ?? DEFAULT_SHUTDOWN_GRACE_MS,
      exit: opts.shutdown?.exit ?? true,
    },
    logger,
  }
}
