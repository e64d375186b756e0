// The only file that talks to acme-client. Everything ACME-protocol-shaped goes through here, so upgrading,
// patching or replacing the library touches one file.
//
// acme-client keeps one process-wide axios instance. We hook it once, and scope our behaviour to our own calls
// with AsyncLocalStorage: inside a call we run (1) requests carry our AbortSignal, so close() cancels them,
// (2) acme-client's own retry loop is off (it sleeps the full Retry-After, uncapped), so the manager decides when
// to retry, and (3) the last error response's status, Retry-After and problem type are captured, because
// acme-client's thrown errors carry only a message. Every failure leaves this file as a coded FACME_* error with
// those facts as properties (errors.ts: CaFacts).
//
// The order is driven step by step by lifecycle/order.ts (new or fetched order, authorizations, finalize,
// download), so that each step's result can be stored before the next one: an order interrupted by a crash is
// resumed, not ordered again. Challenges are made answerable through a presenter object passed in.
import { AsyncLocalStorage } from 'node:async_hooks'
import { generateKeyPair } from 'node:crypto'
import { channel } from 'node:diagnostics_channel'
import { Agent } from 'node:https'
import { createRequire } from 'node:module'
import { setTimeout as sleep } from 'node:timers/promises'
import { createSecureContext, rootCertificates } from 'node:tls'
import type * as acme from 'acme-client'
import { type CaFacts, withFacts } from './error-facts.js'
import {
  ERR_CA_PROBLEM,
  ERR_CA_UNREACHABLE,
  ERR_CA_UNTRUSTED,
  ERR_INVALID_PROFILE,
  ERR_NO_CHALLENGE,
  ERR_NOT_A_DIRECTORY,
  ERR_RATE_LIMITED,
  ERR_RENEWAL_INFO,
  ERR_VALIDATION_FAILED,
} from './errors.js'
import type { ChallengeType, KeyType } from './options.js'

/**
 * acme-client, loaded at its first use rather than with this module: it and axios under it hold about 18 MiB of RSS
 * (measured in BENCHMARKS.md), which a server whose certificates are all cached and valid, or that has only manual
 * certificates, never needs. acme-client is CommonJS, so the load stays synchronous.
 */
let lib: typeof acme | undefined
function acmeLib(): typeof acme {
  lib ??= createRequire(import.meta.url)('acme-client') as typeof acme
  return lib
}

interface CallInfo {
  status?: number | undefined
  problemType?: string | undefined
  retryAfterMs?: number | undefined
  networkCode?: string | undefined
  networkMessage?: string | undefined
}

interface CallContext {
  signal: AbortSignal
  info: CallInfo
  /** The per-request timeout of the last request, to tell a timeout from other failures. */
  requestTimeout?: AbortSignal
}

/** One request to the CA gives up after this (the whole order has its own, longer timeout). */
const REQUEST_TIMEOUT_MS = 30_000

const als = new AsyncLocalStorage<CallContext>()
const extraRoots = new Set<string>()
let hooked = false

/** Parses Retry-After (delta seconds or HTTP date) into ms from now. */
export function parseRetryAfter(value: unknown, now = Date.now()): number | undefined {
  if (typeof value !== 'string' || value.trim() === '') return undefined
  const trimmed = value.trim()
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000
  const at = Date.parse(trimmed)
  return Number.isNaN(at) ? undefined : Math.max(0, at - now)
}

/**
 * The HTTPS agent for the CA. acme-client's interceptor loses network errors when its retries are off (it throws a
 * TypeError instead), so the socket's own error is recorded in the current call's context here.
 */
class CaAgent extends Agent {
  override createConnection(...args: Parameters<Agent['createConnection']>): ReturnType<Agent['createConnection']> {
    const socket = super.createConnection(...args)
    const ctx = als.getStore()
    socket?.once('error', (err: NodeJS.ErrnoException) => {
      if (ctx) ctx.info = { ...ctx.info, networkCode: err.code ?? 'ENETWORK', networkMessage: err.message }
    })
    return socket
  }
}

function installAgent(): void {
  // One secure context built once: passing `ca` instead would parse every root again for each new connection.
  const secureContext = createSecureContext({ ca: [...rootCertificates, ...extraRoots] })
  acmeLib().axios.defaults.httpsAgent = new CaAgent({ secureContext, keepAlive: true })
}

