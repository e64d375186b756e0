// The retry state of a name, kept in storage so that a restarting (or crash-looping) process does not order again
// before the stored time. While an order runs, the state is marked `orderingSince`: a state still marked at the next
// start belongs to an attempt that never finished, and counts as a failure (FACME_INTERRUPTED).
import { keys, type Storage } from '../storage/index.js'
import { retryDelay } from './backoff.js'

export interface RetryState {
  failures: number
  nextAttemptAt: number
  lastError: string
  lastErrorCode?: string | undefined
  lastErrorAt: number
  /** The issuer (index in the list) the next attempt uses, and how many attempts failed with it in a row. */
  issuer?: number | undefined
  issuerFailures?: number | undefined
}

export interface RetryPolicy {
  retryMinMs: number
  retryMaxMs: number
}

/** The state as stored, or undefined when absent or unreadable. An unfinished attempt reads as a failure. */
export function parseRetryState(raw: Buffer | undefined, policy: RetryPolicy): RetryState | undefined {
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
        since + retryDelay(failures, policy.retryMinMs, policy.retryMaxMs, () => 0),
      ),
      lastError: 'interrupted: the process stopped during an order',
      lastErrorCode: 'FACME_INTERRUPTED',
      lastErrorAt: since,
      issuer: typeof value.issuer === 'number' ? value.issuer : undefined,
      issuerFailures: typeof value.issuerFailures === 'number' ? value.issuerFailures : undefined,
    }
  }
  if (typeof value.failures !== 'number' || typeof value.nextAttemptAt !== 'number') return undefined
  return value as RetryState
}

/** Reads and writes one issuer's retry states. */
export class RetryStates {
  readonly #storage: Storage
  readonly #dir: string
  readonly #policy: RetryPolicy

  constructor(storage: Storage, dir: string, policy: RetryPolicy) {
    this.#storage = storage
    this.#dir = dir
    this.#policy = policy
  }

  /** The raw stored bytes (kept to put them back when an order is abandoned by close()). */
  raw(name: string): Promise<Buffer | undefined> {
    return this.#storage.get(keys.state(this.#dir, name))
  }

  parse(raw: Buffer | undefined): RetryState | undefined {
    return parseRetryState(raw, this.#policy)
  }

  async read(name: string): Promise<RetryState | undefined> {
    return this.parse(await this.raw(name).catch(() => undefined))
  }

  /**
   * Marks an attempt as running. Also proves the storage accepts writes: an order whose result cannot be stored
   * would be lost at the next restart and ordered again.
   */
  markOrdering(name: string, current: RetryState | undefined, now: number): Promise<void> {
    return this.#storage.put(keys.state(this.#dir, name), JSON.stringify({ ...(current ?? {}), orderingSince: now }))
  }

  write(name: string, state: RetryState): Promise<void> {
    return this.#storage.put(keys.state(this.#dir, name), JSON.stringify(state))
  }

  /** Puts back what was stored before an attempt (raw bytes, or nothing). */
  restore(name: string, raw: Buffer | undefined): Promise<void> {
    const key = keys.state(this.#dir, name)
    return raw ? this.#storage.put(key, raw) : this.#storage.delete(key)
  }

  clear(name: string): Promise<void> {
    return this.#storage.delete(keys.state(this.#dir, name))
  }
}
