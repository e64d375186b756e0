// The plugin's options: one TypeBox schema is the source of truth for validation, types and defaults.
// resolveOptions() turns user input into a fully-defaulted, canonical ResolvedOptions or throws a FACME_* error.
import { type Static, Type } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import type { DnsProvider } from './challenges/dns-01/provider.js'
import { ERR_DIRECTORY_REQUIRED, ERR_INVALID_OPTIONS, ERR_ON_DEMAND_NO_POLICY, ERR_TOS_NOT_AGREED } from './errors.js'
import { canonicalName } from './names.js'
import type { Storage } from './storage/index.js'

export const LETSENCRYPT_PRODUCTION = 'https://acme-v02.api.letsencrypt.org/directory'
export const LETSENCRYPT_STAGING = 'https://acme-staging-v02.api.letsencrypt.org/directory'

export const DEFAULT_SYNC_INTERVAL_MS = 300_000
export const DEFAULT_CACHE_DIR = '.acme-cache'
export const DEFAULT_KEY_TYPE = 'ecdsa-p256'
export const DEFAULT_CHALLENGES = ['tls-alpn-01'] as const
export const DEFAULT_RENEW_RATIO = 1 / 3
export const DEFAULT_CONCURRENCY = 8
export const DEFAULT_ORDER_TIMEOUT_MS = 5 * 60_000
export const DEFAULT_RETRY_MIN_MS = 60_000
export const DEFAULT_RETRY_MAX_MS = 24 * 3600_000
export const DEFAULT_RATE_LIMIT_ORDERS = 250
export const DEFAULT_RATE_LIMIT_WINDOW_MS = 3 * 3600_000
export const DEFAULT_TICKET_ROTATE_MS = 3600_000

export const KeyTypeSchema = Type.Union(
  [Type.Literal('ecdsa-p256'), Type.Literal('ecdsa-p384'), Type.Literal('rsa-2048'), Type.Literal('rsa-4096')],
  { description: 'Key type of the certificates (the account key is always ECDSA P-256)' },
)
export type KeyType = Static<typeof KeyTypeSchema>

export const ChallengeTypeSchema = Type.Union([
  Type.Literal('tls-alpn-01'),
  Type.Literal('http-01'),
  Type.Literal('dns-01'),
])
export type ChallengeType = Static<typeof ChallengeTypeSchema>

const EabSchema = Type.Object(
  {
    kid: Type.String({ minLength: 1 }),
    hmacKey: Type.String({ minLength: 1, pattern: '^[A-Za-z0-9_=-]+$', description: 'base64url HMAC key' }),
  },
  { additionalProperties: false, description: 'External account binding issued by the CA' },
)

export const DEFAULT_ISSUER_ATTEMPTS = 2