function hookAxios(): void {
  if (hooked) return
  hooked = true
  installAgent()
  const instance = acmeLib().axios
  const settings = (instance.defaults as unknown as { acmeSettings: Record<string, number> }).acmeSettings
  const defaultAttempts = settings['retryMaxAttempts'] ?? 5
  // Other users of acme-client in this process keep its default retry behaviour.
  Object.defineProperty(settings, 'retryMaxAttempts', {
    configurable: true,
    enumerable: true,
    get: () => (als.getStore() ? 0 : defaultAttempts),
  })
  instance.interceptors.request.use((config) => {
    const ctx = als.getStore()
    if (ctx) {
      ctx.signal.throwIfAborted()
      ctx.requestTimeout = AbortSignal.timeout(REQUEST_TIMEOUT_MS)
      config.signal = AbortSignal.any([ctx.signal, ctx.requestTimeout])
    }
    return config
  })
  instance.interceptors.response.use(
    (response) => {
      const ctx = als.getStore()
      if (ctx && response.status >= 400) {
        const data = response.data as { type?: unknown } | undefined
        ctx.info = {
          status: response.status,
          problemType: typeof data?.type === 'string' ? data.type : undefined,
          retryAfterMs: parseRetryAfter(response.headers['retry-after']),
        }
      }
      return response
    },
    (error: { code?: string; message?: string; response?: { status: number } }) => {
      const ctx = als.getStore()
      if (ctx && !error.response && ctx.info.networkCode === undefined && typeof error.code === 'string') {
        ctx.info = { networkCode: error.code, networkMessage: error.message }
      }
      return Promise.reject(error)
    },
  )
}

/** Adds PEM roots trusted for every ACME directory this process talks to (private CAs, Pebble in tests). */
export function trustRoots(pems: string[]): void {
  let changed = false
  for (const pem of pems) {
    if (!extraRoots.has(pem)) {
      extraRoots.add(pem)
      changed = true
    }
  }
  // One agent for the shared axios instance: the system roots plus every extra root registered so far.
  if (changed && hooked) installAgent()
}

/** TLS verification failures: the CA's certificate is not trusted by this process (the fix is `caRoots`). */
const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_UNTRUSTED',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
])

export const RATE_LIMITED = 'urn:ietf:params:acme:error:rateLimited'
export const INVALID_PROFILE = 'urn:ietf:params:acme:error:invalidProfile'

/** The coded error for a failed CA exchange `what`, from what the hooks captured. */
function classify(what: string, message: string, info: CallInfo, validation: boolean, cause: unknown): Error {
  const facts: CaFacts = {
    problemType: info.problemType,
    status: info.status,
    retryAfterMs: info.retryAfterMs,
    networkCode: info.networkCode,
    validation: validation || undefined,
  }
  const detail = `${what}: ${message}`
  let err: Error
  if (info.networkCode !== undefined && UNTRUSTED.has(info.networkCode)) {
    err = new ERR_CA_UNTRUSTED(what, info.networkCode, { cause })
  } else if (info.networkCode !== undefined && info.status === undefined) {
    err = new ERR_CA_UNREACHABLE(what, message, { cause })
  } else if (validation) {
    err = new ERR_VALIDATION_FAILED(what.replace(/^[a-z0-9-]+ (validation|challenge) for /, ''), detail, { cause })
  } else if (info.status === 429 || info.problemType === RATE_LIMITED) {
    err = new ERR_RATE_LIMITED(what, message, { cause })
  } else if (info.problemType === INVALID_PROFILE) {
    err = new ERR_INVALID_PROFILE(what, message, { cause })
  } else {
    err = new ERR_CA_PROBLEM(what, message, { cause })
  }
  return withFacts(err, facts)
}

/**
 * Every CA exchange, for metrics: `{ what, ms, ok, code? }` is published on this diagnostics channel (Node's
 * `diagnostics_channel`, so a subscriber such as proxy-preset's /metrics needs no hook into the plugin, and nothing
 * is built when nobody listens). `what` is the step (`new order`, `finalize`, `renewal info`, ...).
 */
export const ACME_REQUEST_CHANNEL = 'autotls:acme-request'
const requests = channel(ACME_REQUEST_CHANNEL)

