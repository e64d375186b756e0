// One order for one name, in one direction: decide -> lock -> re-check storage -> order (or resume the order a
// stopped process left) -> store -> install. The CA conversation is acme.ts's; this file decides what to ask and
// stores each step's result before the next, so that a crash costs no extra order. It returns the outcome; the
// manager schedules what follows.
import type { FastifyBaseLogger } from 'fastify'
import {
  ACCOUNT_DOES_NOT_EXIST,
  type AccountRecord,
  type AcmeOrder,
  AcmeSession,
  generateCertificateKey,
  type NewOrderExtras,
} from '../acme.js'
import {
  type CertificateRecord,
  checkPair,
  newerRecord,
  parseRecord,
  recordDigest,
  recordSeal,
} from '../certificate.js'
import { type CaFacts, factsOf, withFacts } from '../error-facts.js'
import {
  ERR_CLOSED,
  ERR_INTERRUPTED,
  ERR_NO_CHALLENGE,
  ERR_ORDER_FAILED,
  ERR_ORDER_TIMEOUT,
  ERR_UNKNOWN_PROFILE,
} from '../errors.js'
import type { OrderReason } from '../events.js'
import type { Clock, ResolvedOptions } from '../options.js'
import { isUnreachable, keys, type Lease, type Storage } from '../storage/index.js'
import { type AccountKeeper, RESERVATION_BYTES } from './account.js'
import { certIdOfRecord } from './ari-poller.js'
import { nextAttemptDelay } from './backoff.js'
import { type ChallengeResponder, presenterFor } from './challenges.js'
import { type Issuer, lastingRefusal, nextIssuer } from './issuers.js'
import type { Maintenance } from './maintenance.js'
import type { OrderJournal, OrderJournals } from './order-journal.js'
import type { OrderBudget } from './rate-limit.js'
import type { RetryState, RetryStates } from './retry-state.js'
import type { Slots } from './slots.js'
import type { NameEntry, NameStates, NextKind } from './state.js'

export type Outcome =
  /** A certificate is served: ordered here, or found in storage (another process's). */
  | { kind: 'issued' | 'adopted' }
  /** Nothing ordered now; the name is due again at `at` (backing off, budget used up, an interrupted order gone). */
  | { kind: 'wait'; next: NextKind; at: number }
  /** The attempt failed; retry at `at`. */
  | { kind: 'failed'; error: Error & { code: string }; at: number }
  /** Abandoned without a verdict: close(), or the storage lock was lost (another instance may carry on). */
  | { kind: 'abandoned'; error: Error; at?: number }
  /** The storage could not be reached to take the lock: nothing was asked of the CA, nothing counted; again at `at`. */
  | { kind: 'paused'; next: NextKind; error: Error; at: number }

/** What an attempt needs of one CA. */
export interface IssuerContext {
  readonly index: number
  readonly issuer: Issuer
  readonly accounts: AccountKeeper
  readonly budget: OrderBudget
}

export interface OrderDeps {
  options: ResolvedOptions
  /** Every CA, in order; [0] also holds the per-name locks, retry states and order journals. */
  issuers: readonly IssuerContext[]
  storage: Storage
  clock: Clock
  log: FastifyBaseLogger
  random: () => number
  states: NameStates
  maintenance: Maintenance
  retries: RetryStates
  journals: OrderJournals
  slots: Slots
  responders: readonly ChallengeResponder[]
  /** Aborts when the plugin closes. */
  closing: AbortSignal
}

/** After a lost lock, look again this soon: the storage then says whether the other holder finished. */
const LOST_LOCK_RECHECK_MS = 5_000
/** While the storage cannot be reached, look again this often (sooner when it tells it is back). */
const STORAGE_PAUSE_MS = 5_000
/** The reason of a name whose order waits for the storage (the manager makes those due again once it is back). */
export const STORAGE_PAUSE = 'storage unreachable'

