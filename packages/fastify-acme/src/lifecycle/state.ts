// One managed name's state, and the one function that changes it. Every change goes through `apply()`, which in
// the same step updates what is served (the resolver), the status, the typed event and the log line, so the
// four can never disagree. Scheduling is data (`next`, a number), set by maintenance.ts; status() only displays it.
import type { FastifyBaseLogger } from 'fastify'
import type { CertificateRecord } from '../certificate.js'
import { factsOf } from '../error-facts.js'
import type { AcmeEventEmitter, OrderReason } from '../events.js'
import type { ChallengeType, Clock } from '../options.js'
import type { CertResolver } from '../resolver.js'
import type { AriState } from './ari.js'

export type NameState = 'pending' | 'valid' | 'expired' | 'ordering' | 'error'
export type NextKind = 'issue' | 'renew' | 'retry' | 'resume'

/** The public view of one managed name (what app.acme.status() returns). */
export interface NameStatus {
  name: string
  state: NameState
  notBefore?: string
  notAfter?: string
  issuer?: string
  serial?: string
  lastError?: {
    message: string
    /** A FACME_* code (see the errors table). */
    code: string
    at: string
    problemType?: string
    status?: number
    networkCode?: string
  }
  nextAction?: { kind: NextKind; at: string; source?: string }
  /** The CA's renewal window (ARI) for the served certificate, when it gave one, and the time picked in it. */
  renewalInfo?: { window: { start: string; end: string }; selectedAt: string; explanationURL?: string }
  /** Consecutive failed attempts since the last success. */
  failures: number
}

/** Everything the manager knows about one name. */
export interface NameEntry {
  /** The certificate's first name: its key in storage, status and events. */
  readonly name: string
  /** Every name the certificate covers (the first is `name`); served for all of them. */
  readonly sans: readonly string[]
  state: NameState
  /** The certificate served for the name, if any. */
  record: CertificateRecord | undefined
  /** Obtained on demand (counts against the on-demand certificate cap). */
  onDemand: boolean
  /** Which issuer (index in the list) the served certificate came from. */
  issuer: number
  /** false: a sealed cached record served before its full check; true once checked (or issued here). */
  verified: boolean | undefined
  failures: number
  lastError: { message: string; code: string; at: number; facts: ReturnType<typeof factsOf> } | undefined
  /** The CA's renewal information for the served certificate (its certId matches), if any. */
  ari: AriState | undefined
  /** When the name next needs work, and why: the scheduler's data, never parsed back from status. */
  next: { kind: NextKind; at: number; source?: string } | undefined
  /** Challenge types whose last validation failed for this name: the next attempt tries the others first. */
  failedTypes: Set<ChallengeType>
  /** The order running for the name, if any. */
  running: Promise<void> | undefined
  /** Callers of waitForCertificate() until the name is served. */
  waiters: Array<{ resolve: (s: NameStatus) => void; reject: (e: Error) => void }>
}

export function newEntry(name: string, sans: readonly string[] = [name]): NameEntry {
  return {
    name,
    sans,
    state: 'pending',
    record: undefined,
    onDemand: false,
    issuer: 0,
    verified: undefined,
    failures: 0,
    lastError: undefined,
    ari: undefined,
    next: undefined,
    failedTypes: new Set(),
    running: undefined,
    waiters: [],
  }
}

/** What can happen to a name. */
export type Change =
  /** A cached certificate is served from start (`verified: false` when its full check is still to come). */
  | { to: 'loaded'; record: CertificateRecord; issuer: number; verified: boolean; onUnusable: (err: Error) => void }
  /** Retry state found in storage at start. */
  /**
   * A retry state read from storage (at load, with its last error; or under the order lock, when storage holds a
   * higher failure count than memory: another process failed meanwhile).
   */
  | { to: 'restored'; failures: number; error?: { message: string; code: string; at: number } }
  /** A served cached certificate failed its check. */
  | { to: 'dropped'; record: CertificateRecord; error: Error }
  /** The certificate's metadata was corrected from the certificate itself (background check). */
  | { to: 'corrected'; record: CertificateRecord }
  | { to: 'ordering'; reason: OrderReason; attempt: number }
  | { to: 'challenge'; type: ChallengeType }
  | { to: 'issued'; record: CertificateRecord; issuer: number }
  | { to: 'adopted'; record: CertificateRecord; issuer: number }
  | { to: 'failed'; error: Error & { code: string }; failures: number; nextAttemptAt: number }
  | { to: 'deferred'; reason: string; until: number }
  /** The name is no longer managed: not served any more. */
  | { to: 'removed' }
  /** An order ended without a result of its own (closed, lock lost): the state before it comes back. */
  | { to: 'idle' }