/** Runs one CA exchange with our signal and error capture; turns failures into coded errors (see classify). */
async function call<T>(signal: AbortSignal, what: string, fn: () => Promise<T>, validation = false): Promise<T> {
  if (!requests.hasSubscribers) return run(signal, what, fn, validation)
  const started = performance.now()
  try {
    const result = await run(signal, what, fn, validation)
    requests.publish({ what: stepOf(what), ms: performance.now() - started, ok: true })
    return result
  } catch (err) {
    const code = (err as { code?: unknown }).code
    requests.publish({ what: stepOf(what), ms: performance.now() - started, ok: false, code })
    throw err
  }
}

/** The step of an exchange, without the name it was for (a bounded label set). */
function stepOf(what: string): string {
  const at = what.indexOf(' for ')
  return at < 0 ? what : what.slice(0, at)
}

async function run<T>(signal: AbortSignal, what: string, fn: () => Promise<T>, validation: boolean): Promise<T> {
  hookAxios()
  const ctx: CallContext = { signal, info: {} }
  return als.run(ctx, async () => {
    try {
      signal.throwIfAborted()
      return await fn()
    } catch (err) {
      if (signal.aborted) throw signal.reason
      if (
        (err as { code?: unknown }).code !== undefined &&
        String((err as { code?: unknown }).code).startsWith('FACME_')
      )
        throw err
      let message = err instanceof Error ? err.message : String(err)
      if (ctx.info.networkCode === undefined && ctx.requestTimeout?.aborted) {
        ctx.info = { networkCode: 'ETIMEDOUT', networkMessage: `no answer from the CA within ${REQUEST_TIMEOUT_MS} ms` }
      }
      if (ctx.info.networkCode !== undefined && ctx.info.status === undefined) {
        message = `${ctx.info.networkCode}: ${ctx.info.networkMessage ?? 'network error'}`
      }
      // acme-client reports an invalid authorization as its whole JSON; keep the challenge's problem only.
      const problem = challengeProblem(message)
      if (problem) {
        message = `${problem.type}: ${problem.detail}`
        ctx.info = { ...ctx.info, problemType: problem.type }
      }
      // Only a CA verdict ("invalid") is a failed validation; a network error or 5xx while polling is not.
      const verdict = validation && ctx.info.status === undefined && ctx.info.networkCode === undefined
      throw classify(what, message, ctx.info, verdict, err)
    }
  })
}

/** What the plugin needs from a CA's directory; fetched once per issuer before its account is used. */
export interface DirectoryInfo {
  url: string
  /** The ACME Renewal Information endpoint (RFC 9773), when the CA offers it. */
  renewalInfo: string | undefined
  /** Certificate profiles the CA advertises (name -> description), when it does. */
  profiles: Record<string, string>
  termsOfService: string | undefined
}

/**
 * Reads and checks a directory: a URL that answers but is no ACME directory (a web page, a wrong path) fails here
 * with FACME_NOT_A_DIRECTORY instead of deep inside the first order.
 */
export async function fetchDirectory(url: string, signal: AbortSignal): Promise<DirectoryInfo> {
  const response = await call(signal, 'directory', () =>
    acmeLib().axios.get(url, {
      validateStatus: () => true,
      responseType: 'text',
      transformResponse: (x: unknown) => x,
    }),
  )
  if (response.status !== 200) {
    throw withFacts(new ERR_NOT_A_DIRECTORY(url, `it answered HTTP ${response.status}`), { status: response.status })
  }
  let body: Record<string, unknown>
  try {
    body = JSON.parse(String(response.data)) as Record<string, unknown>
  } catch {
    throw new ERR_NOT_A_DIRECTORY(url, 'its answer is not JSON')
  }
  const missing = ['newNonce', 'newAccount', 'newOrder'].filter((k) => typeof body?.[k] !== 'string')
  if (missing.length > 0) throw new ERR_NOT_A_DIRECTORY(url, `it has no ${missing.join(', ')}`)
  const meta = (typeof body['meta'] === 'object' && body['meta'] !== null ? body['meta'] : {}) as Record<
    string,
    unknown
  >
  const profiles: Record<string, string> = {}
  if (typeof meta['profiles'] === 'object' && meta['profiles'] !== null) {
    for (const [k, v] of Object.entries(meta['profiles'])) profiles[k] = String(v)
  }
  return {
    url,
    renewalInfo: typeof body['renewalInfo'] === 'string' ? body['renewalInfo'] : undefined,
    profiles,
    termsOfService: typeof meta['termsOfService'] === 'string' ? meta['termsOfService'] : undefined,
  }
}