/** Thrown inside an attempt when the interrupted order it was resuming is gone or dead at the CA. */
class OrderGone extends Error {}

export class OrderRunner {
  readonly #d: OrderDeps
  /** Orders this process sent to the CA (new orders only; a resumed order is not a new one). */
  ordersSent = 0

  constructor(deps: OrderDeps) {
    this.#d = deps
  }

  async run(entry: NameEntry, reason: OrderReason): Promise<Outcome> {
    const { slots, storage, issuers, options, closing } = this.#d
    const name = entry.name
    await slots.acquire()
    let lease: Lease | undefined
    try {
      closing.throwIfAborted()
      lease = await storage.lock(keys.orderLock(issuers[0]!.issuer.dir, name), {
        timeoutMs: options.orderTimeoutMs,
        signal: closing,
      })
      return await this.#locked(entry, reason, lease)
    } catch (err) {
      if (closing.aborted) return { kind: 'abandoned', error: new ERR_CLOSED({ cause: err }) }
      // The storage is unreachable (a shared store's outage): no order without it; this is no failure of the name
      // and costs no backoff. Orders pause until the storage answers again.
      if (isUnreachable(err)) return this.#paused(entry, err as Error)
      // Taking the lock (or reading storage) failed: a failure like any other, with its backoff.
      return this.#failed(entry, err, undefined)
    } finally {
      await lease?.release().catch(() => {})
      slots.release()
    }
  }

