// Change notifications between the instances sharing one Redis: every put() and delete() publishes the key on one
// channel per prefix; watch() subscribes on a second connection (a subscribed connection can send nothing else).
// Pub/sub is fire-and-forget: a message sent while a subscriber was disconnected is lost. The subscriber therefore
// reports 'unreachable' when its connection drops and 'resync' once it is subscribed again, and the plugin reads
// again what matters then (and reconciles periodically anyway).
import type { StorageChange, StorageWatch } from '@autotls/fastify-acme'
import type { AnyRedisClient } from './options.js'

type Listener = { prefix: string; listener: (change: StorageChange) => void }

/** The channel carrying the keys changed under a store's prefix. */
export function changesChannel(prefix: string): string {
  return `${prefix}changes`
}

export class ChangeFeed {
  readonly #channel: string
  readonly #make: () => AnyRedisClient
  readonly #listeners = new Set<Listener>()
  #subscriber: AnyRedisClient | undefined
  #starting: Promise<void> | undefined
  /** True from a dropped connection until the next 'ready': the next one announces a resync. */
  #down = false
  #closed = false

  readonly #storeReady: () => Promise<void>

  /**
   * `make` returns a new, unopened client for the subscription (the store's client duplicated); `storeReady`
   * resolves when the store's own connection answers (a resync is told only then: reads before it would still be
   * served from the local copy).
   */
  constructor(channel: string, make: () => AnyRedisClient, storeReady: () => Promise<void>) {
    this.#channel = channel
    this.#make = make
    this.#storeReady = storeReady
  }

  watch(prefix: string, listener: (change: StorageChange) => void): StorageWatch {
    const entry: Listener = { prefix, listener }
    this.#listeners.add(entry)
    this.#start()
    return {
      close: () => {
        this.#listeners.delete(entry)
      },
    }
  }

  #emit(change: StorageChange): void {
    for (const { prefix, listener } of [...this.#listeners]) {
      if (change.type !== 'changed' || change.key.startsWith(prefix)) {
        try {
          listener(change)
        } catch {
          // A listener's failure is its own; the others still hear about the change.
        }
      }
    }
  }

  #start(): void {
    if (this.#subscriber || this.#closed || this.#listeners.size === 0) return
    const subscriber = this.#make()
    this.#subscriber = subscriber
    let subscribed = false
    subscriber.on('error', (err: Error) => this.#unreachable(err))
    subscriber.on('ready', () => {
      // node-redis subscribes again by itself after a reconnection; what was published meanwhile is lost.
      if (subscribed) this.#back()
    })
    this.#starting = (async () => {
      try {
        await subscriber.connect()
        await subscriber.subscribe(this.#channel, (message: string) => this.#emit({ type: 'changed', key: message }))
        subscribed = true
        this.#back()
      } catch (err) {
        // Refused for good (the client gave up, or subscribing failed): start over with a new connection soon.
        this.#unreachable(err as Error)
        this.#subscriber = undefined
        if (subscriber.isOpen) subscriber.destroy()
        if (!this.#closed) setTimeout(() => this.#start(), 1_000).unref()
      }
    })()
  }

  #unreachable(err: Error): void {
    if (this.#down) return
    this.#down = true
    this.#emit({ type: 'unreachable', error: err })
  }

  /** Subscribed again after being down: whatever was published meanwhile must be read again. */
  #back(): void {
    if (!this.#down) return
    this.#down = false
    void (async () => {
      for (;;) {
        if (this.#closed || this.#down) return
        try {
          await this.#storeReady()
          break
        } catch {
          await new Promise((resolve) => setTimeout(resolve, 100))
        }
      }
      this.#emit({ type: 'resync' })
    })()
  }

  /** Resolves once the subscription is in place (for tests and start-up ordering); never rejects. */
  async ready(): Promise<void> {
    await this.#starting
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#listeners.clear()
    const subscriber = this.#subscriber
    if (!subscriber) return
    // Close first, then wait: a connect() still retrying (Redis down since the start) would never settle otherwise.
    if (subscriber.isReady) await subscriber.close().catch(() => subscriber.destroy())
    else if (subscriber.isOpen) subscriber.destroy()
    await this.#starting
  }
}