/** A CA's renewal information for one certificate (RFC 9773). */
export interface RenewalInfo {
  /** The suggested window, ms since the epoch; start < end. */
  start: number
  end: number
  explanationURL: string | undefined
  /** The CA's Retry-After, in ms from now, when it sent one. */
  retryAfterMs: number | undefined
}

/**
 * GETs `<renewalInfo>/<certId>` (unauthenticated). A 4xx, a malformed object or a window whose end is not after its
 * start throws FACME_RENEWAL_INFO (a long-term error: ask again in hours); 5xx and network failures throw the usual
 * coded errors (temporary: back off).
 */
export async function fetchRenewalInfo(
  renewalInfoUrl: string,
  certId: string,
  signal: AbortSignal,
): Promise<RenewalInfo> {
  const url = `${renewalInfoUrl.replace(/\/+$/, '')}/${certId}`
  const response = await call(signal, 'renewal info', () =>
    acmeLib().axios.get(url, {
      validateStatus: () => true,
      responseType: 'text',
      transformResponse: (x: unknown) => x,
    }),
  )
  const retryAfterMs = parseRetryAfter(response.headers['retry-after'])
  if (response.status >= 500) {
    throw withFacts(new ERR_CA_PROBLEM('renewal info', `HTTP ${response.status}`), {
      status: response.status,
      retryAfterMs,
    })
  }
  const unusable = (why: string) =>
    withFacts(new ERR_RENEWAL_INFO(certId, why), { status: response.status, retryAfterMs })
  if (response.status !== 200) throw unusable(`the CA answered HTTP ${response.status}`)
  let body: { suggestedWindow?: { start?: unknown; end?: unknown }; explanationURL?: unknown }
  try {
    body = JSON.parse(String(response.data))
  } catch {
    throw unusable('the answer is not JSON')
  }
  const start = Date.parse(String(body?.suggestedWindow?.start))
  const end = Date.parse(String(body?.suggestedWindow?.end))
  if (Number.isNaN(start) || Number.isNaN(end)) throw unusable('no suggestedWindow with start and end')
  if (end <= start) throw unusable('the suggested window ends before it starts')
  return {
    start,
    end,
    explanationURL: typeof body.explanationURL === 'string' ? body.explanationURL : undefined,
    retryAfterMs,
  }
}

function challengeProblem(message: string): { type: string; detail: string } | undefined {
  if (!message.startsWith('{')) return undefined
  try {
    const authz = JSON.parse(message) as { challenges?: Array<{ error?: { type?: string; detail?: string } }> }
    const error = authz.challenges?.find((c) => c.error)?.error
    return error?.type ? { type: error.type, detail: error.detail ?? '' } : undefined
  } catch {
    return undefined
  }
}

export async function generateCertificateKey(keyType: KeyType): Promise<string> {
  const encoding = {
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  } as const
  const pair =
    keyType === 'ecdsa-p256' || keyType === 'ecdsa-p384'
      ? await new Promise<string>((resolve, reject) =>
          generateKeyPair(
            'ec',
            { namedCurve: keyType === 'ecdsa-p256' ? 'P-256' : 'P-384', ...encoding },
            (err, _pub, key) => (err ? reject(err) : resolve(key as unknown as string)),
          ),
        )
      : await new Promise<string>((resolve, reject) =>
          generateKeyPair(
            'rsa',
            { modulusLength: keyType === 'rsa-2048' ? 2048 : 4096, ...encoding },
            (err, _pub, key) => (err ? reject(err) : resolve(key as unknown as string)),
          ),
        )
  return pair
}

/** The key of TLS-ALPN-01 challenge certificates. RSA because acme-client's challenge certificate has key usages
 * that OpenSSL refuses with an ECDSA key under TLS 1.2 (see NOTES-TLS-ALPN.md). */
export function generateChallengeKey(): Promise<string> {
  return generateCertificateKey('rsa-2048')
}

