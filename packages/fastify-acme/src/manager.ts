// The certificate manager: the order and renewal loop for every managed name. It loads cached certificates into
// the resolver before any CA contact, decides per name when to act (renewal window, persisted retry state),
// runs orders with bounded concurrency, a per-name storage lock and an account-wide order budget, stores the
// result atomically and swaps it into the resolver. Failures are isolated per name.
import { createPrivateKey } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyBaseLogger } from 'fastify'
import {
  ACCOUNT_DOES_NOT_EXIST,
  type AccountRecord,
  AcmeCallError,
  type ChallengeToPresent,
  createAccount,
  generateChallengeKey,
  type OrderParams,
  orderCertificate,
  trustRoots,
} from './acme.js'
import {
  type CertificateInfo,
  type CertificateRecord,
  checkPair,
  parseRecord,
  recordDigest,
  recordSeal,
} from './certificate.js'
import { ERR_CLOSED, ERR_ORDER_FAILED, ERR_UNKNOWN_NAME } from './errors.js'
import type { AcmeEventEmitter } from './events.js'
import { normalizeServerName } from './names.js'
import type { ChallengeType, Clock, ResolvedOptions } from './options.js'
import { OrderLimiter } from './rate-limit.js'
import { nextAttemptDelay, renewalTime, retryDelay } from './renewal.js'
import type { CertResolver } from './resolver.js'
import { Scheduler } from './scheduler.js'
import { FileStorage } from './storage/file.js'
import { directoryKey, keys, type Storage } from './storage/index.js'
import { MemoryStorage } from './storage/memory.js'

export type NameState = 'pending' | 'valid' | 'expired' | 'ordering' | 'error'

/** The public view of one managed name (what app.acme.status() returns). */
export interface NameStatus {
  name: string
  state: NameState
  notBefore?: string
  notAfter?: string
  issuer?: string
  serial?: string
  lastError?: { message: string; code?: string; at: string }
  nextAction?: { kind: 'issue' | 'renew' | 'retry'; at: string }
  /** Consecutive failed attempts since the last success. */
  failures: number
}

/** Retry state persisted per name, so a crash-looping process does not re-order at every start. */
interface RetryState {
  failures: number
  nextAttemptAt: number
  lastError: string
  lastErrorCode?: string | undefined
  lastErrorAt: number
}

interface Entry {
  status: NameStatus
  record: CertificateRecord | undefined
  /** The certificate came from storage at start (reported by a certificate-loaded event in start()). */
  loaded?: boolean
  /** false: a sealed cached record served before its full check (see #verifyCached); true once checked. */
  verified?: boolean | undefined
  /** Challenge types whose last validation failed for this name: the next attempt tries the others first. */
  failedTypes: Set<ChallengeType>
  running: Promise<NameStatus> | undefined
  waiters: Array<{ resolve: (s: NameStatus) => void; reject: (e: Error) => void }>
}

export interface ManagerDeps {
  options: ResolvedOptions
  storage: Storage
  resolver: CertResolver
  clock: Clock
  log: FastifyBaseLogger
  events: AcmeEventEmitter
  /** Challenge types this server can answer right now (TLS-ALPN-01 needs a wired TLS server, HTTP-01 a route). */
  answerable(): ChallengeType[]
  random?: () => number
}

/** Space set aside before an order (a certificate record is 3-8 KB; RSA-4096 with a long chain stays under this). */
export const RESERVATION_BYTES = 16 * 1024

/** Names whose cached certificate and retry state load() reads at the same time. */
export const LOAD_CONCURRENCY = 256

/**
 * The background check of cached certificates works this long at a time, then pauses: briefly while the process
 * is otherwise idle (half a core), long while it is busy serving (2% of a core), so it never competes with traffic.
 */
export const VERIFY_SLICE_MS = 5
export const VERIFY_PAUSE_IDLE_MS = 5
export const VERIFY_PAUSE_BUSY_MS = 250
/** ... and starts this long after the server listens. */
export const VERIFY_DELAY_MS = 1000

/** Bound on how long close() waits for orders in flight before returning. */
export const CLOSE_GRACE_MS = 1500

