// RedisStorage: the plugin's Storage contract on Redis, so several instances of an app share the account,
// certificates, retry state, orders in flight and the order lock. Values are binary-safe strings under
// `<prefix><key>`; locks live under `<prefix>lock:<key>`, which no record key can be (':' is not a key character).
// Every operation is bounded in time: a Redis outage surfaces as FACME_STORAGE, never as a hang.

import {
  ERR_STORAGE,
  type Lease,
  type LockOptions,
  type Storage,
  type StorageChange,
  type StorageWatch,
} from '@autotls/fastify-acme'
import { assertKey } from '@autotls/fastify-acme/internal'
import { createClient, RESP_TYPES } from '@redis/client'
import { LocalCopy } from './local-copy.js'
import { type LockCommands, type RedisLease, takeLock } from './lock.js'
import {
  type AnyRedisClient,
  BATCH,
  type RedisStorageOptions,
  type ResolvedRedisOptions,
  resolveOptions,
} from './options.js'
import { ChangeFeed, changesChannel } from './watch.js'

const LOCK_NAMESPACE = 'lock:'
/** Reconnection of a client the store created: 50 ms, doubling, at most 1 s apart, for as long as it is open. */
const reconnectDelay = (retries: number): number => Math.min(1_000, 50 * 2 ** Math.min(retries, 5))

/** `s` as a literal inside a SCAN MATCH glob. */
function globEscape(s: string): string {
  return s.replace(/[*?[\]\\]/g, '\\$&')
}

/** A command that got no answer within commandTimeoutMs (node-redis's TimeoutError, or our own wait). */
function isTimeout(err: unknown): boolean {
  const e = err as { name?: string; message?: string }
  return e?.name === 'TimeoutError' || /timeout|not reachable/i.test(e?.message ?? '')
}

function isRecordKey(key: string): boolean {
  try {
    assertKey(key)
    return true
  } catch {
    return false
  }
}

function toArgument(value: string | Uint8Array): string | Buffer {
  if (typeof value === 'string' || Buffer.isBuffer(value)) return value
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength)
}

/** An error of #run marked as "Redis cannot answer now" (not a closed store, not a refused command). */
function unreachable(err: unknown): boolean {
  return (err as { unreachable?: unknown }).unreachable === true
}

export class RedisStorage implements Storage {
  /** SCAN visits every key present for the whole scan: list() returns all of them, in one call. */
  readonly listIsComplete = true
  readonly options: Readonly<ResolvedRedisOptions>
  readonly #client: AnyRedisClient
  /** The same connection, answering bulk strings as Buffers and bounded by commandTimeoutMs. */
  readonly #bytes: AnyRedisClient
  /** The same connection, bounded by commandTimeoutMs, answering strings. */
  readonly #text: AnyRedisClient
  readonly #owned: boolean
  readonly #closeClient: boolean
  readonly #leases = new Set<RedisLease>()
  readonly #channel: string
  readonly #feed: ChangeFeed
  readonly #copy: LocalCopy | undefined
  #connecting: Promise<unknown> | undefined
  /** When a wait for the connection last ran out, until the client is ready again. */
  #downSince: number | undefined
  #closed = false
  /** The latest connection error of a client the store created (for messages; the client keeps reconnecting). */
  #lastError: Error | undefined