  async #locked(entry: NameEntry, reason: OrderReason, lease: Lease): Promise<Outcome> {
    const { storage, issuers, retries, journals, clock, states, closing, options } = this.#d
    const name = entry.name
    const home = issuers[0]!.issuer.dir
    // Another process sharing this storage may have renewed (or failed) while we waited for the lock.
    if (reason !== 'manual' && (await this.adopt(entry))) return { kind: 'adopted' }
    // A certificate adopted meanwhile (told by another instance while this attempt waited for the lock) that is not
    // due: nothing to order.
    if (reason === 'renewal' || reason === 'missing') {
      if (entry.record && this.#d.maintenance.renewAt(entry, () => 0).at > clock.now()) return { kind: 'adopted' }
    }
    const priorRaw = await retries.raw(name).catch(() => undefined)
    const retry = retries.parse(priorRaw)
    // The stored count is the truth (another process, or a retry state load() did not see): the next failure's
    // backoff continues from it.
    if (retry && retry.failures > entry.failures) states.apply(entry, { to: 'restored', failures: retry.failures })
    let journal = await journals.read(name)
    // An order in flight is resumed whatever the backoff: resuming sends no new order.
    if (!journal && reason !== 'manual' && retry && retry.nextAttemptAt > clock.now()) {
      return { kind: 'wait', next: 'retry', at: retry.nextAttemptAt }
    }
    // An interrupted order is carried on with its own CA; a new one goes to the issuer the retry state names.
    const ctx =
      issuers.find(
        (c) =>
          journal !== undefined && c.issuer.directoryUrl === (journal.directoryUrl ?? issuers[0]!.issuer.directoryUrl),
      ) ?? issuers[Math.min(retry?.issuer ?? 0, issuers.length - 1)]!
    if (!journal) {
      const wait = await ctx.budget.take(clock.now(), closing)
      if (wait > 0) {
        const until = clock.now() + wait
        states.apply(entry, { to: 'deferred', reason: 'order budget used up', until })
        return { kind: 'wait', next: entry.record ? 'renew' : 'issue', at: until }
      }
    }
    await retries.markOrdering(name, retry, clock.now())
    let reserved = false
    const timeout = AbortSignal.timeout(options.orderTimeoutMs)
    const signal = AbortSignal.any([closing, lease.lost, timeout])
    try {
      // ... and room for the certificate itself, much larger than that state: a reservation the size of a large
      // record, given back just before the certificate is written.
      await storage.put(keys.reservation(home, name), Buffer.alloc(RESERVATION_BYTES))
      reserved = true
      const attempt = (retry?.failures ?? 0) + 1
      states.apply(entry, { to: 'ordering', reason: journal ? 'resume' : reason, attempt })
      let account = await ctx.accounts.ensure(signal)
      let issued: { keyPem: string; chainPem: string; orderUrl: string }
      try {
        issued = await this.#obtain(entry, ctx, account, journal, signal)
      } catch (err) {
        if ((err as CaFacts).problemType !== ACCOUNT_DOES_NOT_EXIST) throw err
        // The CA forgot the account, and with it any order of ours: register the same key again, order anew.
        account = await ctx.accounts.reRegister(account, signal)
        if (journal) await journals.remove(name)
        journal = undefined
        issued = await this.#obtain(entry, ctx, account, undefined, signal)
      }
      const record = this.#record(entry, issued)
      // Store first, then serve: a certificate we serve is always one we will find again after a restart. If storing
      // fails we still serve it (it is valid) and the error is logged; the retry state stays.
      try {
        await storage.delete(keys.reservation(home, name))
        reserved = false
        // Under the issuing CA's folder: certificates stay keyed by directory URL.
        await storage.put(keys.certificate(ctx.issuer.dir, name), JSON.stringify(record))
        await journals.remove(name)
        await retries.clear(name)
      } catch (err) {
        this.#d.log.error(
          { name, err },
          'fastify-acme: certificate issued but could not be stored; serving it from memory',
        )
      }
      states.apply(entry, { to: 'issued', record, issuer: ctx.index })
      return { kind: 'issued' }
    } catch (err) {
      if (isUnreachable(err) && !closing.aborted) {
        // The storage went away in the middle (before the lease noticed): as for a lost lock, nothing counts; an
        // order already at the CA stays journaled where the storage still has it.
        await retries.restore(name, priorRaw).catch(() => {})
        states.apply(entry, { to: 'idle' })
        return this.#paused(entry, err as Error)
      }
      if (closing.aborted || lease.lost.aborted) {
        // Stopped by close() or by losing the lock, not failed: the retry state goes back to what it was, so the
        // interruption costs nothing; an order in flight stays journaled and is resumed next time.
        await retries.restore(name, priorRaw).catch(() => {})
        states.apply(entry, { to: 'idle' })
        if (closing.aborted) return { kind: 'abandoned', error: new ERR_CLOSED({ cause: err }) }
        this.#d.log.warn({ name, err: lease.lost.reason }, 'fastify-acme: storage lock lost; the order stopped')
        return { kind: 'abandoned', error: lease.lost.reason as Error, at: clock.now() + LOST_LOCK_RECHECK_MS }
      }
      if (err instanceof OrderGone) return this.#interrupted(entry, retry, err.message, ctx.index)
      const coded = timeout.aborted ? new ERR_ORDER_TIMEOUT(name, options.orderTimeoutMs, { cause: err }) : err
      // A validation verdict, or authorizations given up (deactivated), end the order at the CA: nothing to resume.
      const dead = coded as { orderDead?: boolean; code?: string }
      if (factsOf(coded).validation || dead.orderDead || dead.code === 'FACME_NO_CHALLENGE') {
        await journals.remove(name).catch(() => {})
      }
      return this.#failed(entry, coded, retry, ctx.index)
    } finally {
      if (reserved) await storage.delete(keys.reservation(home, name)).catch(() => {})
    }
  }

  /**
   * The certificate of a new order, or of the journaled one: fetched, then carried on from its status (pending:
   * answer the challenges; ready: finalize; processing: wait; valid: download).
   */
  async #obtain(
    entry: NameEntry,
    ctx: IssuerContext,
    account: AccountRecord,
    journal: OrderJournal | undefined,
    signal: AbortSignal,
  ): Promise<{ keyPem: string; chainPem: string; orderUrl: string }> {
    const { journals, clock, log, options, responders, states } = this.#d
    const { accounts } = ctx
    const name = entry.name
    const names = [...entry.sans]
    const session = new AcmeSession(account, ctx.issuer.eab, (step, detail) =>
      log.info({ name, ...detail }, `fastify-acme: ${step}`),
    )
    const presenter = presenterFor(entry, options.challenges, responders, () => accounts.challengeKey(), states)
    let order: AcmeOrder | undefined
    if (journal) {
      order = journal.accountUrl === account.url ? await session.fetchOrder(signal, journal.orderUrl) : undefined
      const next = !order
        ? 'the CA no longer has it: a new order follows the retry rules'
        : order.status === 'invalid'
          ? 'it is invalid: a new order follows the retry rules'
          : order.status === 'valid' && !journal.keyPem
            ? 'it is valid but its key was not kept: a new order follows the retry rules'
            : {
                pending: 'answer its challenges',
                ready: 'finalize it',
                processing: 'wait for it',
                valid: 'download the certificate',
              }[order.status]
      log.info(
        {
          name,
          orderUrl: journal.orderUrl,
          startedAt: new Date(journal.startedAt).toISOString(),
          status: order?.status ?? 'gone',
          expires: order?.expires,
          next,
        },
        'fastify-acme: found an order interrupted by a restart',
      )
      if (!order || order.status === 'invalid' || (order.status === 'valid' && !journal.keyPem)) {
        await journals.remove(name)
        throw new OrderGone(`the order interrupted by a restart (${journal.orderUrl}) ${next}`)
      }
    } else {
      if (presenter.types.length === 0) {
        throw new ERR_NO_CHALLENGE(
          name,
          `none of the challenge types ${options.challenges.join(', ')} can be answered by this server now`,
        )
      }
      order = await this.#newOrder(entry, ctx, session, names, signal)
      journal = {
        orderUrl: order.url,
        names,
        accountUrl: account.url,
        directoryUrl: ctx.issuer.directoryUrl,
        startedAt: clock.now(),
      }
      // Before any challenge is answered: from here on, a crash resumes this order.
      await this.#journal(name, journal)
    }
    if (order.status === 'pending') await session.authorize(signal, order, presenter)
    if (order.status === 'pending' || order.status === 'ready') {
      if (!journal.keyPem) {
        // Kept before finalize: an order finalized just before a crash is downloaded and paired with this key.
        journal = { ...journal, keyPem: await generateCertificateKey(options.keyType) }
        await this.#journal(name, journal)
      }
      order = await session.finalize(signal, order, journal.names, journal.keyPem as string)
    } else if (order.status === 'processing') {
      order = await session.waitValid(signal, order)
    }
    const chainPem = await session.download(signal, order)
    return { keyPem: journal.keyPem as string, chainPem, orderUrl: order.url }
  }

  /**
   * A new order at the CA: with the configured profile (only if the CA offers it) and, for a renewal at a CA that
   * offers ARI, `replaces` naming the certificate it renews (RFC 9773: such renewals are exempt from Let's Encrypt's
   * rate limits). A refusal of `replaces` (already replaced, conflict, not ours) is followed by one order without
   * it, never a loop.
   */
  async #newOrder(
    entry: NameEntry,
    ctx: IssuerContext,
    session: AcmeSession,
    names: string[],
    signal: AbortSignal,
  ): Promise<AcmeOrder> {
    const { options, log } = this.#d
    const directory = await ctx.accounts.directory(signal)
    const extras: NewOrderExtras = {}
    if (options.profile !== undefined) {
      if (!Object.hasOwn(directory.profiles, options.profile)) {
        throw new ERR_UNKNOWN_PROFILE(options.profile, Object.keys(directory.profiles).join(', ') || 'none')
      }
      extras.profile = options.profile
    }
    // Only a renewal at the CA that issued the certificate names it.
    const replaces =
      directory.renewalInfo && entry.record && entry.issuer === ctx.index ? certIdOfRecord(entry.record) : undefined
    this.ordersSent++
    if (replaces === undefined) return session.newOrder(signal, names, extras)
    try {
      return await session.newOrder(signal, names, { ...extras, replaces })
    } catch (err) {
      if (!refusesReplaces(err, replaces)) throw err
      log.warn(
        { name: entry.name, replaces, err: { message: (err as Error).message, code: (err as { code?: string }).code } },
        'fastify-acme: the CA refused `replaces`; ordering once without it',
      )
      this.ordersSent++
      return session.newOrder(signal, names, extras)
    }
  }

  /**
   * Keeps the order's progress. Best effort: the space reserved before the order is for the certificate, so a full
   * disk that refuses the journal costs the order's resumability after a crash, never the certificate.
   */
  async #journal(name: string, journal: OrderJournal): Promise<void> {
    try {
      await this.#d.journals.write(name, journal)
    } catch (err) {
      this.#d.log.warn(
        { name, err },
        'fastify-acme: could not keep the order in storage; a crash before it ends would need a new order',
      )
    }
  }

  #record(entry: NameEntry, issued: { keyPem: string; chainPem: string; orderUrl: string }): CertificateRecord {
    const name = entry.name
    // Every name of the certificate must be covered, the first one checked last (its facts are kept).
    for (const san of entry.sans.slice(1)) checkPair(san, issued.keyPem, issued.chainPem)
    const info = checkPair(name, issued.keyPem, issued.chainPem)
    const record: CertificateRecord = {
      name,
      keyPem: issued.keyPem,
      chainPem: issued.chainPem,
      keyType: this.#d.options.keyType,
      notBefore: info.notBefore.toISOString(),
      notAfter: info.notAfter.toISOString(),
      serial: info.serial,
      issuer: info.issuer,
      issuedAt: new Date(this.#d.clock.now()).toISOString(),
      orderUrl: issued.orderUrl,
      digest: recordDigest(issued.keyPem, issued.chainPem),
    }
    const certId = certIdOfRecord(record)
    if (certId !== undefined) record.certId = certId
    if (this.#d.options.profile !== undefined) record.profile = this.#d.options.profile
    record.seal = recordSeal(record)
    return record
  }

  /** If storage holds a newer, not-yet-due certificate than ours (another process renewed it), serve that. */
  async adopt(entry: NameEntry): Promise<boolean> {
    const { storage, issuers, clock, states, maintenance } = this.#d
    for (const ctx of issuers) {
      const record = parseRecord(await storage.get(keys.certificate(ctx.issuer.dir, entry.name)).catch(() => undefined))
      if (!record || record.serial === entry.record?.serial) continue
      if (entry.record && !newerRecord(record, entry.record)) continue
      try {
        checkPair(entry.name, record.keyPem, record.chainPem)
      } catch {
        continue
      }
      const probe = { ...entry, record, ari: undefined }
      if (maintenance.renewAt(probe, () => 0).at <= clock.now()) continue
      states.apply(entry, { to: 'adopted', record, issuer: ctx.index })
      return true
    }
    return false
  }

  #paused(entry: NameEntry, error: Error): Outcome {
    const at = this.#d.clock.now() + STORAGE_PAUSE_MS
    const next: NextKind = entry.failures > 0 ? 'retry' : entry.record ? 'renew' : 'issue'
    if (entry.next?.source !== STORAGE_PAUSE)
      this.#d.states.apply(entry, { to: 'deferred', reason: STORAGE_PAUSE, until: at })
    return { kind: 'paused', next, error, at }
  }

  /** The interrupted order cannot be carried on: the interruption counts as the failure the retry state says. */
  async #interrupted(
    entry: NameEntry,
    retry: RetryState | undefined,
    message: string,
    issuer: number,
  ): Promise<Outcome> {
    const { retries, clock, states } = this.#d
    const now = clock.now()
    const failures =
      Math.max(retry?.failures ?? 0, entry.failures) + (retry?.lastErrorCode === 'FACME_INTERRUPTED' ? 0 : 1)
    const at = Math.max(retry?.nextAttemptAt ?? 0, now)
    const error = new ERR_INTERRUPTED(message)
    const state: RetryState = {
      failures,
      nextAttemptAt: at,
      lastError: error.message,
      lastErrorCode: error.code,
      lastErrorAt: now,
      issuer,
      issuerFailures: retry?.issuerFailures,
    }
    await retries.write(entry.name, state).catch(() => {})
    states.apply(entry, { to: 'failed', error, failures, nextAttemptAt: at })
    return { kind: 'wait', next: 'retry', at }
  }

  async #failed(entry: NameEntry, err: unknown, retry: RetryState | undefined, issuer = 0): Promise<Outcome> {
    const { retries, clock, states, options, random, log, issuers } = this.#d
    const error = coded(entry.name, err)
    const failures = Math.max(entry.failures, retry?.failures ?? 0) + 1
    const facts = factsOf(error)
    const now = clock.now()
    const next = nextIssuer(
      issuers.length,
      issuer,
      (retry?.issuer === issuer ? (retry.issuerFailures ?? 0) : 0) + 1,
      options.issuerAttempts,
      lastingRefusal({ ...facts, code: error.code }),
    )
    // Moving on to another CA: this CA's Retry-After and backoff do not apply there; the shortest backoff does.
    const moving = next.issuer !== issuer
    const at =
      now + (moving ? nextAttemptDelay(1, {}, options, random) : nextAttemptDelay(failures, facts, options, random))
    if (moving) {
      log.warn(
        {
          name: entry.name,
          from: issuers[issuer]?.issuer.directoryUrl,
          to: issuers[next.issuer]?.issuer.directoryUrl,
          at: new Date(at).toISOString(),
        },
        'fastify-acme: the next attempt orders from the next issuer',
      )
    }
    const state: RetryState = {
      failures,
      nextAttemptAt: at,
      lastError: error.message,
      lastErrorCode: error.code,
      lastErrorAt: now,
      issuer: next.issuer,
      issuerFailures: next.failuresHere,
    }
    await retries.write(entry.name, state).catch((storeErr: Error) => {
      log.error({ name: entry.name, err: storeErr }, 'fastify-acme: could not persist the retry state')
    })
    states.apply(entry, { to: 'failed', error, failures, nextAttemptAt: at })
    return { kind: 'failed', error, at }
  }
}

/** A storage error marked `unreachable` (see Storage), on the error or on its cause. */
const REPLACES_REFUSED = new Set(['urn:ietf:params:acme:error:alreadyReplaced', 'urn:ietf:params:acme:error:conflict'])

/** A newOrder refused because of its `replaces` field (Let's Encrypt says malformed when the AKI is another CA's). */
function refusesReplaces(err: unknown, certId: string): boolean {
  const { problemType } = factsOf(err)
  if (problemType !== undefined && REPLACES_REFUSED.has(problemType)) return true
  const message = err instanceof Error ? err.message : ''
  return (
    problemType === 'urn:ietf:params:acme:error:malformed' && (/replace/i.test(message) || message.includes(certId))
  )
}

/** Every failure leaves with a FACME_* code; one without (a bug, a storage of the user's) is wrapped. */
function coded(name: string, err: unknown): Error & { code: string } {
  const code = (err as { code?: unknown })?.code
  if (err instanceof Error && typeof code === 'string' && code.startsWith('FACME_'))
    return err as Error & { code: string }
  const message = err instanceof Error ? err.message : String(err)
  return withFacts(new ERR_ORDER_FAILED(name, message, { cause: err }), factsOf(err)) as Error & { code: string }
}