export interface StateDeps {
  resolver: CertResolver
  events: AcmeEventEmitter
  log: FastifyBaseLogger
  clock: Clock
}

export class NameStates {
  readonly #d: StateDeps
  /** Names whose cached certificate was loaded before listening: their events wait for listeners. */
  #loadedBeforeListening: NameEntry[] | undefined = []

  constructor(deps: StateDeps) {
    this.#d = deps
  }

  /** The one transition function. */
  apply(entry: NameEntry, change: Change): void {
    const { resolver, events, log, clock } = this.#d
    const name = entry.name
    switch (change.to) {
      case 'loaded': {
        const { record } = change
        // A context that cannot be built at the first handshake drops the name like a failed check.
        for (const san of entry.sans)
          resolver.setLazy(san, { key: record.keyPem, cert: record.chainPem }, change.onUnusable)
        entry.record = record
        entry.issuer = change.issuer
        entry.verified = change.verified
        if (!entry.running) entry.state = this.#servedState(record)
        // Per name at debug only: thousands of names would otherwise cost more in log lines than in loading.
        log.debug({ name, notAfter: record.notAfter, serial: record.serial }, 'fastify-acme: cached certificate loaded')
        if (this.#loadedBeforeListening) this.#loadedBeforeListening.push(entry)
        else this.#emitLoaded(entry)
        return
      }
      case 'restored': {
        entry.failures = change.failures
        if (!change.error) return
        entry.lastError = { ...change.error, facts: {} }
        if (!entry.record) entry.state = 'error'
        log.debug({ name, failures: change.failures, lastError: change.error.message }, 'fastify-acme: retry state')
        return
      }
      case 'dropped': {
        // Only the record still served can be dropped (a newer one may have replaced it meanwhile).
        if (entry.record !== change.record) return
        for (const san of entry.sans) resolver.delete(san)
        entry.record = undefined
        entry.verified = undefined
        if (!entry.running) entry.state = entry.failures > 0 ? 'error' : 'pending'
        log.warn({ name, err: change.error }, 'fastify-acme: cached certificate is unusable; treating it as missing')
        events.emit('certificate-dropped', { name, error: change.error })
        return
      }
      case 'corrected': {
        const stored = entry.record
        for (const san of entry.sans) resolver.setLazy(san, { key: change.record.keyPem, cert: change.record.chainPem })
        entry.record = change.record
        entry.verified = true
        if (!entry.running) entry.state = this.#servedState(change.record)
        log.warn(
          {
            name,
            stored: { notAfter: stored?.notAfter, serial: stored?.serial },
            actual: { notAfter: change.record.notAfter, serial: change.record.serial },
          },
          'fastify-acme: cached certificate metadata did not match the certificate; corrected',
        )
        return
      }
      case 'ordering': {
        entry.state = 'ordering'
        events.emit('order-started', { name, reason: change.reason, attempt: change.attempt })
        log.info({ name, reason: change.reason, attempt: change.attempt }, 'fastify-acme: ordering certificate')
        return
      }
      case 'challenge': {
        events.emit('challenge-presented', { name, type: change.type })
        log.info({ name, type: change.type }, 'fastify-acme: challenge presented')
        return
      }
      case 'issued':
      case 'adopted': {
        const { record } = change
        // Built now: a pair that cannot be served fails here, before anything changes; one context for every name.
        resolver.setMany(entry.sans, { key: record.keyPem, cert: record.chainPem })
        const renewal = entry.record !== undefined
        entry.record = record
        entry.issuer = change.issuer
        entry.verified = true
        entry.state = 'valid'
        entry.failures = 0
        entry.lastError = undefined
        entry.ari = undefined
        entry.failedTypes.clear()
        const facts = { name, notAfter: record.notAfter, serial: record.serial }
        if (change.to === 'issued') {
          events.emit('certificate-issued', { ...facts, issuer: record.issuer, renewal })
          log.info({ ...facts, renewal }, 'fastify-acme: certificate issued')
        } else {
          events.emit('certificate-adopted', facts)
          log.info(facts, 'fastify-acme: adopted a certificate another process stored')
        }
        return
      }
      case 'failed': {
        const { error } = change
        const facts = factsOf(error)
        if (facts.validation && facts.challengeType) entry.failedTypes.add(facts.challengeType as ChallengeType)
        entry.failures = change.failures
        const now = clock.now()
        entry.lastError = { message: error.message, code: error.code, at: now, facts }
        entry.state = entry.record ? this.#servedState(entry.record) : 'error'
        const at = new Date(change.nextAttemptAt).toISOString()
        events.emit('order-failed', { name, error, attempt: entry.failures, nextAttemptAt: at })
        log.error(
          {
            name,
            attempt: entry.failures,
            nextAttemptAt: at,
            err: { message: error.message, code: error.code, ...definedOnly({ ...facts }) },
          },
          'fastify-acme: order failed',
        )
        return
      }
      case 'deferred': {
        const until = new Date(change.until).toISOString()
        events.emit('order-deferred', { name, reason: change.reason, until })
        log.warn({ name, until, reason: change.reason }, 'fastify-acme: order deferred')
        return
      }
      case 'idle': {
        entry.state = entry.record ? this.#servedState(entry.record) : entry.failures > 0 ? 'error' : 'pending'
        return
      }
      case 'removed': {
        for (const san of entry.sans) resolver.delete(san)
        log.debug({ name }, 'fastify-acme: name no longer managed')
        return
      }
    }
  }

  /** The server listens: certificate-loaded events of names loaded before now reach the listeners registered since. */
  listening(): void {
    const queued = this.#loadedBeforeListening
    this.#loadedBeforeListening = undefined
    for (const entry of queued ?? []) this.#emitLoaded(entry)
  }

  #emitLoaded(entry: NameEntry): void {
    const record = entry.record
    if (!record) return
    const expired = Date.parse(record.notAfter) <= this.#d.clock.now()
    this.#d.events.emit('certificate-loaded', {
      name: entry.name,
      notAfter: record.notAfter,
      serial: record.serial,
      expired,
    })
  }

  #servedState(record: CertificateRecord): NameState {
    return Date.parse(record.notAfter) <= this.#d.clock.now() ? 'expired' : 'valid'
  }
}