export const AcmeOptionsSchema = Type.Object(
  {
    names: Type.Array(
      Type.Union([
        Type.String({ minLength: 1, maxLength: 253 }),
        Type.Array(Type.String({ minLength: 1, maxLength: 253 }), { minItems: 1, maxItems: 100 }),
      ]),
      {
        minItems: 0,
        description:
          "DNS names to manage; each gets its own certificate, and a list of names (e.g. ['example.com', '*.example.com']) one certificate for all of them. IDNs are converted to punycode; wildcards need DNS-01.",
      },
    ),
    directory: Type.Optional(
      Type.String({
        minLength: 1,
        description: "'letsencrypt-production', 'letsencrypt-staging', or an ACME directory URL (https)",
      }),
    ),
    issuers: Type.Optional(
      Type.Array(
        Type.Object(
          {
            directory: Type.String({ minLength: 1, description: 'As `directory`' }),
            contact: Type.Optional(Type.Array(Type.String({ pattern: '^mailto:[^@\\s]+@[^@\\s]+$' }))),
            eab: Type.Optional(EabSchema),
          },
          { additionalProperties: false },
        ),
        {
          minItems: 1,
          maxItems: 8,
          description:
            'CAs to order from, in order (instead of `directory`): after `issuerAttempts` failed attempts with one (or at once on a refusal that cannot clear soon), the next is tried; every renewal starts with the first again',
        },
      ),
    ),
    issuerAttempts: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 100,
        description: 'Failed attempts with one issuer before the next (default 2)',
      }),
    ),
    termsOfServiceAgreed: Type.Boolean({ description: "Must be true: you accept the CA's terms of service" }),
    contact: Type.Optional(
      Type.Array(Type.String({ pattern: '^mailto:[^@\\s]+@[^@\\s]+$' }), {
        description: 'Account contacts, e.g. ["mailto:ops@example.com"]',
      }),
    ),
    cacheDir: Type.Optional(
      Type.String({ minLength: 1, description: `Folder for account and certificates (default ${DEFAULT_CACHE_DIR})` }),
    ),
    keyType: Type.Optional(KeyTypeSchema),
    challenges: Type.Optional(
      Type.Array(ChallengeTypeSchema, {
        minItems: 1,
        uniqueItems: true,
        description: 'Challenge types to answer, in order of preference (default ["tls-alpn-01"])',
      }),
    ),
    caRoots: Type.Optional(
      Type.Union([Type.String(), Type.Array(Type.String())], {
        description: "Extra PEM roots to trust for the ACME directory's HTTPS (private CAs, Pebble)",
      }),
    ),
    eab: Type.Optional(EabSchema),
    renewBeforeRatio: Type.Optional(
      Type.Number({
        exclusiveMinimum: 0,
        exclusiveMaximum: 1,
        description: 'Renew when this fraction of the lifetime remains (default 1/3)',
      }),
    ),
    concurrency: Type.Optional(Type.Integer({ minimum: 1, maximum: 64, description: 'Orders running at once' })),
    orderTimeoutMs: Type.Optional(Type.Integer({ minimum: 1000, description: 'Give up one order attempt after this' })),
    syncIntervalMs: Type.Optional(
      Type.Integer({
        minimum: 0,
        description:
          'With a storage that tells about changes (watch()): how often every stored certificate is read again, in ' +
          'case a notification from another instance was lost. 0: never. Default 300000',
      }),
    ),
    retryMinMs: Type.Optional(Type.Integer({ minimum: 1, description: 'First retry delay after a failed order' })),
    retryMaxMs: Type.Optional(Type.Integer({ minimum: 1, description: 'Longest retry delay (default one day)' })),
    rateLimit: Type.Optional(
      Type.Object(
        { orders: Type.Integer({ minimum: 1 }), windowMs: Type.Integer({ minimum: 1000 }) },
        { additionalProperties: false, description: 'At most `orders` new orders per account per `windowMs`' },
      ),
    ),
    profile: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 64,
        description:
          "ACME certificate profile to order (e.g. Let's Encrypt's 'tlsserver' or 'shortlived'); checked against the profiles the CA advertises, never sent to a CA that does not",
      }),
    ),
    dns01: Type.Optional(
      Type.Object(
        {
          resolvers: Type.Optional(
            Type.Array(Type.String({ minLength: 1 }), {
              description:
                "Recursive resolvers ('host' or 'host:port') for the propagation check; default the system's",
            }),
          ),
          propagationTimeoutMs: Type.Optional(
            Type.Integer({
              minimum: 100,
              description: 'How long to wait for every authoritative server (default 120 s)',
            }),
          ),
          propagationIntervalMs: Type.Optional(
            Type.Integer({ minimum: 10, description: 'Between checks (default 2 s)' }),
          ),
          nameserverPort: Type.Optional(
            Type.Integer({ minimum: 1, maximum: 65535, description: 'Port of the authoritative servers (default 53)' }),
          ),
          followCname: Type.Optional(
            Type.Boolean({
              description: 'Follow a CNAME on _acme-challenge.<name> (delegated validation; default true)',
            }),
          ),
        },
        { additionalProperties: false, description: 'DNS-01 options; the provider itself is `dns01.provider`' },
      ),
    ),
    onDemand: Type.Optional(
      Type.Object(
        {
          ask: Type.Optional(
            Type.String({
              pattern: '^https?://',
              description:
                'Asked GET <ask>?domain=<name> before a new name gets a certificate: 2xx allows, anything else denies',
            }),
          ),
          allowSuffixes: Type.Optional(
            Type.Array(Type.String({ pattern: '^\\*\\.[A-Za-z0-9.-]+$' }), {
              description: "Names allowed without asking, e.g. ['*.customers.example.com']",
            }),
          ),
          allowTtlMs: Type.Optional(
            Type.Integer({ minimum: 0, description: 'How long an allow is remembered (default 1 h)' }),
          ),
          denyTtlMs: Type.Optional(
            Type.Integer({ minimum: 0, description: 'How long a denial is remembered (default 10 min)' }),
          ),
          askTimeoutMs: Type.Optional(Type.Integer({ minimum: 100, description: 'Timeout of one ask (default 10 s)' })),
          handshakeTimeoutMs: Type.Optional(
            Type.Integer({
              minimum: 100,
              description: 'How long a first handshake waits for its certificate (default 30 s)',
            }),
          ),
          maxConcurrentOrders: Type.Optional(
            Type.Integer({ minimum: 1, description: 'On-demand orders at once (default 4)' }),
          ),
          ordersPerMinute: Type.Optional(
            Type.Integer({ minimum: 1, description: 'New on-demand orders per minute (default 10)' }),
          ),
          ordersPerMinutePerClient: Type.Optional(
            Type.Integer({ minimum: 1, description: 'New on-demand orders per minute per client address (default 3)' }),
          ),
          maxCertificates: Type.Optional(
            Type.Integer({ minimum: 1, description: 'Certificates obtained on demand, at most (default 1000)' }),
          ),
        },
        {
          additionalProperties: false,
          description: 'Certificates for names that arrive in handshakes (on-demand TLS)',
        },
      ),
    ),
    issueOnStart: Type.Optional(
      Type.Boolean({ description: 'Order missing certificates when the server starts listening (default true)' }),
    ),
    sessionTickets: Type.Optional(
      Type.Object(
        {
          shared: Type.Optional(
            Type.Boolean({
              description:
                'Keep the key in the storage, so every process sharing it resumes the sessions of the others (default true)',
            }),
          ),
          rotateAfterMs: Type.Optional(
            Type.Integer({
              minimum: 1000,
              maximum: 30 * 24 * 3600_000,
              description: `Replace the key when it is this old (default ${DEFAULT_TICKET_ROTATE_MS / 3600_000} h)`,
            }),
          ),
        },
        {
          additionalProperties: false,
          description:
            "TLS session-ticket key of the server: shared through the storage and rotated (default: Node's own, per process, never rotated)",
        },
      ),
    ),
  },
  { additionalProperties: false },
)

