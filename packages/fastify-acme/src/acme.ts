// The only file that talks to acme-client. Everything ACME-protocol-shaped goes through here, so upgrading,
// patching or replacing the library touches one file.
//
// acme-client keeps one process-wide axios instance. We hook it once, and scope our behaviour to our own calls
// with AsyncLocalStorage: inside a call we run (1) requests carry our AbortSignal, so close() cancels them,
// (2) acme-client's own retry loop is off (it sleeps the full Retry-After, uncapped), so the manager decides when
// to retry, and (3) the last error response's status, Retry-After and problem type are captured, because
// acme-client's thrown errors carry only a message.
import { AsyncLocalStorage } from 'node:async_hooks'
import { generateKeyPair } from 'node:crypto'
import { Agent } from 'node:https'
import { setTimeout as sleep } from 'node:timers/promises'
import { createSecureContext, rootCertificates } from 'node:tls'
import * as acme from 'acme-client'
import type { ChallengeType, KeyType } from './options.js'

/** What we learned about a failed CA exchange, for the retry policy. */
export class AcmeCallError extends Error {
  readonly status: number | undefined
  readonly problemType: string | undefined
  /** Retry-After from the CA, in ms, when it sent one. */
  readonly retryAfterMs: number | undefined
  /** ECONNREFUSED etc. when the CA could not be reached at all. */
  readonly networkCode: string | undefined
  /** True when the failure was a challenge validation (counts against the CA's failed-validation limit). */
  readonly validation: boolean
  /** The challenge type that was being validated, when the failure is a validation. */
  challengeType: ChallengeType | undefined

  constructor(message: string, info: CallInfo, validation: boolean, cause: unknown) {
    super(message, { cause })
    this.name = 'AcmeCallError'
    this.status = info.status
    this.problemType = info.problemType
    this.retryAfterMs = info.retryAfterMs
    this.networkCode = info.networkCode
    this.validation = validation
  }

  get rateLimited(): boolean {
    return this.status === 429 || this.problemType === 'urn:ietf:params:acme:error:rateLimited'
  }
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
  acme.axios.defaults.httpsAgent = new CaAgent({ secureContext, keepAlive: true })
}