  constructor(options: RedisStorageOptions) {
    this.options = resolveOptions(options)
    const { commandTimeoutMs } = this.options
    this.#owned = options.client === undefined
    this.#closeClient = this.#owned || options.closeClient === true
    if (options.client) {
      this.#client = options.client
    } else {
      const client = createClient({
        url: options.url,
        // Commands are refused while the connection is down (the store waits for it, bounded, then fails):
        // a queue that grows during an outage would replay stale writes when Redis comes back.
        disableOfflineQueue: true,
        socket: { connectTimeout: commandTimeoutMs, reconnectStrategy: reconnectDelay },
      })
      // Without a listener an 'error' event would crash the process; the client reconnects by itself.
      client.on('error', (err: Error) => {
        this.#lastError = err
      })
      this.#client = client as unknown as AnyRedisClient
    }
    this.#channel = changesChannel(this.options.prefix)
    // The subscription needs a connection of its own: a subscribed connection sends nothing else.
    this.#feed = new ChangeFeed(
      this.#channel,
      () => this.#client.duplicate(),
      () => this.#ready(),
    )
    this.#copy = this.options.localCopy === undefined ? undefined : new LocalCopy(this.options.localCopy)
    this.#client.on('ready', () => {
      this.#downSince = undefined
    })
    this.#text = this.#client.withCommandOptions({ timeout: commandTimeoutMs })
    this.#bytes = this.#client.withCommandOptions({
      timeout: commandTimeoutMs,
      typeMapping: { [RESP_TYPES.BLOB_STRING]: Buffer },
    }) as unknown as AnyRedisClient
  }

  /** The Redis key of a record. */
  redisKey(key: string): string {
    assertKey(key)
    return `${this.options.prefix}${key}`
  }

  /** The Redis key of the lock named `key`. */
  lockKey(key: string): string {
    assertKey(key)
    return `${this.options.prefix}${LOCK_NAMESPACE}${key}`
  }

  /** Resolves when the connection is ready; rejects after commandTimeoutMs (Redis unreachable) or once closed. */
  async #ready(): Promise<void> {
    if (this.#closed) throw new Error('the Redis storage is closed')
    const client = this.#client
    if (client.isReady) return
    // Known to be down (a wait already ran out, no 'ready' since): fail at once rather than wait again per
    // operation, so that a start during an outage reads its local copy without a delay per key.
    if (this.#downSince !== undefined)
      throw new Error(`Redis is not reachable (since ${new Date(this.#downSince).toISOString()})`)
    if (!client.isOpen) {
      // A client nobody opened yet (ours, or one given to us unopened). Its own reconnection loop takes over after.
      this.#connecting ??= client.connect().catch((err: Error) => {
        this.#lastError = err
        this.#connecting = undefined
      })
    }
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error) => {
        clearTimeout(timer)
        client.off('ready', onReady)
        if (err) reject(err)
        else resolve()
      }
      const onReady = () => done()
      const timer = setTimeout(() => {
        const last = this.#lastError ? ` (last error: ${this.#lastError.message})` : ''
        this.#downSince ??= Date.now()
        done(new Error(`Redis is not reachable: no connection within ${this.options.commandTimeoutMs} ms${last}`))
      }, this.options.commandTimeoutMs)
      client.on('ready', onReady)
      if (client.isReady) done()
    })
  }

  /** Runs one Redis operation; anything but a coded error of ours becomes FACME_STORAGE naming the operation. */
  async #run<T>(what: string, key: string, op: () => Promise<T>): Promise<T> {
    try {
      await this.#ready()
      return await op()
    } catch (err) {
      const error = new ERR_STORAGE(`${what} of ${key}`, `Redis: ${(err as Error).message}`, { cause: err })
      // Not connected (or no answer in time): the plugin pauses orders instead of counting a failure.
      if (!this.#closed && (!this.#client.isReady || isTimeout(err))) Object.assign(error, { unreachable: true })
      throw error
    }
  }

  async get(key: string): Promise<Buffer | undefined> {
    const redisKey = this.redisKey(key)
    let value: unknown
    try {
      value = await this.#run('read', key, () => this.#bytes.get(redisKey))
    } catch (err) {
      // Redis cannot answer: what this instance last saw of the key, if it keeps a copy.
      if (this.#copy && unreachable(err)) return this.#copy.get(key)
      throw err
    }
    const found = value === null || value === undefined ? undefined : Buffer.from(value as Buffer)
    this.#copy?.saw(key, found)
    return found
  }

  async getMany(keys: readonly string[]): Promise<Array<Buffer | undefined | Error>> {
    const out: Array<Buffer | undefined | Error> = []
    for (let i = 0; i < keys.length; i += BATCH) {
      const batch = keys.slice(i, i + BATCH)
      const valid: string[] = []
      const slots: Array<number | Error> = batch.map((key) => {
        try {
          valid.push(this.redisKey(key))
          return valid.length - 1
        } catch (err) {
          return err as Error
        }
      })
      let values: Array<Buffer | null | undefined>
      try {
        values =
          valid.length === 0
            ? []
            : ((await this.#run('read', `${valid.length} keys`, () => this.#bytes.mGet(valid))) as Array<Buffer | null>)
      } catch (err) {
        const copy = this.#copy
        if (!copy || !unreachable(err)) throw err
        for (let j = 0; j < batch.length; j++) {
          const slot = slots[j]!
          out.push(slot instanceof Error ? slot : await copy.get(batch[j]!).catch((e: Error) => e))
        }
        continue
      }
      for (let j = 0; j < batch.length; j++) {
        const slot = slots[j]!
        if (slot instanceof Error) out.push(slot)
        else {
          const value = values[slot]
          const found = value === null || value === undefined ? undefined : Buffer.from(value)
          this.#copy?.saw(batch[j]!, found)
          out.push(found)
        }
      }
    }
    return out
  }

  async put(key: string, value: string | Uint8Array): Promise<void> {
    const redisKey = this.redisKey(key)
    // SET replaces the value in one step: a reader sees the old value or the new one. The PUBLISH that tells the
    // other instances goes in the same round trip (node-redis pipelines commands sent in one tick).
    const argument = toArgument(value)
    await this.#run('write', key, () =>
      Promise.all([this.#text.set(redisKey, argument), this.#text.publish(this.#channel, key)]),
    )
    this.#copy?.saw(key, typeof argument === 'string' ? Buffer.from(argument) : argument)
  }

  async delete(key: string): Promise<void> {
    const redisKey = this.redisKey(key)
    await this.#run('delete', key, () =>
      Promise.all([this.#text.del(redisKey), this.#text.publish(this.#channel, key)]),
    )
    this.#copy?.saw(key, undefined)
  }

  /**
   * Tells `listener` about every key written or deleted under `prefix` by any store on this Redis and prefix (this
   * one included), through pub/sub on a connection of its own; 'unreachable' when that connection drops, 'resync'
   * when it is subscribed again (what was published meanwhile is lost: read again).
   */
  watch(prefix: string, listener: (change: StorageChange) => void): StorageWatch {
    if (this.#closed) throw new Error('the Redis storage is closed')
    return this.#feed.watch(prefix, listener)
  }

  /** Resolves once watch() subscriptions are in place. */
  watching(): Promise<void> {
    return this.#feed.ready()
  }

  async list(prefix: string): Promise<string[]> {
    const base = this.options.prefix
    const match = `${globEscape(base + prefix)}*`
    const found = new Set<string>()
    const scan = this.#run('list', prefix || '(all)', async () => {
      let cursor = '0'
      do {
        const reply = (await this.#text.scan(cursor, { MATCH: match, COUNT: BATCH })) as {
          cursor: string
          keys: string[]
        }
        cursor = String(reply.cursor)
        for (const redisKey of reply.keys) {
          const key = String(redisKey).slice(base.length)
          // Lock keys, and anything else under the prefix that is no record of ours, are left out.
          if (key.startsWith(prefix) && isRecordKey(key)) found.add(key)
        }
      } while (cursor !== '0')
    })
    try {
      await scan
    } catch (err) {
      if (this.#copy && unreachable(err)) return (await this.#copy.list(prefix)).sort()
      throw err
    }
    return [...found].sort()
  }

  async lock(key: string, options: LockOptions = {}): Promise<Lease> {
    const redisKey = this.lockKey(key)
    const commands: LockCommands = {
      tryTake: (k, token, ttlMs) =>
        this.#run('lock', key, async () => {
          const reply = await this.#text.set(k, token, { condition: 'NX', expiration: { type: 'PX', value: ttlMs } })
          return reply === 'OK'
        }),
      evalScript: (script, k, args) =>
        this.#run('lock', key, async () => Number(await this.#text.eval(script, { keys: [k], arguments: args }))),
    }
    const lease = await takeLock({
      key,
      redisKey,
      ttlMs: this.options.lockTtlMs,
      options,
      commands,
      onEnd: (ended) => this.#leases.delete(ended),
    })
    if (this.#closed) {
      await lease.release()
      throw new ERR_STORAGE(`lock of ${key}`, 'the Redis storage was closed')
    }
    this.#leases.add(lease)
    return lease
  }

  /**
   * Stops extending every lease (their `lost` aborts) and closes the client if the store created it (or
   * `closeClient` was set). Close the plugin's app first: its orders release their locks on close.
   */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    for (const lease of [...this.#leases]) lease.abandon(new ERR_STORAGE('lock', 'the Redis storage was closed'))
    this.#leases.clear()
    await this.#feed.close()
    await this.#copy?.flushed()
    if (!this.#closeClient) return
    // close() lets the replies in flight arrive (each bounded by commandTimeoutMs); a client still trying to
    // (re)connect has nothing to wait for and is destroyed.
    if (this.#client.isReady) await this.#client.close().catch(() => this.#client.destroy())
    else if (this.#client.isOpen) this.#client.destroy()
  }
}