export type AcmeOptionsData = Static<typeof AcmeOptionsSchema>

/** Options accepted by the plugin: the schema's data plus objects that are not data. */
export interface FastifyAcmeOptions extends Omit<AcmeOptionsData, 'onDemand' | 'dns01'> {
  /** DNS-01: the provider that creates and removes TXT records, and the propagation check's options. */
  dns01?: NonNullable<AcmeOptionsData['dns01']> & { provider: DnsProvider }
  /** On-demand TLS: the data options of the schema, plus a decision function. */
  onDemand?: NonNullable<AcmeOptionsData['onDemand']> & {
    /** Decides whether `name` may get a certificate (after the cheap checks and the static suffix rules). */
    allow?: (name: string, context: { remoteAddress: string | undefined }) => boolean | Promise<boolean>
  }
  /** Storage backend; default: a FileStorage in `cacheDir`. */
  storage?: Storage
  /** Clock used for scheduling; tests pass a controllable one. */
  clock?: Clock
}

export interface Clock {
  now(): number
  setTimeout(fn: () => void, ms: number): { unref?(): unknown } | unknown
  clearTimeout(handle: unknown): void
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
}

export interface ResolvedIssuer {
  directoryUrl: string
  contact: string[]
  eab: { kid: string; hmacKey: string } | undefined
}

export interface ResolvedOptions {
  /** One per certificate: the certificate's first name (its key in storage and status). */
  names: string[]
  /** The names of certificates that cover more than their first name. */
  groups: Record<string, string[]>
  dns01: ResolvedDns01 | undefined
  /** The first issuer's directory. */
  directoryUrl: string
  /** Every CA to order from, in order (one unless `issuers` was given). */
  issuers: ResolvedIssuer[]
  issuerAttempts: number
  contact: string[]
  cacheDir: string
  keyType: KeyType
  challenges: ChallengeType[]
  caRoots: string[]
  eab: { kid: string; hmacKey: string } | undefined
  renewBeforeRatio: number
  concurrency: number
  orderTimeoutMs: number
  syncIntervalMs: number
  retryMinMs: number
  retryMaxMs: number
  rateLimit: { orders: number; windowMs: number }
  issueOnStart: boolean
  profile: string | undefined
  onDemand: ResolvedOnDemand | undefined
  sessionTickets: { shared: boolean; rotateAfterMs: number } | undefined
}

export interface ResolvedDns01 {
  provider: DnsProvider
  resolvers: string[] | undefined
  propagationTimeoutMs: number | undefined
  propagationIntervalMs: number | undefined
  nameserverPort: number | undefined
  followCname: boolean
}

export interface ResolvedOnDemand {
  allow: ((name: string, context: { remoteAddress: string | undefined }) => boolean | Promise<boolean>) | undefined
  ask: string | undefined
  allowSuffixes: string[]
  allowTtlMs: number
  denyTtlMs: number
  askTimeoutMs: number
  handshakeTimeoutMs: number
  maxConcurrentOrders: number
  ordersPerMinute: number
  ordersPerMinutePerClient: number
  maxCertificates: number
}