function hookAxios(): void {
  if (hooked) return
  hooked = true
  installAgent()
  const instance = acme.axios
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

/** Runs one CA exchange with our signal and error capture; turns failures into AcmeCallError. */
async function call<T>(signal: AbortSignal, what: string, fn: () => Promise<T>, validation = false): Promise<T> {
  hookAxios()
  const ctx: CallContext = { signal, info: {} }
  return als.run(ctx, async () => {
    try {
      signal.throwIfAborted()
      return await fn()
    } catch (err) {
      if (signal.aborted) throw signal.reason
      if (err instanceof AcmeCallError) throw err
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
      throw new AcmeCallError(`${what}: ${message}`, ctx.info, verdict, err)
    }
  })
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
  const client = new acme.Client({
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
      if (!(err instanceof AcmeCallError) || !err.message.endsWith(PENDING)) throw err
      const wait =
        err.retryAfterMs !== undefined && err.retryAfterMs < 10_000 ? Math.max(err.retryAfterMs, delay) : delay
      await sleep(wait, undefined, { signal })
      delay = Math.min(POLL_MAX_MS, delay * 2)
    }
  }
}

/** A challenge the manager must make answerable before the CA validates it. */
export interface ChallengeToPresent {
  name: string
  type: ChallengeType
  token: string
  keyAuthorization: string
  /** For TLS-ALPN-01: the self-signed challenge certificate and its key. */
  tlsAlpn?: { key: string; cert: string }
}

export interface OrderParams {
  account: AccountRecord
  eab: AccountParams['eab']
  name: string
  keyType: KeyType
  /** Challenge types in order of preference, each one we can actually answer. */
  challenges: ChallengeType[]
  /** The RSA key of TLS-ALPN-01 challenge certificates; awaited only when such a challenge is presented. */
  challengeKey: Promise<string>
  present(challenge: ChallengeToPresent): void
  remove(challenge: ChallengeToPresent): void
  signal: AbortSignal
  log(step: string, detail?: Record<string, unknown>): void
}

export interface IssuedCertificate {
  keyPem: string
  chainPem: string
  orderUrl: string
}

/**
 * Runs one complete order for one name: new order, authorizations (reused ones need nothing), one challenge per
 * pending authorization (all authorizations concurrently), finalize with a fresh key, download the chain.
 * On failure, pending authorizations are deactivated so they do not linger on the account.
 */
export async function orderCertificate(p: OrderParams): Promise<IssuedCertificate> {
  const client = makeClient(p.account.directoryUrl, p.account.keyPem, p.account.url, p.eab)
  const order = await call(p.signal, 'new order', () =>
    client.createOrder({ identifiers: [{ type: 'dns', value: p.name }] }),
  )
  p.log('order created', { orderUrl: order.url, status: order.status })
  const authzs = await call(p.signal, 'authorizations', () => client.getAuthorizations(order))
  try {
    await Promise.all(authzs.map((authz) => completeAuthorization(client, authz, p)))
  } catch (err) {
    // A failed order leaves pending authorizations on the account: deactivate them so none lingers. One that
    // failed validation is already invalid and the CA refuses to deactivate it, which is fine.
    await Promise.all(
      authzs
        .filter((authz) => authz.status === 'pending')
        .map(async (authz) => {
          try {
            // Its own short deadline: this also runs when the order was cut short by close().
            const signal = AbortSignal.timeout(DEACTIVATE_TIMEOUT_MS)
            await call(signal, 'deactivate authorization', () => client.deactivateAuthorization(authz))
            p.log('authorization deactivated', { name: authz.identifier.value })
          } catch {}
        }),
    )
    throw err
  }
  const keyPem = await generateCertificateKey(p.keyType)
  const [, csr] = await acme.crypto.createCsr({ commonName: p.name, altNames: [p.name] }, keyPem)
  p.log('finalizing order', { orderUrl: order.url })
  const finalized = await call(p.signal, 'finalize', () => client.finalizeOrder(order, csr))
  const valid = finalized.status === 'valid' ? finalized : await pollUntilValid(p.signal, 'order', client, finalized)
  const chainPem = await call(p.signal, 'certificate download', () => client.getCertificate(valid))
  return { keyPem, chainPem, orderUrl: order.url }
}

async function completeAuthorization(client: acme.Client, authz: acme.Authorization, p: OrderParams): Promise<void> {
  const name = authz.identifier.value
  if (authz.status === 'valid') {
    p.log('authorization reused', { name })
    return
  }
  const offered = authz.challenges ?? []
  const type = p.challenges.find((t) => offered.some((c) => c.type === t))
  const challenge = offered.find((c) => c.type === type)
  if (!type || !challenge) {
    throw new AcmeCallError(
      `the CA offers ${offered.map((c) => c.type).join(', ') || 'no challenges'} for ${name}; we answer ${p.challenges.join(', ')}`,
      {},
      false,
      undefined,
    )
  }
  const keyAuthorization = await client.getChallengeKeyAuthorization(challenge)
  const presented: ChallengeToPresent = { name, type, token: challenge.token, keyAuthorization }
  if (type === 'tls-alpn-01') presented.tlsAlpn = await tlsAlpnCertificate(name, keyAuthorization, await p.challengeKey)
  p.present(presented)
  p.log('challenge presented', { name, type })
  try {
    await call(p.signal, `${type} challenge for ${name}`, () => client.completeChallenge(challenge))
    try {
      await pollUntilValid(p.signal, `${type} validation for ${name}`, client, authz, true)
    } catch (err) {
      if (err instanceof AcmeCallError && err.validation) err.challengeType = type
      throw err
    }
    p.log('authorization valid', { name, type })
  } finally {
    p.remove(presented)
  }
}

/** A TLS-ALPN-01 challenge certificate for `name` (RFC 8737), as the responder serves it. */
export async function tlsAlpnCertificate(
  name: string,
  keyAuthorization: string,
  keyPem: string,
): Promise<{ key: string; cert: string }> {
  const authz = { identifier: { type: 'dns', value: name } } as unknown as acme.Authorization
  const [, cert] = await acme.crypto.createAlpnCertificate(authz, keyAuthorization, keyPem)
  return { key: keyPem, cert: cert.toString() }
}
