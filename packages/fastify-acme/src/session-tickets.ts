// The TLS session-ticket key of the server (option `sessionTickets`): one 48-byte key (Node keeps exactly one),
// replaced when older than `rotateAfterMs`. Shared, it lives in the storage: whoever first needs a key (or a new
// one) creates it under the storage lock after reading again, so processes sharing the storage never race two keys
// in; the others take it up through storage.watch() when the storage has it, and at their own rotation time in any
// case (their timer takes the lock, reads again and finds the fresh key). The key is never logged.
import { randomBytes } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import type { Clock } from './options.js'
import { keys, type Storage, type StorageWatch } from './storage/index.js'

const KEY_BYTES = 48
/** After a failed read or write of the key, the next attempt (the current key stays in use meanwhile). */
const RETRY_MS = 30_000
const LOCK_TIMEOUT_MS = 10_000
const MAX_TIMER_MS = 2 ** 31 - 1

interface TicketKey {
  created: number
  key: Buffer
}

export interface SessionTicketDeps {
  /** The server the plugin serves TLS on. */
  server: {
    setTicketKeys(keys: Buffer): void
    on(event: 'listening', listener: () => void): unknown
    off(event: 'listening', listener: () => void): unknown
  }
  /** Where the shared key lives; undefined: a key of this process only. */
  storage: Storage | undefined
  /** The storage folder of the directory (storage/index.ts directoryKey). */
  dir: string
  rotateAfterMs: number
  clock: Clock
  log: FastifyBaseLogger
}

export class SessionTickets {
  readonly #deps: SessionTicketDeps
  #current: TicketKey | undefined
  #timer: unknown
  #watch: StorageWatch | undefined
  #closed = false
  #queue: Promise<void> = Promise.resolve()
  #queued = false

  constructor(deps: SessionTicketDeps) {
    this.#deps = deps
  }

  /** Puts a key in use before the server listens (a storage that cannot be read leaves Node's own key, retried). */
  async start(): Promise<void> {
    const { storage, dir } = this.#deps
    // In a node:cluster worker, listen() replaces the server's ticket keys with those of the first worker that
    // listened (Node shares them that way); ours are put back, or a worker forked after a rotation would hold a
    // stale key, and `shared: false` would not be per process.
    this.#deps.server.on('listening', this.#reapply)
    if (storage?.watch) {
      this.#watch = storage.watch(keys.sessionTickets(dir), (change) => {
        if (change.type !== 'unreachable') void this.#refresh()
      })
    }
    await this.#refresh()
  }

  #reapply = () => {
    if (this.#current) this.#deps.server.setTicketKeys(this.#current.key)
  }

  async close(): Promise<void> {
    this.#closed = true
    this.#deps.server.off('listening', this.#reapply)
    this.#deps.clock.clearTimeout(this.#timer)
    await this.#watch?.close()
    await this.#queue
  }

  /** One refresh at a time; requests made while one runs are served by one more run after it. */
  #refresh(): Promise<void> {
    if (this.#queued) return this.#queue
    this.#queued = true
    this.#queue = this.#queue.then(async () => {
      this.#queued = false
      if (this.#closed) return
      try {
        this.#use(this.#deps.storage ? await this.#shared(this.#deps.storage) : this.#local())
      } catch (err) {
        this.#deps.log.warn({ err }, 'session ticket key: storage failed, the current key stays in use')
        this.#schedule(Math.min(RETRY_MS, this.#deps.rotateAfterMs))
      }
    })
    return this.#queue
  }

  #fresh(k: TicketKey | undefined): k is TicketKey {
    return k !== undefined && this.#deps.clock.now() - k.created < this.#deps.rotateAfterMs
  }

  #local(): TicketKey {
    return this.#fresh(this.#current) ? this.#current : { created: this.#deps.clock.now(), key: randomBytes(KEY_BYTES) }
  }

  async #shared(storage: Storage): Promise<TicketKey> {
    const key = keys.sessionTicketKey(this.#deps.dir)
    const stored = parse(await storage.get(key))
    if (this.#fresh(stored)) return stored
    const lease = await storage.lock(keys.sessionTicketLock(this.#deps.dir), { timeoutMs: LOCK_TIMEOUT_MS })
    try {
      // Another process may have replaced it while this one waited for the lock.
      const again = parse(await storage.get(key))
      if (this.#fresh(again)) return again
      const next = { created: this.#deps.clock.now(), key: randomBytes(KEY_BYTES) }
      await storage.put(
        key,
        JSON.stringify({ created: new Date(next.created).toISOString(), key: next.key.toString('base64') }),
      )
      this.#deps.log.info({ created: new Date(next.created).toISOString() }, 'session ticket key rotated')
      return next
    } finally {
      await lease.release()
    }
  }

  #use(k: TicketKey): void {
    if (this.#current === undefined || !this.#current.key.equals(k.key)) {
      this.#deps.server.setTicketKeys(k.key)
      this.#current = k
      this.#deps.log.info(
        { created: new Date(k.created).toISOString(), shared: this.#deps.storage !== undefined },
        'session ticket key in use',
      )
    }
    const due = k.created + this.#deps.rotateAfterMs - this.#deps.clock.now()
    this.#schedule(Math.max(0, Math.min(due, this.#deps.rotateAfterMs)))
  }

  #schedule(ms: number): void {
    if (this.#closed) return
    this.#deps.clock.clearTimeout(this.#timer)
    this.#timer = this.#deps.clock.setTimeout(() => void this.#refresh(), Math.min(ms, MAX_TIMER_MS))
    ;(this.#timer as { unref?(): unknown }).unref?.()
  }
}

/** The stored key, or undefined when missing or unusable (then a new one is made under the lock). */
function parse(bytes: Buffer | undefined): TicketKey | undefined {
  if (bytes === undefined) return undefined
  try {
    const record = JSON.parse(bytes.toString('utf8')) as { created?: unknown; key?: unknown }
    const created = typeof record.created === 'string' ? Date.parse(record.created) : Number.NaN
    const key = typeof record.key === 'string' ? Buffer.from(record.key, 'base64') : undefined
    if (!Number.isFinite(created) || key?.length !== KEY_BYTES) return undefined
    return { created, key }
  } catch {
    return undefined
  }
}