function resolveDirectory(directory: string | undefined): string {
  if (directory === undefined || directory === '') throw new ERR_DIRECTORY_REQUIRED()
  if (directory === 'letsencrypt-production') return LETSENCRYPT_PRODUCTION
  if (directory === 'letsencrypt-staging') return LETSENCRYPT_STAGING
  let url: URL
  try {
    url = new URL(directory)
  } catch {
    throw new ERR_INVALID_OPTIONS(
      `directory ${JSON.stringify(directory)} is neither 'letsencrypt-production', 'letsencrypt-staging' nor a URL`,
    )
  }
  if (url.protocol !== 'https:') throw new ERR_INVALID_OPTIONS(`directory must be an https URL, got ${url.protocol}`)
  return url.href
}

/** Validates user options and fills defaults. Throws FACME_* errors that name the option to fix. */
export function resolveOptions(input: unknown): ResolvedOptions {
  if (input === null || typeof input !== 'object') throw new ERR_INVALID_OPTIONS('options must be an object')
  const { storage: _storage, clock: _clock, ...data } = input as Record<string, unknown>
  // The DNS provider is not data either.
  let dnsProvider: DnsProvider | undefined
  if (data['dns01'] !== null && typeof data['dns01'] === 'object') {
    const { provider, ...dnsData } = data['dns01'] as Record<string, unknown>
    const p = provider as Partial<DnsProvider> | undefined
    if (typeof p?.present !== 'function' || typeof p.cleanup !== 'function') {
      throw new ERR_INVALID_OPTIONS('dns01.provider must implement present() and cleanup()')
    }
    dnsProvider = p as DnsProvider
    data['dns01'] = dnsData
  }
  // The decision function is not data: checked here, the rest of onDemand by the schema.
  let allow: ResolvedOnDemand['allow']
  if (data['onDemand'] !== null && typeof data['onDemand'] === 'object') {
    const { allow: given, ...onDemandData } = data['onDemand'] as Record<string, unknown>
    if (given !== undefined && typeof given !== 'function')
      throw new ERR_INVALID_OPTIONS('onDemand.allow must be a function')
    allow = given as ResolvedOnDemand['allow']
    data['onDemand'] = onDemandData
  }
  // Checked before the schema so that a missing directory or ToS gets its own, more helpful code.
  if (data['directory'] === undefined && data['issuers'] === undefined) throw new ERR_DIRECTORY_REQUIRED()
  if (data['directory'] !== undefined && data['issuers'] !== undefined) {
    throw new ERR_INVALID_OPTIONS('give either `directory` (one CA) or `issuers` (a list of CAs), not both')
  }
  if (data['termsOfServiceAgreed'] !== true && data['termsOfServiceAgreed'] !== undefined) {
    throw new ERR_TOS_NOT_AGREED(String(data['directory'] ?? 'each issuer'))
  }
  if (data['termsOfServiceAgreed'] === undefined)
    throw new ERR_TOS_NOT_AGREED(String(data['directory'] ?? 'each issuer'))
  if (!Value.Check(AcmeOptionsSchema, data)) {
    const first = Value.Errors(AcmeOptionsSchema, data).First()
    const where = first?.path ? first.path.replace(/^\//, '').replace(/\//g, '.') : '(root)'
    throw new ERR_INVALID_OPTIONS(`${where}: ${first?.message ?? 'does not match the schema'}`)
  }
  const opts = data as AcmeOptionsData
  const wildcard = { wildcard: dnsProvider !== undefined }
  const groups: Record<string, string[]> = {}
  const names: string[] = []
  const seen = new Set<string>()
  for (const given of opts.names) {
    const sans = [...new Set((typeof given === 'string' ? [given] : given).map((n) => canonicalName(n, wildcard)))]
    const key = sans[0]!
    // The same name twice is one name; a name in two certificates is a mistake.
    if (sans.length === 1 && seen.has(key) && !Object.values(groups).some((g) => g.includes(key))) continue
    for (const san of sans) {
      if (seen.has(san)) throw new ERR_INVALID_OPTIONS(`names: ${san} appears twice (one certificate per name)`)
      seen.add(san)
    }
    names.push(key)
    if (sans.length > 1) groups[key] = sans
  }
  if (names.length === 0 && opts.onDemand === undefined) {
    throw new ERR_INVALID_OPTIONS('names: give at least one name (or enable onDemand)')
  }
  let onDemand: ResolvedOnDemand | undefined
  if (opts.onDemand) {
    const d = opts.onDemand
    if (allow === undefined && d.ask === undefined && (d.allowSuffixes ?? []).length === 0)
      throw new ERR_ON_DEMAND_NO_POLICY()
    onDemand = {
      allow,
      ask: d.ask,
      allowSuffixes: d.allowSuffixes ?? [],
      allowTtlMs: d.allowTtlMs ?? 3600_000,
      denyTtlMs: d.denyTtlMs ?? 600_000,
      askTimeoutMs: d.askTimeoutMs ?? 10_000,
      handshakeTimeoutMs: d.handshakeTimeoutMs ?? 30_000,
      maxConcurrentOrders: d.maxConcurrentOrders ?? 4,
      ordersPerMinute: d.ordersPerMinute ?? 10,
      ordersPerMinutePerClient: d.ordersPerMinutePerClient ?? 3,
      maxCertificates: d.maxCertificates ?? 1000,
    }
  }
  const caRoots = opts.caRoots === undefined ? [] : Array.isArray(opts.caRoots) ? opts.caRoots : [opts.caRoots]
  for (const pem of caRoots) {
    if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new ERR_INVALID_OPTIONS('caRoots: each entry must be PEM')
  }
  const retryMinMs = opts.retryMinMs ?? DEFAULT_RETRY_MIN_MS
  const retryMaxMs = opts.retryMaxMs ?? DEFAULT_RETRY_MAX_MS
  if (retryMaxMs < retryMinMs) throw new ERR_INVALID_OPTIONS('retryMaxMs must be >= retryMinMs')
  const contact = opts.contact ?? []
  const issuers: ResolvedIssuer[] = opts.issuers
    ? opts.issuers.map((i) => ({
        directoryUrl: resolveDirectory(i.directory),
        contact: i.contact ?? contact,
        eab: i.eab,
      }))
    : [{ directoryUrl: resolveDirectory(opts.directory), contact, eab: opts.eab }]
  if (new Set(issuers.map((i) => i.directoryUrl)).size !== issuers.length) {
    throw new ERR_INVALID_OPTIONS('issuers: each directory may appear once')
  }
  const challenges = opts.challenges ?? (dnsProvider ? ['dns-01' as const] : [...DEFAULT_CHALLENGES])
  if (challenges.includes('dns-01') && !dnsProvider) {
    throw new ERR_INVALID_OPTIONS('challenges: dns-01 needs `dns01.provider` (a DNS provider)')
  }
  if ([...seen].some((n) => n.startsWith('*.')) && !challenges.includes('dns-01')) {
    throw new ERR_INVALID_OPTIONS('challenges: a wildcard name needs dns-01 among the challenges')
  }
  const d = opts.dns01
  return {
    names,
    groups,
    dns01: dnsProvider
      ? {
          provider: dnsProvider,
          resolvers: d?.resolvers,
          propagationTimeoutMs: d?.propagationTimeoutMs,
          propagationIntervalMs: d?.propagationIntervalMs,
          nameserverPort: d?.nameserverPort,
          followCname: d?.followCname ?? true,
        }
      : undefined,
    directoryUrl: issuers[0]!.directoryUrl,
    issuers,
    issuerAttempts: opts.issuerAttempts ?? DEFAULT_ISSUER_ATTEMPTS,
    contact,
    cacheDir: opts.cacheDir ?? DEFAULT_CACHE_DIR,
    keyType: opts.keyType ?? DEFAULT_KEY_TYPE,
    challenges,
    caRoots,
    eab: opts.eab,
    renewBeforeRatio: opts.renewBeforeRatio ?? DEFAULT_RENEW_RATIO,
    concurrency: opts.concurrency ?? DEFAULT_CONCURRENCY,
    orderTimeoutMs: opts.orderTimeoutMs ?? DEFAULT_ORDER_TIMEOUT_MS,
    syncIntervalMs: opts.syncIntervalMs ?? DEFAULT_SYNC_INTERVAL_MS,
    retryMinMs,
    retryMaxMs,
    rateLimit: opts.rateLimit ?? { orders: DEFAULT_RATE_LIMIT_ORDERS, windowMs: DEFAULT_RATE_LIMIT_WINDOW_MS },
    issueOnStart: opts.issueOnStart ?? true,
    profile: opts.profile,
    onDemand,
    sessionTickets: opts.sessionTickets
      ? {
          shared: opts.sessionTickets.shared ?? true,
          rotateAfterMs: opts.sessionTickets.rotateAfterMs ?? DEFAULT_TICKET_ROTATE_MS,
        }
      : undefined,
  }
}
