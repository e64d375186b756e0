// In-memory Storage for tests and for users who do not want anything on disk (certificates are lost on restart).
import { ERR_LOCK_TIMEOUT } from '../errors.js'
import { assertKey, type Lease, type LockOptions, type Storage } from './index.js'

export class MemoryStorage implements Storage {
  readonly listIsComplete = true
  readonly #data = new Map<string, Buffer>()
  readonly #locks = new Map<string, Promise<void>>()

  async get(key: string): Promise<Buffer | undefined> {
    assertKey(key)
    const value = this.#data.get(key)
    return value === undefined ? undefined : Buffer.from(value)
  }

  async put(key: string, value: string | Uint8Array): Promise<void> {
    assertKey(key)
    this.#data.set(key, Buffer.from(value))
  }

  async delete(key: string): Promise<void> {
    assertKey(key)
    this.#data.delete(key)
  }

  async list(prefix: string): Promise<string[]> {
    return [...this.#data.keys()].filter((k) => k.startsWith(prefix)).sort()
  }

  async lock(key: string, options: LockOptions = {}): Promise<Lease> {
    assertKey(key)
    const timeoutMs = options.timeoutMs ?? 30_000
    const deadline = Date.now() + timeoutMs
    const signal = options.signal
    for (;;) {
      if (signal?.aborted) throw signal.reason
      const held = this.#locks.get(key)
      if (held === undefined) break
      const remaining = deadline - Date.now()
      if (remaining <= 0) throw new ERR_LOCK_TIMEOUT(key)
      // Wake on the release, the deadline or the signal, whichever comes first (the storage contract: an abort
      // ends a wait promptly).
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer)
          signal?.removeEventListener('abort', wake)
          resolve()
        }
        const timer = setTimeout(wake, remaining)
        signal?.addEventListener('abort', wake, { once: true })
        held.then(wake)
      })
    }
    let release!: () => void
    this.#locks.set(key, new Promise<void>((resolve) => (release = resolve)))
    let released = false
    return {
      // A lock in this process's memory cannot be lost.
      lost: new AbortController().signal,
      release: async () => {
        if (released) return
        released = true
        this.#locks.delete(key)
        release()
      },
    }
  }
}