export class CertificateManager {
  readonly #o: ResolvedOptions
  readonly #storage: Storage
  readonly #resolver: CertResolver
  readonly #clock: Clock
  readonly #log: FastifyBaseLogger
  readonly #events: AcmeEventEmitter
  readonly #answerable: () => ChallengeType[]
  readonly #random: () => number
  readonly #dir: string
  readonly #entries = new Map<string, Entry>()
  readonly #scheduler: Scheduler
  readonly #limiter: OrderLimiter
  readonly #abort = new AbortController()
  readonly #http01 = new Map<string, string>()
  #account: Promise<AccountRecord> | undefined
  #challengeKey: Promise<string> | undefined
  #slots: number
  readonly #queue: Array<() => void> = []
  #started = false
  #verifying: Promise<void> | undefined
  /** Counts orders this process sent to the CA (for status, tests and benchmarks). */
  ordersSent = 0

  constructor(deps: ManagerDeps) {
    this.#o = deps.options
    this.#storage = deps.storage
    this.#resolver = deps.resolver
    this.#clock = deps.clock
    this.#log = deps.log
    this.#events = deps.events
    this.#answerable = deps.answerable
    this.#random = deps.random ?? Math.random
    this.#dir = directoryKey(this.#o.directoryUrl)
    this.#slots = this.#o.concurrency
    this.#limiter = new OrderLimiter(this.#o.rateLimit.orders, this.#o.rateLimit.windowMs)
    this.#scheduler = new Scheduler(this.#clock, (name) => {
      void this.#run(name, this.#entries.get(name)?.record ? 'renewal' : 'missing').catch(() => {})
    })
    trustRoots(this.#o.caRoots)
    for (const name of this.#o.names) {
      this.#entries.set(name, {
        status: { name, state: 'pending', failures: 0 },
        record: undefined,
        running: undefined,
        waiters: [],
        failedTypes: new Set(),
      })
    }
  }

  get directoryKey(): string {
    return this.#dir
  }

  /**
   * Loads cached certificates and retry state; serves usable ones at once. Never contacts the CA.
   *
   * A sealed record (written by this package after checkPair, see CertificateRecord.seal) is served from its stored
   * metadata without parsing its key or certificates (under OpenSSL 3 that costs ~1.5 ms per name, 15 s for 10,000
   * names); its full check runs in the background once the server listens, and a context that cannot be built at
   * the first handshake drops the name like a failed check. Older records are checked here, as before.
   */
  async load(): Promise<void> {
    // Few names have retry state: one listing instead of one failed read per name, with our own storages only (a
    // custom one may page or stub list(); missing a retry state would reset a name's backoff).
    const statePrefix = keys.states(this.#dir)
    const ownStorage = this.#storage instanceof FileStorage || this.#storage instanceof MemoryStorage
    const withState = ownStorage
      ? await Promise.resolve()
          .then(() => this.#storage.list(statePrefix))
          .then((found) =>
            Array.isArray(found) ? new Set(found.map((key) => String(key).slice(statePrefix.length))) : undefined,
          )
          .catch(() => undefined)
      : undefined
    const loadOne = async (entry: Entry, read: Buffer | undefined | Error): Promise<void> => {
      const name = entry.status.name
      let raw: Buffer | undefined
      if (read instanceof Error) {
        this.#log.error(
          { name, err: read },
          'fastify-acme: reading the cached certificate failed; treating it as missing',
        )
      } else {
        raw = read
      }
      const record = parseRecord(raw)
      if (raw && !record)
        this.#log.warn({ name }, 'fastify-acme: cached certificate is corrupt; treating it as missing')
      if (record?.seal !== undefined && record.name === name) {
        this.#serveCached(entry, record, false)
      } else if (record) {
        try {
          const info = checkPair(name, record.keyPem, record.chainPem)
          this.#serveCached(entry, withCertificateFacts(record, info), true)
        } catch (err) {
          this.#log.warn({ name, err }, 'fastify-acme: cached certificate is unusable; treating it as missing')
        }
      }
      if (entry.record) {
        entry.loaded = true
        // Per name at debug only: thousands of names would otherwise cost more in log lines than in loading.
        this.#log.debug(
          { name, notAfter: entry.record.notAfter, serial: entry.record.serial },
          'fastify-acme: cached certificate loaded',
        )
      }
      const retry = withState === undefined || withState.has(`${name}.json`) ? await this.#readRetry(name) : undefined
      if (retry) {
        entry.status.failures = retry.failures
        entry.status.lastError = {
          message: retry.lastError,
          at: new Date(retry.lastErrorAt).toISOString(),
          ...(retry.lastErrorCode ? { code: retry.lastErrorCode } : {}),
        }
        if (!entry.record) entry.status.state = 'error'
      }
      this.#plan(entry, retry)
    }
    // A bounded number of names in flight: reading every file at once runs out of file descriptors (EMFILE) past
    // ~20,000 names, and a failed read is taken for a missing certificate, which would be ordered again.
    const started = performance.now()
    const entries = [...this.#entries.values()]
    for (let i = 0; i < entries.length; i += LOAD_CONCURRENCY) {
      const chunk = entries.slice(i, i + LOAD_CONCURRENCY)
      const paths = chunk.map((entry) => keys.certificate(this.#dir, entry.status.name))
      const many = this.#storage.getMany
        ? await this.#storage.getMany(paths).catch((err: Error) => {
            this.#log.warn({ err }, 'fastify-acme: batch read of cached certificates failed; reading them one by one')
            return undefined
          })
        : undefined
      // A failed or malformed batch is read again key by key: a read failure counts as a missing certificate.
      const reads =
        Array.isArray(many) && many.length === paths.length
          ? many
          : await Promise.all(paths.map((key) => this.#storage.get(key).catch((err: Error) => err)))
      await Promise.all(chunk.map((entry, j) => loadOne(entry, reads[j])))
    }
    const now = this.#clock.now()
    let loaded = 0
    let expired = 0
    let unchecked = 0
    for (const entry of entries) {
      if (!entry.record) continue
      loaded++
      if (Date.parse(entry.record.notAfter) <= now) expired++
      if (entry.verified === false) unchecked++
    }
    this.#log.info(
      { names: entries.length, loaded, expired, unchecked, ms: Math.round(performance.now() - started) },
      'fastify-acme: cached certificates loaded',
    )
  }

  /**
   * Serves a stored record (its context built at the first handshake) and reports it in the status, unless an order
   * is running (its result will set the status).
   */
  #serveCached(entry: Entry, record: CertificateRecord, verified: boolean): void {
    this.#resolver.setLazy(entry.status.name, { key: record.keyPem, cert: record.chainPem }, (err) =>
      this.#unusable(entry, record, err),
    )
    entry.record = record
    entry.verified = verified
    if (entry.running) return
    Object.assign(entry.status, {
      state: Date.parse(record.notAfter) <= this.#clock.now() ? 'expired' : 'valid',
      notBefore: record.notBefore,
      notAfter: record.notAfter,
      issuer: record.issuer,
      serial: record.serial,
    })
  }

  /**
   * The full check of the sealed records load() served unchecked: after listening, in slices of a few
   * milliseconds with pauses between them, so serving keeps most of the CPU while thousands of names are checked.
   */
  async #verifyCached(): Promise<void> {
    const pending = [...this.#entries.values()].filter((e) => e.record !== undefined && e.verified === false)
    if (pending.length === 0) return
    const signal = this.#abort.signal
    const started = performance.now()
    let rejected = 0
    let i = 0
    // Let the server get through its first connections before taking any CPU.
    let pause = VERIFY_DELAY_MS
    while (i < pending.length && !signal.aborted) {
      // How busy the event loop was during the pause (our own slices excluded) sets the next pause.
      const before = performance.eventLoopUtilization()
      await sleep(pause, undefined, { signal, ref: false }).catch(() => {})
      if (signal.aborted) break
      const busy = performance.eventLoopUtilization(before).utilization > 0.5
      pause = busy ? VERIFY_PAUSE_BUSY_MS : VERIFY_PAUSE_IDLE_MS
      const sliceEnd = performance.now() + VERIFY_SLICE_MS
      while (i < pending.length && performance.now() < sliceEnd) {
        const entry = pending[i++]!
        const record = entry.record
        // Replaced by a new certificate (checked when issued) or dropped meanwhile.
        if (record === undefined || entry.verified !== false) continue
        try {
          const info = checkPair(entry.status.name, record.keyPem, record.chainPem)
          entry.verified = true
          this.#matchMetadata(entry, record, info)
        } catch (err) {
          rejected++
          this.#unusable(entry, record, err as Error)
        }
      }
    }
    this.#log.info(
      { checked: i, of: pending.length, rejected, ms: Math.round(performance.now() - started) },
      'fastify-acme: cached certificates checked',
    )
  }

  /**
   * A sealed record's metadata should be what its certificate says (we wrote both); if not (a record made by another
   * tool), the certificate wins: status and renewal time are corrected, the certificate is kept.
   */
  #matchMetadata(entry: Entry, record: CertificateRecord, info: CertificateInfo): void {
    const actual = withCertificateFacts(record, info)
    if (actual.notBefore === record.notBefore && actual.notAfter === record.notAfter && actual.serial === record.serial)
      return
    this.#log.warn(
      {
        name: entry.status.name,
        stored: { notAfter: record.notAfter, serial: record.serial },
        actual: { notAfter: actual.notAfter, serial: actual.serial },
      },
      'fastify-acme: cached certificate metadata did not match the certificate; corrected',
    )
    this.#serveCached(entry, actual, true)
    // Only called after start(), from the background check.
    if (!entry.running && entry.status.nextAction?.kind === 'renew') {
      const at = renewalTime(
        Date.parse(actual.notBefore),
        Date.parse(actual.notAfter),
        this.#o.renewBeforeRatio,
        this.#random,
      )
      this.#setNext(entry, 'renew', at)
    }
  }

  /** A cached certificate failed its check (in the background or at its first handshake): treat it as missing. */
  #unusable(entry: Entry, record: CertificateRecord, err: Error): void {
    if (entry.record !== record) return
    const name = entry.status.name
    this.#log.warn({ name, err }, 'fastify-acme: cached certificate is unusable; treating it as missing')
    this.#resolver.delete(name)
    entry.record = undefined
    entry.verified = undefined
    const status = entry.status
    delete status.notBefore
    delete status.notAfter
    delete status.issuer
    delete status.serial
    // An order already running will install its certificate and set the state.
    if (entry.running) return
    status.state = status.failures > 0 ? 'error' : 'pending'
    if (!this.#started) {
      this.#plan(entry, undefined)
    } else if (this.#o.issueOnStart) {
      // A persisted retry state still applies: #order() reads it and defers if the name is backing off.
      this.#setNext(entry, 'issue', this.#clock.now())
    } else {
      this.#scheduler.cancel(name)
      delete status.nextAction
    }
  }

  /**
   * Schedules every name: renewals and retries at their time, missing certificates now (only with `issueOnStart`;
   * otherwise they wait for issueNow()). Called when the server listens, so listeners registered after the plugin
   * see the certificate-loaded events.
   */
  async start(): Promise<void> {
    if (this.#started) return
    this.#started = true
    // RSA key generation takes a few hundred ms: start it now, before the first order needs it.
    if (this.#o.issueOnStart && this.#o.challenges.includes('tls-alpn-01')) {
      void this.#ensureChallengeKey().catch(() => {})
    }
    for (const entry of this.#entries.values()) {
      const { name, notAfter, serial, state } = entry.status
      if (entry.loaded && notAfter && serial) {
        this.#events.emit('certificate-loaded', { name, notAfter, serial, expired: state === 'expired' })
      }
      const next = entry.status.nextAction
      if (!next || entry.running) continue
      if (next.kind === 'issue' && !this.#o.issueOnStart) {
        delete entry.status.nextAction
        continue
      }
      this.#scheduler.schedule(name, Date.parse(next.at))
    }
    this.#verifying = this.#verifyCached().catch((err: Error) => {
      this.#log.error({ err }, 'fastify-acme: checking the cached certificates stopped')
    })
  }

  /** Decides the next action of a name from its certificate and retry state (status only; start() schedules). */
  #plan(entry: Entry, retry: RetryState | undefined): void {
    const now = this.#clock.now()
    let at: number
    let kind: 'issue' | 'renew' | 'retry'
    if (entry.record) {
      at = renewalTime(
        Date.parse(entry.record.notBefore),
        Date.parse(entry.record.notAfter),
        this.#o.renewBeforeRatio,
        this.#random,
      )
      kind = 'renew'
    } else {
      at = now
      kind = 'issue'
    }
    if (retry && retry.nextAttemptAt > at) {
      at = retry.nextAttemptAt
      kind = 'retry'
    }
    entry.status.nextAction = { kind, at: new Date(at).toISOString() }
  }

  #setNext(entry: Entry, kind: 'issue' | 'renew' | 'retry', at: number): void {
    entry.status.nextAction = { kind, at: new Date(at).toISOString() }
    this.#scheduler.schedule(entry.status.name, at)
  }

  status(name: string): NameStatus | undefined {
    const entry = this.#entries.get(normalizeServerName(name))
    return entry ? structuredClone(entry.status) : undefined
  }

  statuses(): NameStatus[] {
    return [...this.#entries.values()].map((e) => structuredClone(e.status))
  }

  /** Orders a certificate for `name` now, whatever its schedule; resolves with the new status. */
  async issueNow(name: string): Promise<NameStatus> {
    const entry = this.#entries.get(normalizeServerName(name))
    if (!entry) throw new ERR_UNKNOWN_NAME(name)
    // An order already running was started before this request: wait for it, then order anew.
    if (entry.running) await entry.running.catch(() => {})
    return this.#run(entry.status.name, 'manual')
  }

  /** Resolves once `name` has a certificate being served (at once if it already has one). */
  waitForCertificate(name: string): Promise<NameStatus> {
    const entry = this.#entries.get(normalizeServerName(name))
    if (!entry) return Promise.reject(new ERR_UNKNOWN_NAME(name))
    if (entry.record) return Promise.resolve(structuredClone(entry.status))
    return new Promise((resolve, reject) => entry.waiters.push({ resolve, reject }))
  }

  /** The key authorization for an HTTP-01 token, while its challenge is pending. */
  http01(token: string): string | undefined {
    return this.#http01.get(token)
  }

  async close(): Promise<void> {
    this.#scheduler.stop()
    this.#abort.abort(new ERR_CLOSED())
    await this.#verifying
    for (const entry of this.#entries.values()) {
      for (const w of entry.waiters.splice(0)) w.reject(new ERR_CLOSED())
    }
    const running = [...this.#entries.values()].map((e) => e.running).filter((p) => p !== undefined)
    if (running.length === 0) return
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      Promise.allSettled(running),
      new Promise((resolve) => {
        timer = setTimeout(resolve, CLOSE_GRACE_MS)
      }),
    ])
    clearTimeout(timer)
  }

  #run(name: string, reason: 'missing' | 'renewal' | 'manual' | 'retry'): Promise<NameStatus> {
    const entry = this.#entries.get(name)
    if (!entry) return Promise.reject(new ERR_UNKNOWN_NAME(name))
    if (entry.running) return entry.running
    if (this.#abort.signal.aborted) return Promise.reject(new ERR_CLOSED())
    this.#scheduler.cancel(name)
    const effective = reason !== 'manual' && entry.status.failures > 0 ? 'retry' : reason
    entry.running = this.#order(entry, effective).finally(() => {
      entry.running = undefined
    })
    return entry.running
  }

  async #acquireSlot(): Promise<void> {
    if (this.#slots > 0) {
      this.#slots--
      return
    }
    await new Promise<void>((resolve) => this.#queue.push(resolve))
  }

  #releaseSlot(): void {
    const next = this.#queue.shift()
    if (next) next()
    else this.#slots++
  }

  async #order(entry: Entry, reason: 'missing' | 'renewal' | 'manual' | 'retry'): Promise<NameStatus> {
    const name = entry.status.name
    const signal = this.#abort.signal
    await this.#acquireSlot()
    let unlock: (() => Promise<void>) | undefined
    let priorState: Buffer | undefined
    let marked = false
    let reserved = false
    try {
      signal.throwIfAborted()
      unlock = await this.#storage.lock(keys.orderLock(this.#dir, name), { timeoutMs: this.#o.orderTimeoutMs, signal })
      // Another process sharing this storage may have renewed (or failed) while we waited for the lock.
      if (reason !== 'manual' && (await this.#adoptStored(entry))) return structuredClone(entry.status)
      priorState = await this.#storage.get(keys.state(this.#dir, name)).catch(() => undefined)
      const retry = this.#parseRetry(priorState)
      // The stored count is the truth (another process, or a retry state load() did not see): the next failure's
      // backoff must continue from it.
      if (retry && retry.failures > entry.status.failures) entry.status.failures = retry.failures
      if (reason !== 'manual' && retry && retry.nextAttemptAt > this.#clock.now()) {
        this.#setNext(entry, 'retry', retry.nextAttemptAt)
        return structuredClone(entry.status)
      }
      const wait = this.#limiter.take(this.#clock.now())
      if (wait > 0) {
        const until = this.#clock.now() + wait
        this.#events.emit('order-deferred', {
          name,
          reason: 'order budget used up',
          until: new Date(until).toISOString(),
        })
        this.#log.warn(
          { name, until: new Date(until).toISOString() },
          'fastify-acme: order budget for this account used up; deferring',
        )
        this.#setNext(entry, entry.record ? 'renew' : 'issue', until)
        return structuredClone(entry.status)
      }
      // Prove the storage can keep what we are about to order: an order whose result cannot be stored would be
      // lost at the next restart and ordered again.
      await this.#storage.put(
        keys.state(this.#dir, name),
        JSON.stringify({ ...(retry ?? {}), orderingSince: this.#clock.now() }),
      )
      marked = true
      // ... and that it has room for the certificate itself, which is much larger than that state: a reservation the
      // size of a large record, given back just before the certificate is written.
      await this.#storage.put(keys.reservation(this.#dir, name), Buffer.alloc(RESERVATION_BYTES))
      reserved = true
      const attempt = (retry?.failures ?? 0) + 1
      entry.status.state = 'ordering'
      this.#events.emit('order-started', { name, reason, attempt })
      this.#log.info({ name, reason, attempt }, 'fastify-acme: ordering certificate')
      const account = await this.#ensureAccount(signal)
      // Not awaited here: generating it overlaps with creating the order.
      const challengeKey = this.#ensureChallengeKey()
      const answerable = this.#answerable()
      // A type whose validation just failed goes last, so a name with both types configured tries the other one.
      const usable = this.#o.challenges.filter((c) => answerable.includes(c))
      const challenges = [
        ...usable.filter((c) => !entry.failedTypes.has(c)),
        ...usable.filter((c) => entry.failedTypes.has(c)),
      ]
      if (challenges.length === 0) {
        throw new ERR_ORDER_FAILED(
          name,
          `none of the challenge types ${this.#o.challenges.join(', ')} can be answered by this server`,
        )
      }
      const timeout = AbortSignal.timeout(this.#o.orderTimeoutMs)
      this.ordersSent++
      const issued = await this.#orderWithAccount(
        account,
        {
          eab: this.#o.eab,
          name,
          keyType: this.#o.keyType,
          challenges,
          challengeKey,
          signal: AbortSignal.any([signal, timeout]),
          present: (c) => this.#present(c),
          remove: (c) => this.#remove(c),
          log: (step, detail) => this.#log.info({ name, ...detail }, `fastify-acme: ${step}`),
        },
        signal,
      )
      const info = checkPair(name, issued.keyPem, issued.chainPem)
      const record: CertificateRecord = {
        name,
        keyPem: issued.keyPem,
        chainPem: issued.chainPem,
        keyType: this.#o.keyType,
        notBefore: info.notBefore.toISOString(),
        notAfter: info.notAfter.toISOString(),
        serial: info.serial,
        issuer: info.issuer,
        issuedAt: new Date(this.#clock.now()).toISOString(),
        orderUrl: issued.orderUrl,
        digest: recordDigest(issued.keyPem, issued.chainPem),
      }
      record.seal = recordSeal(record)
      // Store first, then serve: a certificate we serve is always one we will find again after a restart.
      // If storing fails we still serve it (it is valid) and the error is logged; the retry state stays.
      const renewal = entry.record !== undefined
      try {
        await this.#storage.delete(keys.reservation(this.#dir, name))
        reserved = false
        await this.#storage.put(keys.certificate(this.#dir, name), JSON.stringify(record))
        await this.#storage.delete(keys.state(this.#dir, name))
      } catch (err) {
        this.#log.error(
          { name, err },
          'fastify-acme: certificate issued but could not be stored; serving it from memory',
        )
      }
      this.#install(entry, record)
      this.#events.emit('certificate-issued', {
        name,
        notAfter: record.notAfter,
        serial: record.serial,
        issuer: record.issuer,
        renewal,
      })
      this.#log.info(
        { name, notAfter: record.notAfter, serial: record.serial, renewal },
        'fastify-acme: certificate issued',
      )
      return structuredClone(entry.status)
    } catch (err) {
      if (signal.aborted) {
        // Stopped by close(), not crashed: put the retry state back as it was, so the interruption costs nothing.
        if (marked) {
          const key = keys.state(this.#dir, name)
          await (priorState ? this.#storage.put(key, priorState) : this.#storage.delete(key)).catch(() => {})
        }
        throw new ERR_CLOSED({ cause: err })
      }
      await this.#fail(entry, err as Error)
      throw err
    } finally {
      if (reserved) await this.#storage.delete(keys.reservation(this.#dir, name)).catch(() => {})
      await unlock?.().catch(() => {})
      this.#releaseSlot()
    }
  }

  /** If storage holds a newer, not-yet-due certificate than ours (another process renewed it), serve that. */
  async #adoptStored(entry: Entry): Promise<boolean> {
    const record = parseRecord(
      await this.#storage.get(keys.certificate(this.#dir, entry.status.name)).catch(() => undefined),
    )
    if (!record || record.serial === entry.record?.serial) return false
    try {
      checkPair(entry.status.name, record.keyPem, record.chainPem)
    } catch {
      return false
    }
    const due = renewalTime(
      Date.parse(record.notBefore),
      Date.parse(record.notAfter),
      this.#o.renewBeforeRatio,
      () => 0,
    )
    if (due <= this.#clock.now()) return false
    this.#install(entry, record)
    this.#log.info(
      { name: entry.status.name, serial: record.serial },
      'fastify-acme: adopted a certificate renewed by another process',
    )
    return true
  }

  #install(entry: Entry, record: CertificateRecord): void {
    this.#resolver.set(entry.status.name, { key: record.keyPem, cert: record.chainPem })
    entry.record = record
    entry.verified = true
    Object.assign(entry.status, {
      state: 'valid',
      notBefore: record.notBefore,
      notAfter: record.notAfter,
      issuer: record.issuer,
      serial: record.serial,
      failures: 0,
    })
    delete entry.status.lastError
    entry.failedTypes.clear()
    // A new certificate clears the retry state, so its renewal time is known now; waiters see the full status.
    const at = renewalTime(
      Date.parse(record.notBefore),
      Date.parse(record.notAfter),
      this.#o.renewBeforeRatio,
      this.#random,
    )
    this.#setNext(entry, 'renew', at)
    for (const w of entry.waiters.splice(0)) w.resolve(structuredClone(entry.status))
  }

  async #fail(entry: Entry, err: Error): Promise<void> {
    const name = entry.status.name
    if (err instanceof AcmeCallError && err.validation && err.challengeType) entry.failedTypes.add(err.challengeType)
    const failures = entry.status.failures + 1
    const facts = err instanceof AcmeCallError ? { retryAfterMs: err.retryAfterMs, validation: err.validation } : {}
    const delay = nextAttemptDelay(failures, facts, this.#o, this.#random)
    const now = this.#clock.now()
    const nextAttemptAt = now + delay
    const code =
      (err as { code?: string }).code ??
      (err instanceof AcmeCallError ? (err.problemType ?? err.networkCode) : undefined)
    const state: RetryState = { failures, nextAttemptAt, lastError: err.message, lastErrorCode: code, lastErrorAt: now }
    await this.#storage.put(keys.state(this.#dir, name), JSON.stringify(state)).catch((storeErr: Error) => {
      this.#log.error({ name, err: storeErr }, 'fastify-acme: could not persist the retry state')
    })
    entry.status.failures = failures
    entry.status.state = entry.record ? (Date.parse(entry.record.notAfter) <= now ? 'expired' : 'valid') : 'error'
    entry.status.lastError = { message: err.message, at: new Date(now).toISOString(), ...(code ? { code } : {}) }
    const at = new Date(nextAttemptAt).toISOString()
    this.#setNext(entry, 'retry', nextAttemptAt)
    this.#events.emit('order-failed', { name, error: err, attempt: failures, nextAttemptAt: at })
    this.#log.error(
      { name, attempt: failures, nextAttemptAt: at, err: { message: err.message, code } },
      'fastify-acme: order failed',
    )
  }

  /**
   * The stored retry state. A state still marked `orderingSince` belongs to an attempt that never finished (the
   * process died mid-order): it counts as a failure, so a crash-looping process backs off like a failing one.
   */
  async #readRetry(name: string): Promise<RetryState | undefined> {
    return this.#parseRetry(await this.#storage.get(keys.state(this.#dir, name)).catch(() => undefined))
  }

  #parseRetry(raw: Buffer | undefined): RetryState | undefined {
    if (!raw) return undefined
    let value: Partial<RetryState> & { orderingSince?: unknown }
    try {
      value = JSON.parse(raw.toString('utf8'))
    } catch {
      return undefined
    }
    if (typeof value.orderingSince === 'number') {
      const failures = (typeof value.failures === 'number' ? value.failures : 0) + 1
      const since = value.orderingSince
      return {
        failures,
        nextAttemptAt: Math.max(
          typeof value.nextAttemptAt === 'number' ? value.nextAttemptAt : 0,
          since + retryDelay(failures, this.#o.retryMinMs, this.#o.retryMaxMs, () => 0),
        ),
        lastError: 'interrupted: the process stopped during an order',
        lastErrorCode: 'FACME_INTERRUPTED',
        lastErrorAt: since,
      }
    }
    if (typeof value.failures !== 'number' || typeof value.nextAttemptAt !== 'number') return undefined
    return value as RetryState
  }

  #ensureAccount(signal: AbortSignal): Promise<AccountRecord> {
    this.#account ??= this.#loadOrCreateAccount(signal).catch((err: unknown) => {
      this.#account = undefined
      throw err
    })
    return this.#account
  }

  async #loadOrCreateAccount(signal: AbortSignal): Promise<AccountRecord> {
    const key = keys.account(this.#dir)
    const reservation = keys.reservation(this.#dir, 'account')
    const unlock = await this.#storage.lock(keys.accountLock(this.#dir), { timeoutMs: this.#o.orderTimeoutMs, signal })
    try {
      const raw = await this.#storage.get(key)
      if (raw) {
        try {
          const account = JSON.parse(raw.toString('utf8')) as unknown
          if (usableAccount(account)) return account
        } catch {}
        this.#log.error('fastify-acme: the stored ACME account is unreadable; registering a new account')
      }
      // An account registered but not stored would be orphaned at the CA, and registered again at every attempt.
      await this.#storage.put(reservation, Buffer.alloc(RESERVATION_BYTES / 4))
      const account = await createAccount({
        directoryUrl: this.#o.directoryUrl,
        contact: this.#o.contact,
        eab: this.#o.eab,
        signal,
      })
      await this.#storage.delete(reservation)
      await this.#storage.put(key, JSON.stringify(account))
      this.#log.info({ accountUrl: account.url }, 'fastify-acme: ACME account registered')
      return account
    } finally {
      await this.#storage.delete(reservation).catch(() => {})
      await unlock()
    }
  }

  /**
   * Runs the order; if the CA no longer knows our account (a CA that lost its state, like a restarted test CA),
   * registers the same key again and retries once.
   */
  async #orderWithAccount(account: AccountRecord, params: Omit<OrderParams, 'account'>, signal: AbortSignal) {
    try {
      return await orderCertificate({ ...params, account })
    } catch (err) {
      if (!(err instanceof AcmeCallError) || err.problemType !== ACCOUNT_DOES_NOT_EXIST) throw err
      this.#log.warn(
        { accountUrl: account.url },
        'fastify-acme: the CA does not know our account; registering it again',
      )
      const fresh = createAccount(
        { directoryUrl: this.#o.directoryUrl, contact: this.#o.contact, eab: this.#o.eab, signal },
        account.keyPem,
      ).then(async (renewed) => {
        await this.#storage.put(keys.account(this.#dir), JSON.stringify(renewed))
        return renewed
      })
      this.#account = fresh
      fresh.catch(() => {
        if (this.#account === fresh) this.#account = undefined
      })
      return await orderCertificate({ ...params, account: await fresh })
    }
  }

  #ensureChallengeKey(): Promise<string> {
    // Kept in storage: it only signs throw-away challenge certificates, and an RSA key takes a few hundred ms to
    // generate, which would otherwise delay the first order after every start.
    this.#challengeKey ??= (async () => {
      const key = keys.challengeKey(this.#dir)
      const stored = (await this.#storage.get(key).catch(() => undefined))?.toString('utf8')
      if (stored?.includes('PRIVATE KEY')) return stored
      const fresh = await generateChallengeKey()
      await this.#storage.put(key, fresh).catch(() => {})
      return fresh
    })()
    this.#challengeKey.catch(() => {
      this.#challengeKey = undefined
    })
    return this.#challengeKey
  }

  #present(c: ChallengeToPresent): void {
    if (c.type === 'tls-alpn-01' && c.tlsAlpn) this.#resolver.setChallenge(c.name, c.tlsAlpn)
    if (c.type === 'http-01') this.#http01.set(c.token, c.keyAuthorization)
    this.#events.emit('challenge-presented', { name: c.name, type: c.type })
  }

  #remove(c: ChallengeToPresent): void {
    if (c.type === 'tls-alpn-01') this.#resolver.deleteChallenge(c.name)
    if (c.type === 'http-01') this.#http01.delete(c.token)
  }
}

/** The record with its dates, serial and issuer as its certificate states them. */
function withCertificateFacts(record: CertificateRecord, info: CertificateInfo): CertificateRecord {
  return {
    ...record,
    notBefore: info.notBefore.toISOString(),
    notAfter: info.notAfter.toISOString(),
    serial: info.serial,
    issuer: info.issuer,
  }
}

/** A stored account is usable when its key parses and its URL is a URL; a damaged one is as good as missing. */
function usableAccount(value: unknown): value is AccountRecord {
  const account = value as Partial<AccountRecord> | null
  if (typeof account?.keyPem !== 'string' || typeof account.url !== 'string' || !URL.canParse(account.url)) return false
  try {
    createPrivateKey(account.keyPem)
    return true
  } catch {
    return false
  }
}