export interface AccountRecord {
  directoryUrl: string
  keyPem: string
  url: string
  contact: string[]
  createdAt: string
}

export interface AccountParams {
  directoryUrl: string
  contact: string[]
  eab: { kid: string; hmacKey: string } | undefined
  signal: AbortSignal
}

function makeClient(
  directoryUrl: string,
  keyPem: string,
  accountUrl?: string,
  eab?: AccountParams['eab'],
): acme.Client {
  const client = new (acmeLib().Client)({
    directoryUrl,
    accountKey: keyPem,
    ...(accountUrl ? { accountUrl } : {}),
    ...(eab ? { externalAccountBinding: eab } : {}),
    // One status check per call: we poll ourselves (pollUntilValid) so that close() can cut a wait short.
    backoffAttempts: 1,
  })
  // badNonce is normal (nonces expire, CAs reject some on purpose); acme-client's 5 retries per request make a
  // 10-request order fail a few % of the time at high rejection rates.
  ;(client as unknown as { http: { maxBadNonceRetries: number } }).http.maxBadNonceRetries = 20
  return client
}

/** Creates a new account (new ECDSA P-256 key). The record must be stored before it is used for orders. */
export const ACCOUNT_DOES_NOT_EXIST = 'urn:ietf:params:acme:error:accountDoesNotExist'

/**
 * Registers an account. With `keyPem`, the existing key is registered again (a CA that lost the account, e.g. a
 * test CA restarted, or one that returns the existing account for a known key).
 */
export async function createAccount(params: AccountParams, existingKeyPem?: string): Promise<AccountRecord> {
  const keyPem = existingKeyPem ?? (await generateCertificateKey('ecdsa-p256'))
  const client = makeClient(params.directoryUrl, keyPem, undefined, params.eab)
  await call(params.signal, 'account registration', () =>
    client.createAccount({
      termsOfServiceAgreed: true,
      ...(params.contact.length > 0 ? { contact: params.contact } : {}),
    }),
  )
  return {
    directoryUrl: params.directoryUrl,
    keyPem,
    url: client.getAccountUrl(),
    contact: params.contact,
    createdAt: new Date().toISOString(),
  }
}

const DEACTIVATE_TIMEOUT_MS = 3_000
const POLL_MIN_MS = 250
const POLL_MAX_MS = 2_000
const PENDING = 'Operation is pending or processing'

/**
 * Polls an authorization or order until it is valid (or invalid: a CA verdict, thrown as such). The waits between
 * polls (250 ms doubling to 2 s, or the CA's Retry-After when shorter than 10 s) end at once when `signal` aborts,
 * so nothing of ours outlives close(). The order's own timeout bounds the whole wait.
 */
async function pollUntilValid<T extends acme.Order | acme.Authorization>(
  signal: AbortSignal,
  what: string,
  client: acme.Client,
  item: T,
  validation = false,
): Promise<T> {
  let delay = POLL_MIN_MS
  for (;;) {
    try {
      return await call(signal, what, () => client.waitForValidStatus(item), validation)
    } catch (err) {
      if (!(err instanceof Error) || !err.message.endsWith(PENDING)) throw err
      const retryAfterMs = (err as CaFacts).retryAfterMs
      const wait = retryAfterMs !== undefined && retryAfterMs < 10_000 ? Math.max(retryAfterMs, delay) : delay
      await sleep(wait, undefined, { signal })
      delay = Math.min(POLL_MAX_MS, delay * 2)
    }
  }
}

/** A challenge to make answerable before the CA validates it. */
export interface ChallengeToPresent {
  /** The identifier validated: `example.com` (also for `*.example.com`, see `wildcard`). */
  name: string
  /** The authorization is for the wildcard `*.<name>` (DNS-01 only). */
  wildcard?: boolean
  type: ChallengeType
  token: string
  keyAuthorization: string
  /** For TLS-ALPN-01: the self-signed challenge certificate and its key. */
  tlsAlpn?: { key: string; cert: string }
}

/**
 * How an order's challenges are answered, passed in by the caller: the types it can answer now (in order of
 * preference) and where to put a challenge while the CA validates it.
 */
