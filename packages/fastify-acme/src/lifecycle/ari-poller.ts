// Asking the CA when to renew (ARI, RFC 9773): after issuance and at load, then again when the CA's Retry-After
// says (1 min .. 1 day), backing off after temporary errors and waiting hours after unusable answers; never for an
// expired certificate or one already replaced. One timer for all names (scheduler.ts). poll() returns the new
// state; the manager applies it (the name's renewal time follows) and asks for the next poll.
import type { FastifyBaseLogger } from 'fastify'
import { type DirectoryInfo, fetchRenewalInfo } from '../acme.js'
import type { CertificateRecord } from '../certificate.js'
import { factsOf } from '../error-facts.js'
import type { Clock } from '../options.js'
import { type AriState, type AriStates, afterAnswer, afterFailure } from './ari.js'
import { certIdOf } from './cert-id.js'
import { Scheduler } from './scheduler.js'

export interface AriPollerDeps {
  clock: Clock
  log: FastifyBaseLogger
  random: () => number
  states: AriStates
  /** The issuer's directory (fetched once; its renewalInfo URL says whether the CA offers ARI). */
  directory(signal: AbortSignal): Promise<DirectoryInfo>
  closing: AbortSignal
  /** Called when a name's poll is due. */
  due(name: string): void
}

/** The CertID of a record's certificate (stored in the record since ARI; computed for older ones). */
export function certIdOfRecord(record: CertificateRecord): string | undefined {
  if (record.certId !== undefined) return record.certId
  try {
    return certIdOf(record.chainPem)
  } catch {
    return undefined
  }
}

export interface PollResult {
  state: AriState | undefined
  nextPollAt: number | undefined
}

export class AriPoller {
  readonly #d: AriPollerDeps
  readonly #scheduler: Scheduler
  /** Polls sent (for status and tests). */
  polls = 0

  constructor(deps: AriPollerDeps) {
    this.#d = deps
    this.#scheduler = new Scheduler(deps.clock, deps.due)
  }

  schedule(name: string, at: number): void {
    this.#scheduler.schedule(name, at)
  }

  cancel(name: string): void {
    this.#scheduler.cancel(name)
  }

  stop(): void {
    this.#scheduler.stop()
  }

  /** The stored state of `name`, when it is for `record`'s certificate. */
  async stored(name: string, record: CertificateRecord): Promise<AriState | undefined> {
    const certId = certIdOfRecord(record)
    const state = certId === undefined ? undefined : await this.#d.states.read(name)
    return state?.certId === certId ? state : undefined
  }

  /**
   * Asks the CA about `record` (the certificate `name` serves). Returns the name's state (undefined: the ratio rule
   * decides) and when to poll next (undefined: never again for this certificate: no ARI at this CA, no CertID, an
   * expired certificate).
   */
  async poll(name: string, record: CertificateRecord, previous: AriState | undefined): Promise<PollResult> {
    const { clock, log, random, states, closing } = this.#d
    const now = clock.now()
    const certId = certIdOfRecord(record)
    if (Date.parse(record.notAfter) <= now || certId === undefined) return { state: undefined, nextPollAt: undefined }
    const before = previous?.certId === certId ? previous : undefined
    const directory = await this.#d.directory(closing).catch(() => undefined)
    if (directory === undefined) {
      // The CA cannot be asked now: try again later, keeping what we know.
      const failures = (before?.failures ?? 0) + 1
      const nextPollAt = afterFailure(failures, false, undefined, now, random)
      return { state: before ? { ...before, failures, nextPollAt } : undefined, nextPollAt }
    }
    if (!directory.renewalInfo) return { state: undefined, nextPollAt: undefined }
    let next: AriState | undefined
    try {
      this.polls++
      const info = await fetchRenewalInfo(directory.renewalInfo, certId, closing)
      next = afterAnswer(before, certId, info, clock.now(), random)
      if (before?.selectedAt !== next.selectedAt) {
        log.info(
          {
            name,
            window: { start: new Date(info.start).toISOString(), end: new Date(info.end).toISOString() },
            selectedAt: new Date(next.selectedAt).toISOString(),
            explanationURL: info.explanationURL,
          },
          'fastify-acme: renewal window from the CA',
        )
      }
    } catch (err) {
      if (closing.aborted) return { state: before, nextPollAt: undefined }
      const facts = factsOf(err)
      const longTerm = (err as { code?: string }).code === 'FACME_RENEWAL_INFO'
      const failures = (before?.failures ?? 0) + 1
      const nextPollAt = afterFailure(failures, longTerm, facts.retryAfterMs, clock.now(), random)
      log.warn(
        {
          name,
          err: { message: (err as Error).message, code: (err as { code?: string }).code },
          nextPollAt: new Date(nextPollAt).toISOString(),
        },
        'fastify-acme: renewal information could not be read',
      )
      // Without a window yet, the ratio rule decides until an answer comes.
      if (!before) return { state: undefined, nextPollAt }
      next = { ...before, failures, nextPollAt }
    }
    await states.write(name, next).catch((err: Error) => {
      log.error({ name, err }, 'fastify-acme: could not store the renewal information')
    })
    return { state: next, nextPollAt: next.nextPollAt }
  }
}
