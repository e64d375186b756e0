// On-demand TLS: a handshake for a name without a certificate asks the policy, then (within the limits) adds the
// name to the manager and waits, bounded, for its certificate; concurrent handshakes for one new name share one
// order. Everything refused fails the handshake at once (a TLS alert), before any CA contact. Names already managed
// never come here: the resolver answers them, so an ask endpoint that is down or slow cannot affect them.
import type { FastifyBaseLogger } from 'fastify'
import { ERR_ON_DEMAND_DENIED, ERR_ON_DEMAND_LIMIT, ERR_ON_DEMAND_TIMEOUT } from '../errors.js'
import type { AcmeEventEmitter } from '../events.js'
import type { CertificateManager } from '../lifecycle/manager.js'
import type { ResolvedOnDemand } from '../options.js'
import type { CertResolver, KeyCertPair, UnknownNameHandler } from '../resolver.js'
import { OnDemandLimits } from './limits.js'
import { OnDemandPolicy, onDemandCandidate } from './policy.js'

export interface OnDemandDeps {
  options: ResolvedOnDemand
  manager: CertificateManager
  resolver: CertResolver
  events: AcmeEventEmitter
  log: FastifyBaseLogger
}

export class OnDemand {
  readonly #d: OnDemandDeps
  readonly #policy: OnDemandPolicy
  readonly #limits: OnDemandLimits
  readonly #pending = new Map<string, Promise<KeyCertPair>>()
  #capLogged = false
  /** Handshakes declined before any policy was asked (not a DNS name, an IP, denied recently). */
  readonly stats = { declined: 0, denied: 0, limited: 0, obtained: 0, timedOut: 0 }

  constructor(deps: OnDemandDeps) {
    this.#d = deps
    this.#policy = new OnDemandPolicy(deps.options, deps.log)
    this.#limits = new OnDemandLimits(deps.options)
  }

  /** Asks sent to the ask URL. */
  get asks(): number {
    return this.#policy.asks
  }

  readonly handler: UnknownNameHandler = (servername, remoteAddress) => {
    const name = onDemandCandidate(servername)
    if (name === undefined || this.#policy.deniedRecently(name)) {
      this.stats.declined++
      return undefined
    }
    let pending = this.#pending.get(name)
    if (!pending) {
      pending = this.#obtain(name, remoteAddress)
      this.#pending.set(name, pending)
      void pending.then(
        () => this.#pending.delete(name),
        () => this.#pending.delete(name),
      )
    }
    return pending
  }

  async #obtain(name: string, remoteAddress: string | undefined): Promise<KeyCertPair> {
    const { manager, options, log } = this.#d
    if (!manager.has(name)) {
      if (!(await this.#policy.decide(name, remoteAddress))) {
        this.stats.denied++
        throw new ERR_ON_DEMAND_DENIED(name)
      }
      const refused = this.#limits.take(remoteAddress, manager.onDemandCount)
      if (refused !== undefined) {
        this.stats.limited++
        if (refused === 'certificate cap' && !this.#capLogged) {
          this.#capLogged = true
          log.warn(
            { maxCertificates: options.maxCertificates },
            'fastify-acme: on-demand certificate cap reached; new names are refused until names are removed',
          )
        }
        throw new ERR_ON_DEMAND_LIMIT(name, refused)
      }
      try {
        const outcome = this.#outcome(name)
        await manager.add([name], { onDemand: true })
        return await outcome
      } finally {
        this.#limits.release()
      }
    }
    const status = manager.status(name)
    // Failed recently and backing off: no waiting for a certificate that will not come soon.
    if (status && !status.notAfter && status.state === 'error') throw new ERR_ON_DEMAND_DENIED(name)
    return this.#outcome(name)
  }

  /** The certificate of `name` once served; rejects when its order fails or the handshake timeout passes. */
  #outcome(name: string): Promise<KeyCertPair> {
    const { events, resolver, options } = this.#d
    const served = resolver.get(name)
    if (served) return Promise.resolve(served)
    return new Promise((resolve, reject) => {
      const done = (err: Error | undefined) => {
        clearTimeout(timer)
        offIssued()
        offAdopted()
        offFailed()
        const pair = resolver.get(name)
        if (err || !pair) reject(err ?? new ERR_ON_DEMAND_DENIED(name))
        else {
          this.stats.obtained++
          resolve(pair)
        }
      }
      const timer = setTimeout(() => {
        this.stats.timedOut++
        done(new ERR_ON_DEMAND_TIMEOUT(name, options.handshakeTimeoutMs))
      }, options.handshakeTimeoutMs)
      timer.unref()
      const offIssued = events.on('certificate-issued', (e) => e.name === name && done(undefined))
      const offAdopted = events.on('certificate-adopted', (e) => e.name === name && done(undefined))
      const offFailed = events.on('order-failed', (e) => e.name === name && done(e.error))
    })
  }
}
