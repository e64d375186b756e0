// The proxy's options: one TypeBox schema is the source of truth for validation, types and documented defaults.
// resolveProxyOptions() turns user input into a fully-defaulted ResolvedProxyOptions or throws an FPROXY_* error
// naming the option to fix. Pure: no I/O (certificate files are read later, by manual-certs.ts). The options of one
// route (schema, defaults, resolution) are in route-options.ts.
import { availableParallelism } from 'node:os'
import { AcmeOptionsSchema, type FastifyAcmeOptions, type Storage } from '@autotls/fastify-acme'
import { type Static, Type } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import type { FastifyBaseLogger, FastifyServerOptions } from 'fastify'
import { atOption, ERR_DUPLICATE_ROUTE, ERR_INVALID_OPTIONS, type OptionPath } from './errors.js'
import { compileTrust, type TrustFunction } from './forwarded.js'
import { parseRouteHost } from './hosts.js'
import {
  atPath,
  commonMistakes,
  invalid,
  Millis,
  type ResolvedRoute,
  RouteSchema,
  resolveRoute,
} from './route-options.js'

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
export const DEFAULT_HEALTH_PATH = '/.well-known/proxy-health'
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000
export const DEFAULT_SHUTDOWN_SIGNALS = ['SIGINT', 'SIGTERM'] as const
export const DEFAULT_RELOAD_DEBOUNCE_MS = 200
export const DEFAULT_RELOAD_POLL_MS = 5_000
/** The admin listener (metrics, status, reload) binds loopback unless told otherwise. */
export const DEFAULT_ADMIN_HOST = '127.0.0.1'
export const DEFAULT_ADMIN_PORT = 9180

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