export interface ChallengePresenter {
  readonly types: readonly ChallengeType[]
  /** The RSA key of TLS-ALPN-01 challenge certificates; awaited only when such a challenge is presented. */
  readonly challengeKey: Promise<string>
  /** Makes the challenge answerable (for DNS-01: the record is published and has propagated). */
  present(challenge: ChallengeToPresent, signal: AbortSignal): void | Promise<void>
  remove(challenge: ChallengeToPresent): void | Promise<void>
}

export type OrderStatus = 'pending' | 'ready' | 'processing' | 'valid' | 'invalid'

/** An order at the CA, as last seen. Opaque beyond these fields: only this file reads the rest. */
export interface AcmeOrder {
  readonly url: string
  readonly status: OrderStatus
  /** When the CA will forget the order, if it said. */
  readonly expires: string | undefined
}

interface OrderWithData extends AcmeOrder {
  readonly data: acme.Order
}

const ORDER_STATUSES = new Set(['pending', 'ready', 'processing', 'valid', 'invalid'])

function wrapOrder(order: acme.Order): OrderWithData {
  // Anything else a CA reports (Pebble says "deactivated" once its authorizations were) is an order that is over.
  const status = (ORDER_STATUSES.has(order.status) ? order.status : 'invalid') as OrderStatus
  return { url: order.url, status, expires: order.expires, data: order }
}

/** Stopped by the plugin (close(), a lost lock), not failed: the order stays resumable, so nothing is undone. */
function stoppedByUs(signal: AbortSignal): boolean {
  const code = signal.aborted ? (signal.reason as { code?: unknown } | undefined)?.code : undefined
  return typeof code === 'string' && code.startsWith('FACME_')
}

/** Extra newOrder fields (RFC 9773 `replaces`, the profiles draft's `profile`), sent as given. */
export interface NewOrderExtras {
  replaces?: string
  profile?: string
}

/** One account's conversation with its CA, step by step. */
export class AcmeSession {
  readonly #client: acme.Client
  readonly #log: (step: string, detail?: Record<string, unknown>) => void

  constructor(
    account: AccountRecord,
    eab: AccountParams['eab'],
    log: (step: string, detail?: Record<string, unknown>) => void,
  ) {
    this.#client = makeClient(account.directoryUrl, account.keyPem, account.url, eab)
    this.#log = log
  }

  /** Creates an order for `names` (the first is the certificate's common name). */
  async newOrder(signal: AbortSignal, names: readonly string[], extras: NewOrderExtras = {}): Promise<AcmeOrder> {
    const payload = { identifiers: names.map((value) => ({ type: 'dns', value })), ...extras }
    // acme-client posts the payload unchanged; its type does not know the newer fields.
    const order = await call(signal, 'new order', () =>
      this.#client.createOrder(payload as Parameters<acme.Client['createOrder']>[0]),
    )
    this.#log('order created', { orderUrl: order.url, status: order.status })
    return wrapOrder(order)
  }

