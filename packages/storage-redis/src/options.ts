// The options of RedisStorage: documented defaults and the checks made when a store is created.
import { ERR_INVALID_OPTIONS } from '@autotls/fastify-acme'
import type { RedisClientType } from '@redis/client'

/**
 * Any node-redis client (`createClient()` of `redis` or `@redis/client`), whatever modules, scripts or RESP version
 * it was created with: the store only sends plain commands.
 */
// biome-ignore lint/suspicious/noExplicitAny: the store accepts clients of every module/script/RESP configuration.
export type AnyRedisClient = RedisClientType<any, any, any, any, any>

export interface RedisStorageOptions {
  /**
   * A node-redis client to use. The store connects it when it is not open yet, and leaves it open on close() unless
   * `closeClient` is true. Its 'error' events are yours to listen to. Give either `client` or `url`.
   */
  client?: AnyRedisClient
  /** `redis://[[user]:password@]host[:port][/db]` (or `rediss://` for TLS): the store creates, owns and closes its client. */
  url?: string
  /** Every key the store writes starts with this. Default {@link DEFAULT_PREFIX}. */
  prefix?: string
  /** Time to live of a lock; it is extended every third of it while held. Default {@link DEFAULT_LOCK_TTL_MS}. */
  lockTtlMs?: number
  /**
   * Bound on each Redis command, and on waiting for a (re)connection before one: past it the operation rejects with
   * FACME_STORAGE instead of waiting for Redis to come back. Must be below `lockTtlMs`. Default
   * {@link DEFAULT_COMMAND_TIMEOUT_MS}.
   */
  commandTimeoutMs?: number
  /** Close a client given in `client` when the store is closed. Default false (a client the store created: always). */
  closeClient?: boolean
  /**
   * A folder on this machine for a read-through copy of what this instance reads from and writes to Redis (a
   * FileStorage: 0600 files). When Redis cannot answer, reads are served from it, so an instance that starts during
   * a Redis outage still serves the certificates it had; writes and locks still need Redis. Default: no copy.
   */
  localCopy?: string
}

export const DEFAULT_PREFIX = 'autotls:'
export const DEFAULT_LOCK_TTL_MS = 15_000
export const DEFAULT_COMMAND_TIMEOUT_MS = 5_000
/** Keys per MGET in getMany(), and the COUNT hint of each SCAN in list(). */
export const BATCH = 500

export interface ResolvedRedisOptions {
  prefix: string
  lockTtlMs: number
  commandTimeoutMs: number
  localCopy: string | undefined
}

function positiveInteger(name: string, value: unknown, min: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min)
    throw new ERR_INVALID_OPTIONS(`storage-redis: ${name} must be an integer >= ${min}, got ${String(value)}`)
  return value
}

export function resolveOptions(options: RedisStorageOptions): ResolvedRedisOptions {
  if (typeof options !== 'object' || options === null)
    throw new ERR_INVALID_OPTIONS('storage-redis: options must be an object with `client` or `url`')
  if ((options.client === undefined) === (options.url === undefined))
    throw new ERR_INVALID_OPTIONS('storage-redis: give exactly one of `client` (a node-redis client) or `url`')
  if (options.url !== undefined && (typeof options.url !== 'string' || !/^rediss?:\/\//.test(options.url)))
    throw new ERR_INVALID_OPTIONS(
      `storage-redis: url must start with redis:// or rediss://, got ${String(options.url)}`,
    )
  const prefix = options.prefix ?? DEFAULT_PREFIX
  if (typeof prefix !== 'string') throw new ERR_INVALID_OPTIONS('storage-redis: prefix must be a string')
  const lockTtlMs = positiveInteger('lockTtlMs', options.lockTtlMs ?? DEFAULT_LOCK_TTL_MS, 100)
  const commandTimeoutMs = positiveInteger(
    'commandTimeoutMs',
    options.commandTimeoutMs ?? Math.min(DEFAULT_COMMAND_TIMEOUT_MS, Math.floor(lockTtlMs / 3)),
    10,
  )
  // An extension that may take as long as the lease itself could land after the lease ended.
  if (commandTimeoutMs >= lockTtlMs)
    throw new ERR_INVALID_OPTIONS(
      `storage-redis: commandTimeoutMs (${commandTimeoutMs}) must be below lockTtlMs (${lockTtlMs})`,
    )
  const localCopy = options.localCopy
  if (localCopy !== undefined && (typeof localCopy !== 'string' || localCopy === ''))
    throw new ERR_INVALID_OPTIONS('storage-redis: localCopy must be the path of a folder')
  return { prefix, lockTtlMs, commandTimeoutMs, localCopy }
}
