// Who may get a certificate on demand: cheap checks first (a valid DNS name of two labels or more, no IP literal,
// not refused recently), then the static suffix rules, then the decision function and/or the ask URL (Caddy's
// contract: GET <ask>?domain=<name>, any 2xx allows, anything else denies, 10 s, no redirects). Decisions are cached
// (allowed and denied, each with its TTL, in bounded maps) and one ask per name is in flight at a time.
import type { FastifyBaseLogger } from 'fastify'
import { canonicalName } from '../names.js'

export interface OnDemandDecisionContext {
  remoteAddress: string | undefined
}

export type OnDemandAllow = (name: string, context: OnDemandDecisionContext) => boolean | Promise<boolean>

export interface PolicyOptions {
  allow: OnDemandAllow | undefined
  ask: string | undefined
  /** Suffixes allowed without asking, as `*.customers.example.com` (any name under it, one label or more). */
  allowSuffixes: readonly string[]
  allowTtlMs: number
  denyTtlMs: number
  askTimeoutMs: number
}

/** Bound on each decision cache: a scan of random names must not grow memory without limit. */
export const DECISION_CACHE_SIZE = 10_000

/** A Map that forgets its oldest entries past a size, and each entry after its own deadline. */
class ExpiringSet {
  readonly #until = new Map<string, number>()
  readonly #max: number

  constructor(max: number) {
    this.#max = max
  }

  has(key: string, now: number): boolean {
    const until = this.#until.get(key)
    if (until === undefined) return false
    if (until > now) return true
    this.#until.delete(key)
    return false
  }

  add(key: string, until: number): void {
    this.#until.delete(key)
    this.#until.set(key, until)
    if (this.#until.size > this.#max) this.#until.delete(this.#until.keys().next().value as string)
  }

  get size(): number {
    return this.#until.size
  }
}

/** The canonical form of a name offered in a ClientHello, or undefined when no CA could ever issue for it. */
export function onDemandCandidate(servername: string): string | undefined {
  if (servername.length === 0 || servername.length > 253) return undefined
  try {
    return canonicalName(servername)
  } catch {
    return undefined
  }
}

export class OnDemandPolicy {
  readonly #o: PolicyOptions
  readonly #log: FastifyBaseLogger
  readonly #allowed = new ExpiringSet(DECISION_CACHE_SIZE)
  readonly #denied = new ExpiringSet(DECISION_CACHE_SIZE)
  readonly #inFlight = new Map<string, Promise<boolean>>()
  readonly #suffixes: string[]
  /** Asks sent to the ask URL (for status and tests). */
  asks = 0

  constructor(options: PolicyOptions, log: FastifyBaseLogger) {
    this.#o = options
    this.#log = log
    this.#suffixes = options.allowSuffixes.map((s) => `.${s.replace(/^\*\./, '').toLowerCase()}`)
  }

  /** True when `name` was denied recently (the handshake fails at once, nothing is asked). */
  deniedRecently(name: string, now = Date.now()): boolean {
    return this.#denied.has(name, now)
  }

  /** Whether `name` (canonical) may get a certificate. Never throws: an error denies. */
  decide(name: string, remoteAddress: string | undefined): Promise<boolean> {
    const now = Date.now()
    if (this.#allowed.has(name, now)) return Promise.resolve(true)
    if (this.#denied.has(name, now)) return Promise.resolve(false)
    const running = this.#inFlight.get(name)
    if (running) return running
    const decision = this.#ask(name, remoteAddress).then(
      (allowed) => {
        const at = Date.now()
        if (allowed) this.#allowed.add(name, at + this.#o.allowTtlMs)
        else this.#denied.add(name, at + this.#o.denyTtlMs)
        return allowed
      },
      (err: Error) => {
        this.#log.warn({ name, err: { message: err.message } }, 'fastify-acme: on-demand decision failed; denied')
        this.#denied.add(name, Date.now() + this.#o.denyTtlMs)
        return false
      },
    )
    this.#inFlight.set(name, decision)
    void decision.finally(() => this.#inFlight.delete(name))
    return decision
  }

  async #ask(name: string, remoteAddress: string | undefined): Promise<boolean> {
    if (this.#suffixes.some((suffix) => name.endsWith(suffix) && name.length > suffix.length)) return true
    if (this.#o.allow) {
      const allowed = await this.#o.allow(name, { remoteAddress })
      if (allowed !== true) return false
      if (this.#o.ask === undefined) return true
    }
    if (this.#o.ask === undefined) return false
    const url = new URL(this.#o.ask)
    url.searchParams.set('domain', name)
    this.asks++
    const response = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(this.#o.askTimeoutMs) })
    await response.body?.cancel().catch(() => {})
    return response.status >= 200 && response.status < 300
  }
}
