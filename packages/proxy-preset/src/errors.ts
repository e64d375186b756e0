// Every error this package raises, each with a stable code (FPROXY_*) that callers can switch on. Messages say what
// to fix; the underlying error, when there is one, is kept as `cause`. Errors with a status code are also what a
// client receives (Fastify serialises them as { statusCode, code, error, message }).
import createError from '@fastify/error'

/** Pass `{ cause }` as the last argument to keep the underlying error. */
export type Cause = { cause: unknown }

// --- configuration (thrown by createProxy / startProxy) ---------------------------------------------------------

export const ERR_INVALID_OPTIONS = createError<[string, Cause?]>(
  'FPROXY_INVALID_OPTIONS',
  'proxy-preset: invalid options: %s',
)
export const ERR_INVALID_HOST = createError<[string, string, Cause?]>(
  'FPROXY_INVALID_HOST',
  'proxy-preset: route host %s is not usable: %s',
)
export const ERR_DUPLICATE_ROUTE = createError<[string, Cause?]>(
  'FPROXY_DUPLICATE_ROUTE',
  'proxy-preset: two routes have the same host and path (%s); merge them or give one a different path',
)
export const ERR_WILDCARD_NEEDS_CERTIFICATE = createError<[string, Cause?]>(
  'FPROXY_WILDCARD_NEEDS_CERTIFICATE',
  'proxy-preset: %s is a wildcard host: ACME over TLS-ALPN-01 or HTTP-01 cannot issue wildcard certificates; configure `acme.dns01` (a DNS provider) or add a `certificates` entry covering it (or a `defaultCertificate`)',
)
export const ERR_ON_DEMAND_ROUTE = createError<[Cause?]>(
  'FPROXY_ON_DEMAND_ROUTE',
  "proxy-preset: a route with host '*' serves hosts that get certificates on demand; configure `acme.onDemand` (ask, allow or allowSuffixes)",
)
export const ERR_NO_CERTIFICATE = createError<[string, Cause?]>(
  'FPROXY_NO_CERTIFICATE',
  'proxy-preset: no certificate would be served for %s; configure `acme`, a `certificates` entry covering it, or a `defaultCertificate`',
)
export const ERR_CERTIFICATE_CONFLICT = createError<[string, Cause?]>(
  'FPROXY_CERTIFICATE_CONFLICT',
  'proxy-preset: %s is listed in `acme.names` and covered by a manual `certificates` entry; choose one',
)
export const ERR_LISTEN_FAILED = createError<[string, string, string, Cause?]>(
  'FPROXY_LISTEN_FAILED',
  'proxy-preset: the %s listener cannot listen on %s: %s',
)
export const ERR_CONFIG_FILE = createError<[string, Cause?]>('FPROXY_CONFIG_FILE', 'proxy-preset: %s')
export const ERR_RELOAD_REFUSED = createError<[string, Cause?]>(
  'FPROXY_RELOAD_REFUSED',
  'proxy-preset: reload refused, the running configuration is kept: %s',
)

/** Where in the options an error is (`['routes', 1, 'upstream']`), for a configuration file to point at a line. */
export const kOptionPath = Symbol.for('@autotls/proxy-preset.option-path')
export type OptionPath = Array<string | number>

/** Attaches an option path to an error (kept if one is already there: the innermost is the most precise). */
export function atOption<E extends Error>(error: E, path: OptionPath): E {
  const target = error as E & { [kOptionPath]?: OptionPath; optionPath?: string }
  if (target[kOptionPath] === undefined) {
    target[kOptionPath] = path
    target.optionPath = path.join('.')
  }
  return error
}

/** The option path attached by atOption(), if any. */
export function optionPathOf(error: unknown): OptionPath | undefined {
  return (error as { [kOptionPath]?: OptionPath } | null)?.[kOptionPath]
}
export const ERR_BAD_CERTIFICATE = createError<[string, string, Cause?]>(
  'FPROXY_BAD_CERTIFICATE',
  'proxy-preset: certificate %s refused: %s',
)

// --- per request (sent to clients) ---------------------------------------------------------------------------

export const ERR_UNKNOWN_HOST = createError<[string, Cause?]>(
  'FPROXY_UNKNOWN_HOST',
  'No site is configured for host %s on this proxy',
  421,
)
export const ERR_NO_ROUTE = createError<[string, string, Cause?]>('FPROXY_NO_ROUTE', 'No route for %s on host %s', 404)
export const ERR_BAD_PATH = createError<[string, Cause?]>('FPROXY_BAD_PATH', 'Request path refused: %s', 400)
export const ERR_BODY_TOO_LARGE = createError<[number, Cause?]>(
  'FPROXY_BODY_TOO_LARGE',
  'Request body larger than %d bytes',
  413,
)
export const ERR_HEADERS_TOO_LARGE = createError<[number, Cause?]>(
  'FPROXY_HEADERS_TOO_LARGE',
  'Request headers larger than %d bytes',
  431,
)
export const ERR_WEBSOCKET_DISABLED = createError<[string, Cause?]>(
  'FPROXY_WEBSOCKET_DISABLED',
  'WebSocket upgrades are not enabled for %s',
  400,
)
export const ERR_UPSTREAM_UNAVAILABLE = createError<[string, string, Cause?]>(
  'FPROXY_UPSTREAM_UNAVAILABLE',
  'The upstream for %s is unavailable (%s)',
  502,
)
export const ERR_UPSTREAM_TIMEOUT = createError<[string, Cause?]>(
  'FPROXY_UPSTREAM_TIMEOUT',
  'The upstream for %s did not answer in time',
  504,
)
export const ERR_SHUTTING_DOWN = createError<[Cause?]>('FPROXY_SHUTTING_DOWN', 'The proxy is shutting down', 503)

// --- workers (autotls run with `workers`) --------------------------------------------------------------------------

export const ERR_WORKER_START = createError<[string, Cause?]>(
  'FPROXY_WORKER_START',
  'proxy-preset: a worker exited before the proxy served (%s); its own log line above says why',
)
export const ERR_WORKER_CRASH_LOOP = createError<[number, number, Cause?]>(
  'FPROXY_WORKER_CRASH_LOOP',
  'proxy-preset: workers crashed %d times within %d ms of starting; stopping instead of restarting them forever (see their log lines above)',
)
