// When does a name need work: a missing certificate now, a served one at its renewal time (renewal-policy.ts), a
// failed one at its retry time, an order interrupted by a restart at once. The decision is data on the entry
// (`next`); one timer for all names (scheduler.ts) fires it.
import type { Clock } from '../options.js'
import type { RenewalPolicy } from './renewal-policy.js'
import type { RetryState } from './retry-state.js'
import { Scheduler } from './scheduler.js'
import type { NameEntry, NextKind } from './state.js'

export interface MaintenanceDeps {
  clock: Clock
  policy: RenewalPolicy
  random: () => number
  /** Order missing certificates without being asked (issueOnStart). */
  issueMissing: boolean
  /** Called when a name is due. */
  due(name: string): void
}

export class Maintenance {
  readonly #d: MaintenanceDeps
  readonly #scheduler: Scheduler
  #started = false

  constructor(deps: MaintenanceDeps) {
    this.#d = deps
    this.#scheduler = new Scheduler(deps.clock, deps.due)
  }

  /** Decides the next action of a name from what is known about it (before start: only recorded). */
  plan(entry: NameEntry, facts: { retry?: RetryState | undefined; orderInFlight?: boolean } = {}): void {
    const now = this.#d.clock.now()
    if (facts.orderInFlight) {
      this.set(entry, 'resume', now)
      return
    }
    let kind: NextKind
    let at: number
    let source: string | undefined
    if (entry.record) {
      const decision = this.renewAt(entry)
      kind = 'renew'
      at = decision.at
      source = decision.source
    } else {
      kind = 'issue'
      at = now
    }
    // An attempt still marked as running may belong to another instance sharing the storage, which holds the lock
    // and may be about to store the certificate: look now (the order path takes the lock and checks storage again).
    // If the attempt really died with its process, the order path then keeps its retry time, so a crash loop still
    // orders nothing before it.
    const interrupted = facts.retry?.lastErrorCode === 'FACME_INTERRUPTED'
    if (facts.retry && facts.retry.nextAttemptAt > at && !interrupted) {
      kind = 'retry'
      at = facts.retry.nextAttemptAt
      source = undefined
    }
    this.set(entry, kind, at, source)
  }

  /** The renewal decision for the certificate the entry serves. */
  renewAt(entry: NameEntry, random = this.#d.random) {
    const record = entry.record
    if (!record) throw new Error('renewAt() needs a certificate')
    return this.#d.policy.renewAt(
      {
        name: entry.name,
        notBefore: Date.parse(record.notBefore),
        notAfter: Date.parse(record.notAfter),
        ari: entry.ari,
      },
      random,
    )
  }

  /** Records (and, once started, arms) the next action of a name. */
  set(entry: NameEntry, kind: NextKind, at: number, source?: string): void {
    entry.next = source === undefined ? { kind, at } : { kind, at, source }
    if (this.#started) this.#scheduler.schedule(entry.name, at)
  }

  /** No action planned (e.g. a missing certificate without issueOnStart waits for issue()). */
  clear(entry: NameEntry): void {
    entry.next = undefined
    this.#scheduler.cancel(entry.name)
  }

  /** An order is starting now: whatever was planned is superseded. */
  running(entry: NameEntry): void {
    this.#scheduler.cancel(entry.name)
  }

  /** Arms every planned action; missing certificates wait for issue() unless issueMissing. */
  start(entries: Iterable<NameEntry>): void {
    this.#started = true
    for (const entry of entries) {
      const next = entry.next
      if (!next || entry.running) continue
      if (next.kind === 'issue' && !this.#d.issueMissing) {
        entry.next = undefined
        continue
      }
      this.#scheduler.schedule(entry.name, next.at)
    }
  }

  stop(): void {
    this.#scheduler.stop()
  }
}
