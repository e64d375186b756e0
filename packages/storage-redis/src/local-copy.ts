// The local read-through copy: what this instance last read from or wrote to Redis, kept in a folder on its own
// disk (a FileStorage), so that a Redis outage, even one that is already going on when the process starts, never
// stops it from serving the certificates that exist. Reads fall back to it only when Redis cannot answer; writes,
// deletes and locks never do (an order must not run on state nobody else can see).
import { createHash } from 'node:crypto'
import { FileStorage } from '@autotls/fastify-acme'

function digest(value: Uint8Array): string {
  return createHash('sha256').update(value).digest('base64')
}

/**
 * How many keys known to be absent are remembered. Misses can come from clients (an HTTP-01 token or a validator's
 * server name nobody ordered is looked up in storage), so their record is bounded: the oldest go first, and a key
 * forgotten this way only costs one more look at the copy.
 */
const MAX_ABSENT = 10_000

export class LocalCopy {
  readonly #files: FileStorage
  /** What the copy holds per key, as far as this process knows (a digest; null: known to be absent). */
  readonly #known = new Map<string, string | null>()
  /** Copy writes run one after another, off the caller's path. */
  #queue: Promise<void> = Promise.resolve()

  constructor(folder: string) {
    this.#files = new FileStorage(folder)
  }

  /** Records what Redis answered for `key` (undefined: absent), writing the copy only when it changed. */
  saw(key: string, value: Uint8Array | undefined): void {
    const next = value === undefined ? null : digest(value)
    if (this.#known.get(key) === next) return
    this.#enqueue(async () => {
      const current = this.#known.has(key) ? this.#known.get(key) : await this.#stored(key)
      if (this.#known.get(key) === null) this.#absent--
      if (current !== next) {
        if (value === undefined) await this.#files.delete(key)
        else await this.#files.put(key, value)
      }
      this.#known.set(key, next)
      if (next === null && ++this.#absent > MAX_ABSENT) this.#forgetOldestAbsent()
    })
  }

  /** Keys in #known whose value is null (known to be absent). */
  #absent = 0

  #forgetOldestAbsent(): void {
    for (const [key, value] of this.#known) {
      if (value !== null) continue
      this.#known.delete(key)
      this.#absent--
      return
    }
  }

  async #stored(key: string): Promise<string | null> {
    const value = await this.#files.get(key)
    return value === undefined ? null : digest(value)
  }

  #enqueue(work: () => Promise<void>): void {
    // Best effort (a full or read-only disk): Redis stays the truth.
    this.#queue = this.#queue.then(work).catch(() => {})
  }

  /** Resolves when the copy writes queued so far are done. */
  flushed(): Promise<void> {
    return this.#queue
  }

  get(key: string): Promise<Buffer | undefined> {
    return this.#files.get(key)
  }

  list(prefix: string): Promise<string[]> {
    return this.#files.list(prefix)
  }
}
