// Caps new orders per ACME account per time window (a sliding log), below the CA's own limits, so a bug or a
// crash loop can never burn through them. The log is kept in storage (OrderBudget), so restarts do not reset it.
import { keys, type Storage } from '../storage/index.js'

export class OrderLimiter {
  readonly #limit: number
  readonly #windowMs: number
  readonly #log: number[] = []

  constructor(limit: number, windowMs: number, times: readonly number[] = []) {
    this.#limit = limit
    this.#windowMs = windowMs
    this.#log.push(...times)
  }

  /** The times of the orders in the log (oldest first). */
  times(): number[] {
    return [...this.#log]
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

/**
 * The order budget of one account, kept in storage (the times of its recent new orders), so that restarts, and
 * every process sharing the storage, draw on one budget. Each take reads, decides and writes under a storage lock.
 * The times this instance last read or wrote are also kept in memory and merged into what it reads: a store that
 * comes back empty (a Redis restarted without persistence, a cache folder wiped) does not hand out a fresh budget
 * while the orders of the window are still counted at the CA.
 */
export class OrderBudget {
  readonly #storage: Storage
  readonly #key: string
  readonly #lockKey: string
  readonly #limit: number
  readonly #windowMs: number
  /** What the store held after this instance's last take (its own orders and those of others it read). */
  #known: number[] = []

  constructor(storage: Storage, dir: string, limit: number, windowMs: number) {
    this.#storage = storage
    this.#key = keys.orderBudget(dir)
    this.#lockKey = keys.orderBudgetLock(dir)
    this.#limit = limit
    this.#windowMs = windowMs
  }

  /** Takes one order from the budget and returns 0, or returns how long to wait (ms) without taking anything. */
  async take(now: number, signal?: AbortSignal): Promise<number> {
    const lease = await this.#storage.lock(this.#lockKey, { timeoutMs: 10_000, ...(signal ? { signal } : {}) })
    try {
      const stored = await this.#read()
      // Times from memory that the store no longer has (and that are still in the window) go back in.
      const missing = this.#known.filter((t) => t > now - this.#windowMs && !stored.includes(t))
      const times = missing.length === 0 ? stored : [...stored, ...missing].sort((a, b) => a - b)
      const limiter = new OrderLimiter(this.#limit, this.#windowMs, times)
      const wait = limiter.take(now)
      if (wait === 0 || missing.length > 0) {
        await this.#storage.put(this.#key, JSON.stringify({ orders: limiter.times() }))
      }
      this.#known = limiter.times()
      return wait
    } finally {
      await lease.release()
    }
  }

  async #read(): Promise<number[]> {
    const raw = await this.#storage.get(this.#key).catch(() => undefined)
    if (!raw) return []
    try {
      const value = JSON.parse(raw.toString('utf8')) as { orders?: unknown }
      return Array.isArray(value.orders)
        ? value.orders.filter((t): t is number => typeof t === 'number').sort((a, b) => a - b)
        : []
    } catch {
      return []
    }
  }
}
