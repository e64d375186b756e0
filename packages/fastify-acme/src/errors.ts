// Every error this package raises, each with a stable code (FACME_*) that callers can switch on.
// Messages say what to fix; the original error, when there is one, is kept as `cause`.
import createError from '@fastify/error'

/** Pass `{ cause }` as the last argument to keep the underlying error. */
export type Cause = { cause: unknown }

export const ERR_INVALID_OPTIONS = createError<[string, Cause?]>(
  'FACME_INVALID_OPTIONS',
  'fastify-acme: invalid options: %s',
)
export const ERR_INVALID_NAME = createError<[string, string, Cause?]>(
  'FACME_INVALID_NAME',
  'fastify-acme: %s is not a name we can get a certificate for: %s',
)
export const ERR_DIRECTORY_REQUIRED = createError<[Cause?]>(
  'FACME_DIRECTORY_REQUIRED',
  "fastify-acme: `directory` is required: 'letsencrypt-staging' while testing, 'letsencrypt-production' when ready, or your CA's directory URL (production is never chosen silently)",
)
export const ERR_TOS_NOT_AGREED = createError<[string, Cause?]>(
  'FACME_TOS_NOT_AGREED',
  "fastify-acme: set `termsOfServiceAgreed: true` to accept the CA's terms of service (%s)",
)
export const ERR_NOT_HTTPS = createError<[Cause?]>(
  'FACME_NOT_HTTPS',
  'fastify-acme: this Fastify instance does not serve TLS, so it cannot answer TLS-ALPN-01 nor serve certificates; create it with `Fastify({ serverFactory: acmeServerFactory() })`',
)
export const ERR_SERVER_NOT_WIRED = createError<[Cause?]>(
  'FACME_SERVER_NOT_WIRED',
  "fastify-acme: the server was not created by acmeServerFactory(), so the plugin's certificates would never be served; pass `serverFactory: acmeServerFactory()` to Fastify()",
)
export const ERR_UNKNOWN_NAME = createError<[string, Cause?]>(
  'FACME_UNKNOWN_NAME',
  'fastify-acme: %s is not a managed name; add it to `names`',
  404,
)
export const ERR_ORDER_FAILED = createError<[string, string, Cause?]>(
  'FACME_ORDER_FAILED',
  'fastify-acme: certificate order for %s failed: %s',
  502,
)
export const ERR_NO_CHALLENGE = createError<[string, string, Cause?]>(
  'FACME_NO_CHALLENGE',
  'fastify-acme: no challenge for %s can be answered: %s',
  502,
)
export const ERR_CA_PROBLEM = createError<[string, string, Cause?]>(
  'FACME_CA_PROBLEM',
  'fastify-acme: the CA refused %s: %s',
  502,
)
export const ERR_RATE_LIMITED = createError<[string, string, Cause?]>(
  'FACME_RATE_LIMITED',
  'fastify-acme: the CA rate-limited %s: %s; the next attempt waits for its Retry-After',
  429,
)
export const ERR_VALIDATION_FAILED = createError<[string, string, Cause?]>(
  'FACME_VALIDATION_FAILED',
  'fastify-acme: the CA could not validate %s: %s',
  502,
)
export const ERR_CA_UNREACHABLE = createError<[string, string, Cause?]>(
  'FACME_CA_UNREACHABLE',
  'fastify-acme: the CA could not be reached during %s: %s',
  503,
)
export const ERR_CA_UNTRUSTED = createError<[string, string, Cause?]>(
  'FACME_CA_UNTRUSTED',
  "fastify-acme: the CA's TLS certificate is not trusted during %s (%s); if it is a private or test CA, add its root certificate (PEM) to the `caRoots` option",
  502,
)
export const ERR_NOT_A_DIRECTORY = createError<[string, string, Cause?]>(
  'FACME_NOT_A_DIRECTORY',
  'fastify-acme: %s is not an ACME directory: %s; check the `directory` option',
  502,
)
export const ERR_ORDER_TIMEOUT = createError<[string, number, Cause?]>(
  'FACME_ORDER_TIMEOUT',
  'fastify-acme: the order for %s did not finish within %d ms (orderTimeoutMs); it will be retried',
  504,
)
export const ERR_INTERRUPTED = createError<[string, Cause?]>('FACME_INTERRUPTED', 'fastify-acme: %s', 503)
export const ERR_STORAGE = createError<[string, string, Cause?]>(
  'FACME_STORAGE',
  'fastify-acme: storage %s failed: %s',
  500,
)
export const ERR_STORAGE_KEY = createError<[string, Cause?]>(
  'FACME_STORAGE_KEY',
  'fastify-acme: invalid storage key %s',
  500,
)
export const ERR_LOCK_TIMEOUT = createError<[string, Cause?]>(
  'FACME_LOCK_TIMEOUT',
  'fastify-acme: could not take the storage lock %s in time; another process may be ordering the same name',
  503,
)
export const ERR_CLOSED = createError<[Cause?]>(
  'FACME_CLOSED',
  'fastify-acme: the plugin is closing; the operation was abandoned',
  503,
)
export const ERR_BAD_CERTIFICATE = createError<[string, string, Cause?]>(
  'FACME_BAD_CERTIFICATE',
  'fastify-acme: certificate for %s is unusable: %s',
  500,
)
export const ERR_UNKNOWN_PROFILE = createError<[string, string, Cause?]>(
  'FACME_UNKNOWN_PROFILE',
  'fastify-acme: the CA does not offer the certificate profile %s (it offers: %s); set `profile` to one of those or leave it out',
  400,
)
export const ERR_INVALID_PROFILE = createError<[string, string, Cause?]>(
  'FACME_INVALID_PROFILE',
  'fastify-acme: the CA refused the certificate profile for %s: %s',
  400,
)
export const ERR_RENEWAL_INFO = createError<[string, string, Cause?]>(
  'FACME_RENEWAL_INFO',
  'fastify-acme: renewal information (ARI) for %s is unusable: %s; the ratio rule decides meanwhile',
  502,
)
export const ERR_ON_DEMAND_NO_POLICY = createError<[Cause?]>(
  'FACME_ON_DEMAND_NO_POLICY',
  'fastify-acme: `onDemand` needs a policy, or anyone could make this server order certificates for any name: give `onDemand.allow` (a function), `onDemand.ask` (a URL) or `onDemand.allowSuffixes`',
)
export const ERR_ON_DEMAND_DENIED = createError<[string, Cause?]>(
  'FACME_ON_DEMAND_DENIED',
  'fastify-acme: no certificate on demand for %s: the on-demand policy denied it',
  403,
)
export const ERR_ON_DEMAND_LIMIT = createError<[string, string, Cause?]>(
  'FACME_ON_DEMAND_LIMIT',
  'fastify-acme: no certificate on demand for %s now: the %s limit is reached',
  429,
)
export const ERR_ON_DEMAND_TIMEOUT = createError<[string, number, Cause?]>(
  'FACME_ON_DEMAND_TIMEOUT',
  'fastify-acme: the certificate for %s was not ready within %d ms; the handshake gave up (the order goes on)',
  504,
)