/** The status view of an entry: a fresh object, safe to hand out. */
export function statusOf(entry: NameEntry): NameStatus {
  const status: NameStatus = { name: entry.name, state: entry.state, failures: entry.failures }
  const record = entry.record
  if (record) {
    status.notBefore = record.notBefore
    status.notAfter = record.notAfter
    status.issuer = record.issuer
    status.serial = record.serial
  }
  if (entry.lastError) {
    const { message, code, at, facts } = entry.lastError
    status.lastError = { message, code, at: new Date(at).toISOString() }
    if (facts.problemType !== undefined) status.lastError.problemType = facts.problemType
    if (facts.status !== undefined) status.lastError.status = facts.status
    if (facts.networkCode !== undefined) status.lastError.networkCode = facts.networkCode
  }
  if (entry.ari) {
    const { start, end, selectedAt, explanationURL } = entry.ari
    status.renewalInfo = {
      window: { start: new Date(start).toISOString(), end: new Date(end).toISOString() },
      selectedAt: new Date(selectedAt).toISOString(),
    }
    if (explanationURL !== undefined) status.renewalInfo.explanationURL = explanationURL
  }
  if (entry.next) {
    status.nextAction = { kind: entry.next.kind, at: new Date(entry.next.at).toISOString() }
    if (entry.next.source !== undefined) status.nextAction.source = entry.next.source
  }
  return status
}

function definedOnly(o: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v
  return out
}
