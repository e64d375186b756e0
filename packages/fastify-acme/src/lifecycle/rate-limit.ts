// Caps new orders per ACME account per time window (a sliding log), below the CA's own limits, so a bug or a
// crash loop can never burn through them. In memory; the persisted retry state covers restarts.
export class OrderLimiter {
  readonly #limit: number
  readonly #windowMs: number
  readonly #log: number[] = []

  constructor(limit: number, windowMs: number) {
    this.#limit = limit
    this.#windowMs = windowMs
  }

  #trim(now: number): void {
    while (this.#log.length > 0 && this.#log[0]! <= now - this.#windowMs) this.#log.shift()
  }

  /** Takes one order from the budget and returns 0, or returns how long to wait (ms) without taking anything. */
  take(now: number): number {
    this.#trim(now)
    if (this.#log.length < this.#limit) {
      this.#log.push(now)
      return 0
    }
    return this.#log[0]! + this.#windowMs - now
  }

  get used(): number {
    return this.#log.length
  }
}
