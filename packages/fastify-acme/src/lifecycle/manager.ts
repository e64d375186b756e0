// The certificate manager: composes the lifecycle modules for the managed names. It owns the per-name entries and
// runs one order at a time per name; what each step does lives in its own file:
//   load.ts (cache -> resolver at start), maintenance.ts (when a name needs work), order.ts (one order for one name),
//   state.ts (the one transition: served certificate + status + event + log), account.ts, retry-state.ts,
//   order-journal.ts, challenges.ts, issuers.ts, rate-limit.ts, slots.ts, scheduler.ts.
import type { FastifyBaseLogger } from 'fastify'
import { trustRoots } from '../acme.js'
import { type CertificateRecord, newerRecord, parseRecord } from '../certificate.js'
import { ERR_CLOSED, ERR_UNKNOWN_NAME, ERR_UNKNOWN_PROFILE } from '../errors.js'
import type { AcmeEventEmitter, OrderReason } from '../events.js'
import { canonicalName, normalizeServerName } from '../names.js'
import type { Clock, ResolvedOptions } from '../options.js'
import type { CertResolver } from '../resolver.js'
import { keys, type Storage, segmentName } from '../storage/index.js'
import { AccountKeeper } from './account.js'
import { AriStates } from './ari.js'
import { AriPoller } from './ari-poller.js'
import type { ChallengeResponder } from './challenges.js'
import { issuersFrom } from './issuers.js'
import { type CachedName, checkCached, readCache } from './load.js'
import { Maintenance } from './maintenance.js'
import { type IssuerContext, OrderRunner, type Outcome, STORAGE_PAUSE } from './order.js'
import { OrderJournals } from './order-journal.js'
import { OrderBudget } from './rate-limit.js'
import { type RenewalPolicy, renewalPolicy } from './renewal-policy.js'
import { RetryStates } from './retry-state.js'
import { Slots } from './slots.js'
import { type NameEntry, NameStates, type NameStatus, newEntry, statusOf } from './state.js'
import { StorageSync, type SyncNotice } from './storage-sync.js'

/** The `source` of a next action put off because the storage could not be reached. */
/** Certificates read per step of a reconciliation. */
const RECONCILE_BATCH = 200

/** Bound on how long close() waits for orders in flight before returning. */
export const CLOSE_GRACE_MS = 1500

export interface ManagerDeps {
  options: ResolvedOptions
  storage: Storage
  resolver: CertResolver
  clock: Clock
  log: FastifyBaseLogger
  events: AcmeEventEmitter
  /** Where challenges can be answered (capabilities of the server the plugin is registered on). */
  responders: readonly ChallengeResponder[]
  /** When to renew; default: the ratio rule of the options. */
  policy?: RenewalPolicy
  random?: () => number
}

export class CertificateManager {
  readonly #o: ResolvedOptions
  readonly #log: FastifyBaseLogger
  readonly #clock: Clock
  readonly #storage: Storage
  /** Every CA with its account, order budget and renewal information; [0] also keeps retry states and journals. */
  readonly #issuers: Array<IssuerContext & { ari: AriPoller; ariStates: AriStates }>
  readonly #entries = new Map<string, NameEntry>()
  readonly #abort = new AbortController()
  readonly #states: NameStates
  readonly #maintenance: Maintenance
  readonly #retries: RetryStates
  readonly #runner: OrderRunner
  readonly #random: () => number
  readonly #sync: StorageSync
  /** One reconciliation at a time; a notice during one asks for another after it. */
  #reconciling: Promise<void> | undefined
  #reconcileAgain = false
  #started = false
  #verifying: Promise<void> | undefined