  /** The order at `url` as the CA sees it now, or undefined when the CA no longer has it (404 or 410). */
  async fetchOrder(signal: AbortSignal, url: string): Promise<AcmeOrder | undefined> {
    try {
      const order = await call(signal, 'order lookup', () => this.#client.getOrder({ url } as acme.Order))
      return wrapOrder({ ...order, url })
    } catch (err) {
      const status = (err as CaFacts).status
      if (status === 404 || status === 410) return undefined
      throw err
    }
  }

  /**
   * Answers every pending authorization of `order` (all concurrently; reused ones need nothing). On failure,
   * the authorizations still pending are deactivated so none lingers on the account; when the plugin itself stopped
   * the work (close(), a lost lock) they are left for the order to be resumed.
   */
  async authorize(signal: AbortSignal, order: AcmeOrder, presenter: ChallengePresenter): Promise<void> {
    const authzs = await call(signal, 'authorizations', () => this.#client.getAuthorizations(dataOf(order)))
    try {
      await Promise.all(authzs.map((authz) => this.#completeAuthorization(signal, authz, presenter)))
    } catch (err) {
      if (stoppedByUs(signal)) throw err
      // Whatever happens below, the order cannot be completed any more: nothing to resume.
      if (err !== null && typeof err === 'object') (err as { orderDead?: boolean }).orderDead = true
      // One that failed validation is already invalid and the CA refuses to deactivate it, which is fine.
      await Promise.all(
        authzs
          .filter((authz) => authz.status === 'pending')
          .map(async (authz) => {
            try {
              // Its own short deadline: this also runs when the order was cut short by close().
              const deadline = AbortSignal.timeout(DEACTIVATE_TIMEOUT_MS)
              await call(deadline, 'deactivate authorization', () => this.#client.deactivateAuthorization(authz))
              this.#log('authorization deactivated', { name: authz.identifier.value })
            } catch {}
          }),
      )
      throw err
    }
  }

  /** Finalizes a ready order with a CSR for `names` signed by `keyPem`; returns the order once valid. */
  async finalize(signal: AbortSignal, order: AcmeOrder, names: readonly string[], keyPem: string): Promise<AcmeOrder> {
    const [, csr] = await acmeLib().crypto.createCsr({ commonName: names[0], altNames: [...names] }, keyPem)
    this.#log('finalizing order', { orderUrl: order.url })
    const finalized = await call(signal, 'finalize', () => this.#client.finalizeOrder(dataOf(order), csr))
    return this.waitValid(signal, wrapOrder({ ...finalized, url: order.url }))
  }

  /** Polls a processing order until the CA has issued its certificate. */
  async waitValid(signal: AbortSignal, order: AcmeOrder): Promise<AcmeOrder> {
    if (order.status === 'valid') return order
    const valid = await pollUntilValid(signal, 'order', this.#client, dataOf(order))
    return wrapOrder({ ...valid, url: order.url })
  }

  /** Downloads the chain (PEM, leaf first) of a valid order. */
  async download(signal: AbortSignal, order: AcmeOrder): Promise<string> {
    const chainPem = await call(signal, 'certificate download', () => this.#client.getCertificate(dataOf(order)))
    this.#log('certificate downloaded', { orderUrl: order.url })
    return chainPem
  }

  async #completeAuthorization(
    signal: AbortSignal,
    authz: acme.Authorization,
    presenter: ChallengePresenter,
  ): Promise<void> {
    const name = authz.identifier.value
    if (authz.status === 'valid') {
      this.#log('authorization reused', { name })
      return
    }
    const offered = authz.challenges ?? []
    const type = presenter.types.find((t) => offered.some((c) => c.type === t))
    const challenge = offered.find((c) => c.type === type)
    if (!type || !challenge) {
      throw new ERR_NO_CHALLENGE(
        name,
        `the CA offers ${offered.map((c) => c.type).join(', ') || 'no challenges'}; this server answers ${presenter.types.join(', ') || 'none right now'}`,
      )
    }
    const keyAuthorization = await this.#client.getChallengeKeyAuthorization(challenge)
    const presented: ChallengeToPresent = { name, type, token: challenge.token, keyAuthorization }
    if (authz.wildcard) presented.wildcard = true
    if (type === 'tls-alpn-01') {
      presented.tlsAlpn = await tlsAlpnCertificate(name, keyAuthorization, await presenter.challengeKey)
    }
    try {
      // Inside the try: a presentation that fails half way (a DNS record written, its propagation timed out) is
      // removed like one the CA validated.
      await presenter.present(presented, signal)
      // A resumed order may find its challenge already being validated: then only wait for the verdict.
      if (challenge.status === 'pending') {
        await call(signal, `${type} challenge for ${name}`, () => this.#client.completeChallenge(challenge))
      }
      try {
        await pollUntilValid(signal, `${type} validation for ${name}`, this.#client, authz, true)
      } catch (err) {
        if ((err as CaFacts).validation) (err as CaFacts).challengeType = type
        throw err
      }
      this.#log('authorization valid', { name, type })
    } finally {
      await presenter.remove(presented)
    }
  }
}

function dataOf(order: AcmeOrder): acme.Order {
  return (order as OrderWithData).data ?? ({ url: order.url } as acme.Order)
}

/** A TLS-ALPN-01 challenge certificate for `name` (RFC 8737), as the responder serves it. */
export async function tlsAlpnCertificate(
  name: string,
  keyAuthorization: string,
  keyPem: string,
): Promise<{ key: string; cert: string }> {
  const authz = { identifier: { type: 'dns', value: name } } as unknown as acme.Authorization
  const [, cert] = await acmeLib().crypto.createAlpnCertificate(authz, keyAuthorization, keyPem)
  return { key: keyPem, cert: cert.toString() }
}
