// The options of one route (`routes[i]`): its TypeBox schema, the defaults it documents, the resolved form the
// proxy runs with, and resolveRoute(), which checks one route and fills its defaults. options.ts builds the whole
// configuration on top of this file (and shares its Millis schema and option-path error helpers); nothing here
// imports options.ts.
import { type Static, Type } from '@sinclair/typebox'
import { atOption, ERR_INVALID_OPTIONS, type OptionPath } from './errors.js'
import { parseRouteHost } from './hosts.js'

export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000
export const DEFAULT_RESPONSE_TIMEOUT_MS = 60_000
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000
export const DEFAULT_HEALTH_CHECK_PATH = '/'
export const DEFAULT_HEALTH_CHECK_INTERVAL_MS = 5_000
export const DEFAULT_HEALTH_CHECK_TIMEOUT_MS = 2_000
export const DEFAULT_HEALTHY_THRESHOLD = 2
export const DEFAULT_UNHEALTHY_THRESHOLD = 2
/** How long a connection error takes an upstream out of a route with several (or until a health check sees it up). */
export const DEFAULT_EJECT_MS = 10_000

// A path prefix: '/'-separated segments of unreserved/sub-delim characters. No ':' '*' (router syntax), no '%',
// '?', '#', ';', no dot-segments: a prefix must mean the same thing to the router and to the upstream.
const PREFIX_PATTERN = "^(/[A-Za-z0-9._~!$&'+,=@-]+)*/?$"
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/

export const Millis = (description: string) => Type.Integer({ minimum: 0, maximum: 2_147_483_647, description })

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

function normalizePrefix(prefix: string | undefined): string {
  if (prefix === undefined || prefix === '/' || prefix === '') return ''
  const trimmed = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix
  if (trimmed.split('/').some((segment) => segment === '.' || segment === '..')) {
    throw new ERR_INVALID_OPTIONS(`path prefix ${JSON.stringify(prefix)} contains a dot-segment`)
  }
  return trimmed
}

/** ERR_INVALID_OPTIONS for the option at `path`, its message prefixed with the dotted path. */
export function invalid(path: OptionPath, message: string, cause?: unknown): Error {
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

export function resolveRoute(route: RouteOptions, index: number): ResolvedRoute {
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

export function atPath<T>(path: OptionPath, fn: () => T): T {
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
export function commonMistakes(data: Record<string, unknown>): void {
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