  constructor(deps: ManagerDeps) {
    const o = deps.options
    this.#o = o
    this.#log = deps.log
    this.#clock = deps.clock
    this.#storage = deps.storage
    const random = deps.random ?? Math.random
    this.#random = random
    trustRoots(o.caRoots)
    this.#states = new NameStates({ resolver: deps.resolver, events: deps.events, log: deps.log, clock: deps.clock })
    this.#maintenance = new Maintenance({
      clock: deps.clock,
      policy: deps.policy ?? renewalPolicy(o.renewBeforeRatio),
      random,
      issueMissing: o.issueOnStart,
      due: (name) => void this.#run(name, undefined),
    })
    this.#issuers = issuersFrom(o).map((issuer, index) => {
      const accounts = new AccountKeeper({
        storage: deps.storage,
        issuer,
        log: deps.log,
        lockTimeoutMs: o.orderTimeoutMs,
      })
      const ariStates = new AriStates(deps.storage, issuer.dir)
      return {
        index,
        issuer,
        accounts,
        budget: new OrderBudget(deps.storage, issuer.dir, o.rateLimit.orders, o.rateLimit.windowMs),
        ariStates,
        ari: new AriPoller({
          clock: deps.clock,
          log: deps.log,
          random,
          states: ariStates,
          directory: (signal) => accounts.directory(signal),
          closing: this.#abort.signal,
          due: (name) => void this.#pollAri(name),
        }),
      }
    })
    const home = this.#issuers[0]!.issuer.dir
    this.#retries = new RetryStates(deps.storage, home, o)
    this.#runner = new OrderRunner({
      options: o,
      issuers: this.#issuers,
      storage: deps.storage,
      clock: deps.clock,
      log: deps.log,
      random,
      states: this.#states,
      maintenance: this.#maintenance,
      retries: this.#retries,
      journals: new OrderJournals(deps.storage, home),
      slots: new Slots(o.concurrency),
      responders: deps.responders,
      closing: this.#abort.signal,
    })
    this.#sync = new StorageSync({
      storage: deps.storage,
      dirs: this.#issuers.map((ctx) => ctx.issuer.dir),
      intervalMs: o.syncIntervalMs,
      notify: (notice) => this.#heard(notice),
    })
    for (const name of o.names) this.#track(name)
  }

  /** The storage folder of the first issuer. */
  get directoryKey(): string {
    return this.#issuers[0]!.issuer.dir
  }

  /** New orders this process sent to the CA. */
  get ordersSent(): number {
    return this.#runner.ordersSent
  }

  /** Starts managing `name` (the names of the options today; the seam for names added at runtime). */
  #track(name: string): NameEntry {
    const entry = newEntry(name, this.#o.groups[name] ?? [name])
    this.#entries.set(name, entry)
    return entry
  }

  /** Loads cached certificates, retry states and orders in flight; serves usable certificates. Never contacts the CA. */
  async load(): Promise<void> {
    const started = performance.now()
    // Certificates obtained on demand by earlier runs are stored, loaded and renewed like the configured names.
    if (this.#o.onDemand) {
      for (const name of await this.#storedNames()) {
        if (!this.#entries.has(name)) this.#track(name).onDemand = true
      }
    }
    const counts = await this.#loadNames([...this.#entries.keys()])
    // A storage shared with other instances may lose the account (restarted empty): keep it to put it back.
    if (this.#sync.shared) await Promise.all(this.#issuers.map((ctx) => ctx.accounts.remember()))
    this.#log.info(
      { names: this.#entries.size, ...counts, ms: Math.round(performance.now() - started) },
      'fastify-acme: cached certificates loaded',
    )
  }

  /** The names with a stored certificate, under any issuer. */
  async #storedNames(): Promise<Set<string>> {
    const names = new Set<string>()
    for (const ctx of this.#issuers) {
      const prefix = keys.certificates(ctx.issuer.dir)
      const found = await this.#storage.list(prefix).catch(() => [] as string[])
      for (const key of found) {
        const file = key.slice(prefix.length)
        if (file.endsWith('.json') && !file.includes('/')) names.add(segmentName(file.slice(0, -'.json'.length)))
      }
    }
    return names
  }

  /** Reads what storage holds for `names` (tracked already), serves usable certificates and plans each name. */
  async #loadNames(
    names: string[],
  ): Promise<{ loaded: number; expired: number; unchecked: number; resumable: number }> {
    let loaded = 0
    let expired = 0
    let unchecked = 0
    let resumable = 0
    // Certificates from the other issuers (a name served by the second CA after the first failed): the newest wins.
    const elsewhere = new Map<string, { found: CachedName; issuer: number }>()
    for (const ctx of this.#issuers.slice(1)) {
      const deps = {
        storage: this.#storage,
        dir: ctx.issuer.dir,
        log: this.#log,
        retries: undefined,
        ari: ctx.ariStates,
      }
      for await (const batch of readCache(deps, names)) {
        for (const found of batch) {
          const best = elsewhere.get(found.name)?.found.record
          if (found.record && (!best || Date.parse(found.record.notAfter) > Date.parse(best.notAfter))) {
            elsewhere.set(found.name, { found, issuer: ctx.index })
          }
        }
      }
    }
    const home = this.#issuers[0]!
    const deps = {
      storage: this.#storage,
      dir: home.issuer.dir,
      log: this.#log,
      retries: this.#retries,
      ari: home.ariStates,
    }
    for await (const batch of readCache(deps, names)) {
      for (const homeFound of batch) {
        const entry = this.#entries.get(homeFound.name)!
        const other = elsewhere.get(homeFound.name)
        const newer =
          other?.found.record &&
          (!homeFound.record || Date.parse(other.found.record.notAfter) > Date.parse(homeFound.record.notAfter))
        const found = newer
          ? { ...homeFound, record: other.found.record, verified: other.found.verified, ari: other.found.ari }
          : homeFound
        const issuer = newer ? other.issuer : 0
        const record = found.record
        if (record) {
          this.#states.apply(entry, {
            to: 'loaded',
            record,
            issuer,
            verified: found.verified,
            onUnusable: (err) => this.#drop(entry, record, err),
          })
          loaded++
          if (Date.parse(record.notAfter) <= this.#clock.now()) expired++
          if (!found.verified) unchecked++
        }
        if (found.retry) {
          const { failures, lastError, lastErrorCode, lastErrorAt } = found.retry
          this.#states.apply(entry, {
            to: 'restored',
            failures,
            error: { message: lastError, code: lastErrorCode ?? 'FACME_ORDER_FAILED', at: lastErrorAt },
          })
        }
        if (found.ari) entry.ari = found.ari
        if (found.orderInFlight) resumable++
        this.#maintenance.plan(entry, { retry: found.retry, orderInFlight: found.orderInFlight })
      }
    }
    return { loaded, expired, unchecked, resumable }
  }

  /** Every managed name. */
  names(): string[] {
    return [...this.#entries.keys()]
  }

  /** True when `name` is managed (configured, added, or obtained on demand). */
  has(name: string): boolean {
    return this.#entries.has(normalizeServerName(name))
  }

  /** Names obtained on demand (for the on-demand certificate cap). */
  get onDemandCount(): number {
    let count = 0
    for (const entry of this.#entries.values()) if (entry.onDemand) count++
    return count
  }

  /**
   * Manages more names from now on: what storage holds for them is served, missing certificates are ordered at once,
   * under the same concurrency, budget and backoff rules as the configured names. Names already managed are left
   * as they are. Throws FACME_INVALID_NAME (nothing added) when a name is not one a CA can issue for.
   */
  async add(names: readonly string[], options: { onDemand?: boolean } = {}): Promise<NameStatus[]> {
    const canonical = [...new Set(names.map((n) => canonicalName(n)))]
    if (this.#abort.signal.aborted) throw new ERR_CLOSED()
    const fresh = canonical.filter((name) => !this.#entries.has(name)).map((name) => this.#track(name))
    for (const entry of fresh) entry.onDemand = options.onDemand === true
    // Loading plans each name (and arms it once the server listens): a missing certificate is ordered at once.
    await this.#loadNames(fresh.map((e) => e.name))
    if (this.#started) {
      for (const entry of fresh) {
        if (entry.record && this.#entries.get(entry.name) === entry) {
          this.#issuers[entry.issuer]!.ari.schedule(entry.name, entry.ari?.nextPollAt ?? this.#clock.now())
        }
      }
    }
    if (fresh.length > 0)
      this.#log.info(
        { names: fresh.map((e) => e.name), onDemand: options.onDemand === true },
        'fastify-acme: names added',
      )
    return canonical.map((name) => statusOf(this.#entries.get(name)!))
  }

  /**
   * Stops managing names: no more renewals, no longer served. Stored files are kept (a later add() serves them at
   * once) unless `deleteStored`. An order in flight for a removed name finishes, and its certificate is stored but
   * not served.
   */
  async remove(names: readonly string[], options: { deleteStored?: boolean } = {}): Promise<void> {
    const canonical = [...new Set(names.map((n) => normalizeServerName(n)))]
    const removed: string[] = []
    for (const name of canonical) {
      const entry = this.#entries.get(name)
      if (!entry) continue
      this.#entries.delete(name)
      this.#maintenance.clear(entry)
      for (const ctx of this.#issuers) ctx.ari.cancel(name)
      this.#states.apply(entry, { to: 'removed' })
      for (const w of entry.waiters.splice(0)) w.reject(new ERR_UNKNOWN_NAME(name))
      // An order running for it installs its certificate when it ends: take it out again then.
      void entry.running?.then(() => {
        if (!this.#entries.has(name)) this.#states.apply(entry, { to: 'removed' })
      })
      removed.push(name)
      if (options.deleteStored) {
        for (const ctx of this.#issuers) {
          const dir = ctx.issuer.dir
          for (const key of [
            keys.certificate(dir, name),
            keys.state(dir, name),
            keys.order(dir, name),
            keys.renewalInfo(dir, name),
          ]) {
            await this.#storage
              .delete(key)
              .catch((err: Error) =>
                this.#log.error({ name, key, err }, 'fastify-acme: could not delete a stored file of a removed name'),
              )
          }
        }
      }
    }
    if (removed.length > 0)
      this.#log.info({ names: removed, deleteStored: options.deleteStored === true }, 'fastify-acme: names removed')
  }

  /**
   * The server listens: schedules every name (renewals and retries at their time, missing certificates now with
   * issueOnStart, interrupted orders at once), reports loaded certificates, starts the background check.
   */
  async start(): Promise<void> {
    if (this.#started) return
    this.#started = true
    // RSA key generation takes a few hundred ms: start it now, before the first order needs it.
    if (this.#o.issueOnStart && this.#o.challenges.includes('tls-alpn-01')) {
      void this.#issuers[0]!.accounts.challengeKey().catch(() => {})
    }
    this.#states.listening()
    this.#maintenance.start(this.#entries.values())
    void this.#checkProfile()
    // Renewal information: each served certificate's stored poll time, or soon (spread over up to a minute when many
    // names have none yet, so a large store does not ask the CA all at once).
    const now = this.#clock.now()
    const spread = Math.min(60_000, 10 * this.#entries.size)
    for (const entry of this.#entries.values()) {
      if (entry.record) {
        this.#issuers[entry.issuer]!.ari.schedule(entry.name, entry.ari?.nextPollAt ?? now + this.#random() * spread)
      }
    }
    this.#sync.start()
    this.#verifying = this.#verifyCached().catch((err: Error) => {
      this.#log.error({ err }, 'fastify-acme: checking the cached certificates stopped')
    })
  }

  /**
   * A configured profile is checked against each CA's directory once the server listens, so a misspelt one is
   * reported at start, not at the first renewal; orders never send a profile the CA does not offer either way.
   */
  async #checkProfile(): Promise<void> {
    const profile = this.#o.profile
    if (profile === undefined) return
    for (const ctx of this.#issuers) {
      const directory = await ctx.accounts.directory(this.#abort.signal).catch(() => undefined)
      if (directory && !Object.hasOwn(directory.profiles, profile)) {
        const err = new ERR_UNKNOWN_PROFILE(profile, Object.keys(directory.profiles).join(', ') || 'none')
        this.#log.error({ err, directory: ctx.issuer.directoryUrl }, 'fastify-acme: certificate profile not offered')
      }
    }
  }

  /** The background check of sealed records served unchecked at load. */
  async #verifyCached(): Promise<void> {
    const pending: Array<{ name: string; record: CertificateRecord }> = []
    for (const entry of this.#entries.values()) {
      if (entry.record && entry.verified === false) pending.push({ name: entry.name, record: entry.record })
    }
    if (pending.length === 0) return
    const started = performance.now()
    let rejected = 0
    const current = (name: string, record: CertificateRecord) => {
      const entry = this.#entries.get(name)
      return entry?.record === record && entry.verified === false
    }
    const checks = checkCached(pending, current, this.#abort.signal)
    let step = await checks.next()
    while (!step.done) {
      const { name, record, actual, error } = step.value
      const entry = this.#entries.get(name)!
      if (error || !actual) {
        rejected++
        this.#drop(entry, record, error ?? new Error('check failed'))
      } else if (
        actual.notBefore !== record.notBefore ||
        actual.notAfter !== record.notAfter ||
        actual.serial !== record.serial
      ) {
        // A record made by another tool: the certificate wins; the renewal time follows it.
        this.#states.apply(entry, { to: 'corrected', record: actual })
        if (!entry.running && entry.next?.kind === 'renew') this.#maintenance.plan(entry)
      } else {
        entry.verified = true
      }
      step = await checks.next()
    }
    this.#log.info(
      { checked: step.value.checked, of: pending.length, rejected, ms: Math.round(performance.now() - started) },
      'fastify-acme: cached certificates checked',
    )
  }

  /** A served cached certificate failed its check (in the background or at its first handshake). */
  #drop(entry: NameEntry, record: CertificateRecord, err: Error): void {
    if (entry.record !== record) return
    this.#states.apply(entry, { to: 'dropped', record, error: err })
    // An order already running will install its certificate.
    if (entry.running) return
    if (!this.#started) this.#maintenance.plan(entry)
    // A persisted retry state still applies: the order reads it and waits if the name is backing off.
    else if (this.#o.issueOnStart) this.#maintenance.set(entry, 'issue', this.#clock.now())
    else this.#maintenance.clear(entry)
  }

  status(name: string): NameStatus | undefined {
    const entry = this.#entries.get(normalizeServerName(name))
    return entry ? statusOf(entry) : undefined
  }

  statuses(): NameStatus[] {
    return [...this.#entries.values()].map(statusOf)
  }

  /** Orders a certificate for `name` now, whatever its schedule; resolves with the new status. */
  async issueNow(name: string): Promise<NameStatus> {
    const entry = this.#entries.get(normalizeServerName(name))
    if (!entry) throw new ERR_UNKNOWN_NAME(name)
    // An order already running was started before this request: wait for it, then order anew.
    if (entry.running) await entry.running
    const outcome = await this.#run(entry.name, 'manual')
    if (outcome.kind === 'failed' || outcome.kind === 'abandoned' || outcome.kind === 'paused') throw outcome.error
    return statusOf(entry)
  }

  /** Resolves once `name` has a certificate being served (at once if it already has one). */
  waitForCertificate(name: string): Promise<NameStatus> {
    const entry = this.#entries.get(normalizeServerName(name))
    if (!entry) return Promise.reject(new ERR_UNKNOWN_NAME(name))
    if (entry.record) return Promise.resolve(statusOf(entry))
    return new Promise((resolve, reject) => entry.waiters.push({ resolve, reject }))
  }

  /** Asks the CA when to renew the certificate `name` serves; its renewal time follows the answer. */
  async #pollAri(name: string): Promise<void> {
    const entry = this.#entries.get(name)
    const record = entry?.record
    if (!entry || !record || this.#abort.signal.aborted) return
    const ctx = this.#issuers[entry.issuer]!
    const { state, nextPollAt } = await ctx.ari.poll(name, record, entry.ari)
    // Replaced meanwhile: the new certificate has polls of its own.
    if (entry.record !== record || this.#abort.signal.aborted) return
    entry.ari = state
    if (!entry.running && (entry.next === undefined || entry.next.kind === 'renew')) this.#maintenance.plan(entry)
    if (nextPollAt !== undefined) ctx.ari.schedule(name, nextPollAt)
  }

  /** Polls of renewal information sent by this process. */
  get renewalInfoPolls(): number {
    return this.#issuers.reduce((sum, ctx) => sum + ctx.ari.polls, 0)
  }

  async close(): Promise<void> {
    this.#sync.stop()
    for (const ctx of this.#issuers) ctx.ari.stop()
    this.#maintenance.stop()
    this.#abort.abort(new ERR_CLOSED())
    // A reconcile stops at its next batch; nothing writes to the storage after close() returns.
    await this.#reconciling
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

  /** Runs one attempt for `name` (at most one at a time) and schedules what follows from its outcome. */
  #run(name: string, requested: OrderReason | undefined): Promise<Outcome> {
    const entry = this.#entries.get(name)
    if (!entry) return Promise.reject(new ERR_UNKNOWN_NAME(name))
    if (this.#abort.signal.aborted) return Promise.resolve({ kind: 'abandoned', error: new ERR_CLOSED() })
    if (entry.running) {
      return entry.running.then(() => ({ kind: 'abandoned', error: new ERR_CLOSED() }) as Outcome)
    }
    this.#maintenance.running(entry)
    const reason: OrderReason =
      requested === 'manual'
        ? 'manual'
        : entry.failures > 0
          ? 'retry'
          : (requested ?? (entry.record ? 'renewal' : 'missing'))
    const attempt = this.#runner.run(entry, reason).then((outcome) => {
      this.#follow(entry, outcome)
      return outcome
    })
    const running = attempt.then(
      () => undefined,
      () => undefined,
    )
    entry.running = running
    void running.then(() => {
      if (entry.running === running) entry.running = undefined
    })
    return attempt
  }

  /** What comes after an attempt. */
  #follow(entry: NameEntry, outcome: Outcome): void {
    switch (outcome.kind) {
      case 'issued':
      case 'adopted':
        this.#maintenance.plan(entry)
        for (const w of entry.waiters.splice(0)) w.resolve(statusOf(entry))
        // The new certificate's renewal window, from the CA that issued it.
        this.#issuers[entry.issuer]!.ari.schedule(entry.name, this.#clock.now())
        return
      case 'wait':
        this.#maintenance.set(entry, outcome.next, outcome.at)
        return
      case 'failed':
        this.#maintenance.set(entry, 'retry', outcome.at)
        return
      case 'abandoned':
        if (outcome.at !== undefined && !this.#abort.signal.aborted) this.#maintenance.set(entry, 'retry', outcome.at)
        return
      case 'paused':
        if (!this.#abort.signal.aborted) this.#maintenance.set(entry, outcome.next, outcome.at, STORAGE_PAUSE)
        return
    }
  }

  /** What the storage told (another instance's certificate, an outage, its end) and the periodic look. */
  #heard(notice: SyncNotice): void {
    if (this.#abort.signal.aborted) return
    switch (notice.kind) {
      case 'certificate': {
        const entry = this.#entries.get(notice.name)
        if (entry) void this.#adoptFromStorage(entry)
        return
      }
      case 'unreachable':
        this.#log.warn({ err: notice.error }, 'fastify-acme: the storage is unreachable; orders pause, serving goes on')
        return
      case 'resync':
        this.#log.info('fastify-acme: the storage is reachable again; reading it again')
        void this.#reconcile(true)
        return
      case 'reconcile':
        void this.#reconcile(false)
        return
    }
  }

  /** Serves the certificate another instance stored for `entry`, if it is newer than ours. */
  async #adoptFromStorage(entry: NameEntry): Promise<void> {
    // An attempt running here re-reads storage once it holds the lock, and adopts then.
    if (entry.running || this.#entries.get(entry.name) !== entry) return
    const adopted = await this.#runner.adopt(entry).catch(() => false)
    if (adopted && !entry.running && !this.#abort.signal.aborted) this.#follow(entry, { kind: 'adopted' })
  }

  /**
   * Reads every name's stored certificate: serves the newer ones other instances stored (a lost notification),
   * and puts back the ones a storage that came back empty no longer holds (with the account); after an outage,
   * names whose orders paused are due again at once.
   */
  #reconcile(afterOutage: boolean): Promise<void> {
    if (this.#reconciling) {
      this.#reconcileAgain ||= afterOutage
      return this.#reconciling
    }
    const run = this.#reconcileOnce(afterOutage)
      .catch((err: Error) => this.#log.warn({ err }, 'fastify-acme: reading the storage again failed'))
      .finally(() => {
        this.#reconciling = undefined
        if (this.#reconcileAgain && !this.#abort.signal.aborted) {
          this.#reconcileAgain = false
          void this.#reconcile(true)
        }
      })
    this.#reconciling = run
    return run
  }

  async #reconcileOnce(afterOutage: boolean): Promise<void> {
    const started = performance.now()
    let adopted = 0
    let reseeded = 0
    const storage = this.#storage
    const entries = [...this.#entries.values()]
    for (const ctx of this.#issuers) {
      for (let i = 0; i < entries.length; i += RECONCILE_BATCH) {
        if (this.#abort.signal.aborted) return
        const batch = entries.slice(i, i + RECONCILE_BATCH)
        const storeKeys = batch.map((entry) => keys.certificate(ctx.issuer.dir, entry.name))
        const values = storage.getMany
          ? await storage.getMany(storeKeys)
          : await Promise.all(storeKeys.map((key) => storage.get(key).catch((err: Error) => err)))
        for (let j = 0; j < batch.length; j++) {
          const entry = batch[j]!
          const value = values[j]
          if (value instanceof Error || this.#entries.get(entry.name) !== entry) continue
          const stored = parseRecord(value)
          const ours = entry.issuer === ctx.index ? entry.record : undefined
          if (ours && !entry.running && (stored === undefined || newerRecord(ours, stored))) {
            // Lost by the storage (restarted empty), or older than ours (our write failed): put back what we serve.
            // The others adopt it; the order of newerRecord() is the same everywhere, so this settles.
            await storage.put(storeKeys[j]!, JSON.stringify(ours))
            reseeded++
          } else if (stored && !entry.running && (!entry.record || newerRecord(stored, entry.record))) {
            const before = entry.record
            await this.#adoptFromStorage(entry)
            if (entry.record !== before) adopted++
          }
        }
      }
      if (afterOutage) {
        const restored = await ctx.accounts.reseed()
        if (restored.length > 0) this.#log.warn({ restored }, 'fastify-acme: put back into the storage')
      }
    }
    if (afterOutage) {
      const now = this.#clock.now()
      for (const entry of this.#entries.values()) {
        if (!entry.running && entry.next?.source === STORAGE_PAUSE) this.#maintenance.set(entry, entry.next.kind, now)
      }
    }
    if (afterOutage || adopted > 0 || reseeded > 0) {
      this.#log.info(
        { names: entries.length, adopted, reseeded, ms: Math.round(performance.now() - started) },
        'fastify-acme: storage reconciled',
      )
    }
  }
}
